"""Procedures and surveys in the dashboard: the national procedure catalogue (code, name,
field), which unit of the principal's subtree handles which procedure, and the survey each unit
asks its citizens.

A procedure's code, name and field are national facts every unit reads its figures by, so only
a province admin adds or edits one (``storage.directory.set_procedure``); a unit manager assigns
and unassigns them to the units of its subtree (``Action.PROCEDURES``) and chooses the survey of
the units it may edit (``Action.EDIT``). Every unit a form names goes through
``bot.dashboard.scope`` first; every change is audited. The page shows no figure.
"""

from __future__ import annotations

import re

from aiohttp import web

from bot.dashboard.manage import _bad, _field, _subtree, _unit_field
from bot.dashboard.scope import Action
from bot.dashboard.views import PREFIX, Ctx, _view, error_page, page, redirect
from storage import directory, fields, unit_surveys

PATH = f"{PREFIX}/catalogue"
#: A national procedure code (mã TTHC such as 1.001234): it also names the row's anchor.
CODE = re.compile(r"[A-Za-z0-9._-]{1,64}")


@page(manage=True)
async def catalogue_page(ctx: Ctx) -> web.StreamResponse:
    scope = _subtree(ctx)
    columns = [u for u in ctx.agencies if scope is None or u.id in scope]
    sessions = ctx.services.sessions
    surveys = await unit_surveys.surveys_of(sessions, [u.id for u in columns])
    return _view(
        ctx,
        "manage_catalogue.html",
        procedures=await directory.catalogue(sessions),
        columns=columns,
        assigned=await directory.assignments(sessions, [u.id for u in columns]),
        assignable={u.id for u in columns if ctx.may(u.id, Action.PROCEDURES)},
        editable=[u for u in columns if ctx.may(u.id, Action.EDIT)],
        surveys=surveys,
        survey_ids=ctx.services.catalog.ids(),
        default_survey=ctx.services.settings.default_survey,
        fields=fields.FIELDS,
        field_label=lambda code: fields.label(code, ctx.lang),
    )


def _back(ctx: Ctx, anchor: str = "") -> web.Response:
    query = f"?agency={ctx.agency.code}" if ctx.agency and ctx.request.query.get("agency") else ""
    return redirect(f"{PATH}{query}{anchor}")


@page(admin_only=True)
async def procedure_set(ctx: Ctx) -> web.StreamResponse:
    """Add a procedure to the catalogue or change its name and field (province admins)."""
    code, name = await _field(ctx, "code", 64), await _field(ctx, "name")
    field_code = await _field(ctx, "field", 32)
    if not CODE.fullmatch(code) or not name or not name.isprintable():
        return _bad(ctx, "bad_procedure")
    if field_code and field_code not in fields.CODES:
        return _bad(ctx, "bad_field")
    created = await directory.set_procedure(ctx.services.sessions, code, name, field_code or None)
    await ctx.services.audit.record(
        ctx.actor,
        "procedure.add" if created else "procedure.edit",
        {"procedure": code, "name": name, "field": field_code or None},
    )
    return _back(ctx, f"#procedure-{code}")


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
    return _back(ctx, f"#procedure-{code}")


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
    return _back(ctx, f"#survey-{unit.code}")


def setup(app: web.Application) -> None:
    app.router.add_get(PATH, catalogue_page, name="admin_catalogue")
    app.router.add_post(f"{PATH}/procedure", procedure_set, name="admin_procedure_set")
    app.router.add_post(f"{PATH}/assign", procedure_assign, name="admin_procedure_assign")
    app.router.add_post(f"{PATH}/survey", survey_set, name="admin_unit_survey")
