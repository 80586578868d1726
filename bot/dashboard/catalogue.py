"""Procedures and surveys in the dashboard: the national procedure catalogue (code, name,
field, survey), which unit of the principal's subtree handles which procedure, and the survey
each unit asks its citizens.

A procedure's code, name, field and survey are province-wide facts every unit reads its
figures by (or asks its citizens), so only a province admin adds or edits one
(``storage.directory.edit_procedure``: the form replaces name and field, so a field can be
cleared; ``storage.unit_surveys.set_procedure_survey``); a unit manager assigns and unassigns
them to the units of its subtree (``Action.PROCEDURES``) and chooses the survey of the units it
may edit (``Action.EDIT``). A dossier naming no survey gets its procedure's, else its unit's,
else the default. Every unit a form names goes through ``bot.dashboard.scope`` first; every
change is audited. The page shows no figure; the table is paged both ways (``paging``).
"""

from __future__ import annotations

import re

from aiohttp import web

from bot.body import read_form
from bot.dashboard import paging
from bot.dashboard.manage import _bad, _field, _subtree, _unit_field
from bot.dashboard.scope import Action
from bot.dashboard.views import PREFIX, Ctx, _view, error_page, page, redirect
from storage import directory, fields, unit_surveys
from storage.models import Procedure

PATH = f"{PREFIX}/catalogue"
#: A national procedure code (mã TTHC such as 1.001234): it also names the row's anchor.
CODE = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: The page's state a form carries back: the unit chosen, the filter and each list's page.
STATE = ("agency", "q", "page", "units", "surveys")


@page(manage=True)
async def catalogue_page(ctx: Ctx) -> web.StreamResponse:
    query = ctx.request.query
    try:
        asked = {p: paging.number(query, p) for p in ("page", "units", "surveys")}
    except paging.BadPage:
        return error_page(ctx.request, ctx.lang, 400, "bad_request")
    keep = paging.state(query, STATE)
    scope = _subtree(ctx)
    units = [u for u in ctx.agencies if scope is None or u.id in scope]
    sessions = ctx.services.sessions
    catalogue = await directory.catalogue(sessions)
    search = query.get("q", "").strip()[: paging.QUERY_LIMIT]
    found = paging.matching(catalogue, search, lambda p: p.code, lambda p: p.name)
    procedures = paging.paginate(found, asked["page"], "page", keep, PATH)
    columns = paging.paginate(units, asked["units"], "units", keep, PATH, paging.UNIT_COLUMNS)
    editable = paging.paginate(
        [u for u in units if ctx.may(u.id, Action.EDIT)], asked["surveys"], "surveys", keep, PATH
    )
    shown = {u.id for u in columns.items} | {u.id for u in editable.items}
    editing = _editing(catalogue, query.get("edit", "")) if ctx.user.is_admin else None
    return _view(
        ctx,
        "manage_catalogue.html",
        procedures=procedures,
        search=search,
        columns=columns,
        assigned=await directory.assignments(sessions, [u.id for u in columns.items]),
        assignable={u.id for u in columns.items if ctx.may(u.id, Action.PROCEDURES)},
        editable=editable,
        editing=editing,
        surveys=await unit_surveys.surveys_of(sessions, shown),
        survey_ids=ctx.services.catalog.ids(),
        default_survey=ctx.services.settings.default_survey,
        fields=fields.FIELDS,
        field_label=lambda code: fields.label(code, ctx.lang),
        keep=keep,
    )


def _editing(catalogue: list[Procedure], code: str) -> Procedure | None:
    """The procedure ``?edit=`` names, whose values fill the edit form."""
    return next((p for p in catalogue if p.code == code), None) if code else None


async def _back(ctx: Ctx, anchor: str = "") -> web.Response:
    """Back to the page the form was on (its unit, filter and pages), at the changed row."""
    kept = paging.state(await read_form(ctx.request), STATE)
    return redirect(f"{PATH}{paging.query_string(kept)}{anchor}")


@page(admin_only=True)
async def procedure_set(ctx: Ctx) -> web.StreamResponse:
    """Add a procedure to the catalogue or replace its name and field (province admins): an
    empty field clears it."""
    code, name = await _field(ctx, "code", 64), await _field(ctx, "name")
    field_code = await _field(ctx, "field", 32)
    if not CODE.fullmatch(code) or not name or not name.isprintable():
        return _bad(ctx, "bad_procedure")
    if field_code and field_code not in fields.CODES:
        return _bad(ctx, "bad_field")
    before = await directory.edit_procedure(ctx.services.sessions, code, name, field_code or None)
    detail: dict[str, object] = {"procedure": code, "name": name, "field": field_code or None}
    if before is not None:
        detail["from"] = {"name": before[0], "field": before[1]}
    await ctx.services.audit.record(
        ctx.actor, "procedure.add" if before is None else "procedure.edit", detail
    )
    return await _back(ctx, f"#procedure-{code}")


@page(admin_only=True)
async def procedure_survey(ctx: Ctx) -> web.StreamResponse:
    """Choose the survey a procedure's dossiers get when they name none ('': its units')."""
    code, survey = await _field(ctx, "code", 64), await _field(ctx, "survey", 64)
    if survey and survey not in ctx.services.catalog:
        return _bad(ctx, "bad_survey")
    try:
        before = await unit_surveys.set_procedure_survey(
            ctx.services.sessions, code, survey or None
        )
    except LookupError:
        return error_page(ctx.request, ctx.lang, 404, "not_found")
    await ctx.services.audit.record(
        ctx.actor, "procedure.survey", {"procedure": code, "from": before, "to": survey or None}
    )
    return await _back(ctx, f"#procedure-{code}")


@page(manage=True)
async def procedure_assign(ctx: Ctx) -> web.StreamResponse:
    """Assign (``active=1``) or unassign a catalogue procedure to a unit of the subtree."""
    unit = await _unit_field(ctx, "unit", Action.PROCEDURES)
    if isinstance(unit, web.Response):
        return unit
    code, active = await _field(ctx, "code", 64), await _field(ctx, "active", 1) == "1"
    try:
        await directory.assign_procedure(ctx.services.sessions, unit.code, code, active)
    except directory.Unknown:
        return error_page(ctx.request, ctx.lang, 404, "not_found")
    await ctx.services.audit.record(
        ctx.actor,
        "procedure.assign" if active else "procedure.unassign",
        {"agency": unit.code, "procedure": code},
    )
    return await _back(ctx, f"#procedure-{code}")


@page(manage=True)
async def survey_set(ctx: Ctx) -> web.StreamResponse:
    """Choose the survey a unit's dossiers get when they name none ('' : the default)."""
    unit = await _unit_field(ctx, "unit", Action.EDIT)
    if isinstance(unit, web.Response):
        return unit
    survey = await _field(ctx, "survey", 64)
    if survey and survey not in ctx.services.catalog:
        return _bad(ctx, "bad_survey")
    before = await unit_surveys.set_survey(ctx.services.sessions, unit.id, survey or None)
    await ctx.services.audit.record(
        ctx.actor, "unit.survey", {"unit": unit.code, "from": before, "to": survey or None}
    )
    return await _back(ctx, f"#survey-{unit.code}")


def setup(app: web.Application) -> None:
    app.router.add_get(PATH, catalogue_page, name="admin_catalogue")
    app.router.add_post(f"{PATH}/procedure", procedure_set, name="admin_procedure_set")
    app.router.add_post(f"{PATH}/procedure-survey", procedure_survey, name="admin_procedure_survey")
    app.router.add_post(f"{PATH}/assign", procedure_assign, name="admin_procedure_assign")
    app.router.add_post(f"{PATH}/survey", survey_set, name="admin_unit_survey")
