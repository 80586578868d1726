"""Agency API v1, reception: register a dossier, report returned results (which trigger surveys)."""

from __future__ import annotations

from aiohttp import web
from pydantic import ValidationError

from bot.api.auth import AGENCY_API, agency_of, ok, read_body
from bot.http_errors import error_response, validation_response
from bot.schemas import DossierRegistration, ResultBatch


async def register_dossier(request: web.Request) -> web.Response:
    agency = await agency_of(request)
    if isinstance(agency, web.Response):
        return agency
    body = await read_body(request)
    registration = DossierRegistration.model_validate(body)
    result = await request.app[AGENCY_API].service.register_dossier(agency, registration)
    return ok(result, 201 if result.created else 200)


async def report_results(request: web.Request) -> web.Response:
    """Accepts ``{"results": [...]}`` (a batch) or one result object."""
    agency = await agency_of(request)
    if isinstance(agency, web.Response):
        return agency
    body = await read_body(request)
    api = request.app[AGENCY_API]
    single = isinstance(body, dict) and "results" not in body
    if single:
        body = {"results": [body]}
    if isinstance(body, dict) and isinstance(body.get("results"), list):
        limit = api.settings.max_batch_size
        if len(body["results"]) > limit:
            return error_response(
                413, "batch_too_large", f"at most {limit} results per request; split the batch"
            )
    try:
        batch = ResultBatch.model_validate(body)
    except ValidationError as exc:
        return validation_response(exc)
    outcome = await api.service.report_results(agency, batch)
    item = outcome.items[0]
    if single and item.status == "rejected" and item.code:
        # One result, refused: the error itself, naming each code it may not use.
        named = [{"field": f.field, "problem": f.problem} for f in item.fields or []]
        return error_response(422, item.code, item.error or item.code, fields=named)
    return ok(outcome, 200)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/v1/dossiers", register_dossier, name="register_dossier"),
        web.post("/api/v1/results", report_results, name="report_results"),
    ]
