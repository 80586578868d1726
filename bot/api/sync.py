"""Agency API v1, sync: the unit's one-stop system pushes its officials and procedures.

Idempotent upserts, scoped to the key's own unit: ``PUT`` of the whole list (what it leaves out
is marked left or unassigned, never deleted: ratings point at it) or ``PUT`` of one item. Bad
input is one 422 naming each bad item and field, and nothing is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from bot.api.auth import AGENCY_API, agency_of, ok, read_body
from bot.http_errors import error_response, validation_response
from bot.sync_schemas import (
    OfficialItem,
    OfficialList,
    OfficialState,
    ProcedureItem,
    ProcedureList,
    ProcedureState,
    SyncOutcome,
)
from storage import directory
from storage.db import Sessions
from storage.models import Agency


def _sessions(request: web.Request) -> Sessions:
    return request.app[AGENCY_API].service.sessions


def _today(request: web.Request) -> Any:
    return request.app[AGENCY_API].service.clock().date()


def _duplicates(codes: Sequence[str], path: str) -> web.Response | None:
    """A code listed twice is ambiguous (which name wins?): a 422 naming every repeat."""
    first: dict[str, int] = {}
    problems = []
    for index, code in enumerate(codes):
        if code in first:
            problems.append(
                {
                    "field": f"{path}.{index}.code",
                    "problem": f"{code!r} repeats {path}.{first[code]}",
                }
            )
        first.setdefault(code, index)
    if not problems:
        return None
    return error_response(422, "invalid_fields", "a code is listed twice", fields=problems)


def _refused(problem: directory.Problem) -> web.Response:
    fields = [{"field": f, "problem": p} for f, p in problem.problems]
    return error_response(422, "invalid_fields", "some items cannot be applied", fields=fields)


async def _item(request: web.Request, model: type[OfficialItem] | type[ProcedureItem]) -> Any:
    """The path's code and the body, validated as one item (errors name ``code`` or a field)."""
    body = await read_body(request)
    if not isinstance(body, dict):
        return error_response(
            422,
            "invalid_fields",
            "the body is an object",
            fields=[{"field": "(body)", "problem": "Input should be an object"}],
        )
    if "code" in body:
        return error_response(
            422,
            "invalid_fields",
            "the code is the path's",
            fields=[{"field": "code", "problem": "the code is in the path, not the body"}],
        )
    try:
        return model.model_validate({**body, "code": request.match_info["code"]})
    except ValidationError as exc:
        return validation_response(exc)


# ------------------------------------------------------------------------------ officials
async def _official_state(request: web.Request, agency: Agency, code: str) -> OfficialState:
    found = await directory.official_view(_sessions(request), agency.id, code)
    assert found is not None  # just written
    row, moved_to = found
    return OfficialState(
        code=row.code, name=row.name, status=row.status, ended_on=row.ended_on, moved_to=moved_to
    )


async def put_officials(request: web.Request) -> web.Response:
    agency = await agency_of(request)
    if isinstance(agency, web.Response):
        return agency
    try:
        listing = OfficialList.model_validate(await read_body(request))
    except ValidationError as exc:
        return validation_response(exc)
    repeated = _duplicates([o.code for o in listing.officials], "officials")
    if repeated:
        return repeated
    entries = [directory.OfficialEntry(o.code, o.name, o.status) for o in listing.officials]
    result = await directory.sync_officials(
        _sessions(request), agency.id, entries, whole=True, today=_today(request)
    )
    return ok(SyncOutcome(**_counts(result)))


async def put_official(request: web.Request) -> web.Response:
    agency = await agency_of(request)
    if isinstance(agency, web.Response):
        return agency
    item = await _item(request, OfficialItem)
    if isinstance(item, web.Response):
        return item
    entry = directory.OfficialEntry(item.code, item.name, item.status)
    result = await directory.sync_officials(
        _sessions(request), agency.id, [entry], whole=False, today=_today(request)
    )
    state = await _official_state(request, agency, item.code)
    return ok(state, 201 if result.created else 200)


# ------------------------------------------------------------------------------ procedures
async def put_procedures(request: web.Request) -> web.Response:
    agency = await agency_of(request)
    if isinstance(agency, web.Response):
        return agency
    try:
        listing = ProcedureList.model_validate(await read_body(request))
    except ValidationError as exc:
        return validation_response(exc)
    repeated = _duplicates([p.code for p in listing.procedures], "procedures")
    if repeated:
        return repeated
    entries = [directory.ProcedureEntry(p.code, p.name, p.field) for p in listing.procedures]
    try:
        result = await directory.sync_procedures(_sessions(request), agency.id, entries, True)
    except directory.Problem as problem:
        return _refused(problem)
    return ok(SyncOutcome(**_counts(result)))


async def put_procedure(request: web.Request) -> web.Response:
    agency = await agency_of(request)
    if isinstance(agency, web.Response):
        return agency
    item = await _item(request, ProcedureItem)
    if isinstance(item, web.Response):
        return item
    entry = directory.ProcedureEntry(item.code, item.name, item.field)
    try:
        result = await directory.sync_procedures(
            _sessions(request), agency.id, [entry], False, lambda _: ""
        )
    except directory.Problem as problem:
        return _refused(problem)
    found = await directory.procedure_view(_sessions(request), agency.id, item.code)
    assert found is not None  # just written
    procedure, assigned = found
    state = ProcedureState(
        code=procedure.code, name=procedure.name, field=procedure.field, assigned=assigned
    )
    return ok(state, 201 if result.created else 200)


def _counts(result: directory.SyncResult) -> dict[str, list[str]]:
    return {
        "created": result.created,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "retired": result.retired,
    }


def routes() -> list[web.RouteDef]:
    return [
        web.put("/api/v1/officials", put_officials, name="put_officials"),
        web.put("/api/v1/officials/{code}", put_official, name="put_official"),
        web.put("/api/v1/procedures", put_procedures, name="put_procedures"),
        web.put("/api/v1/procedures/{code}", put_procedure, name="put_procedure"),
    ]
