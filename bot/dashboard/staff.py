"""Officials in the dashboard: a unit manager (or a province admin) adds the officials of the
units of its subtree, moves one to another unit it manages, and records one who left.

Nothing is deleted: a moved official's past ratings stay with the unit and the official they
rated (``storage.directory``: the old row is marked moved, the new unit gets its own row), and
an official who left can no longer be named by a result report (422 ``official_left``). The
agency's own system can push the same lists through the sync API. Every unit a form names goes
through ``bot.dashboard.scope`` first; every change is audited. A province's officials are
thousands: the list is paged and filtered (``paging``), each form carrying its page back.
"""

from __future__ import annotations

from aiohttp import web

from bot.body import read_form
from bot.dashboard import paging
from bot.dashboard.manage import _bad, _field, _subtree, _unit_field
from bot.dashboard.scope import Action
from bot.dashboard.views import PREFIX, Ctx, _view, error_page, page, redirect
from storage import directory
from storage.models import OFFICIAL_ACTIVE, utcnow

PATH = f"{PREFIX}/staff"
#: The page's state a form carries back: the unit chosen, the filter and the page.
STATE = ("agency", "q", "page")


@page(manage=True)
async def staff_page(ctx: Ctx) -> web.StreamResponse:
    try:
        asked = paging.number(ctx.request.query, "page")
    except paging.BadPage:
        return error_page(ctx.request, ctx.lang, 400, "bad_request")
    keep = paging.state(ctx.request.query, STATE)
    search = keep.get("q", "")
    rows = await directory.officials_of(ctx.services.sessions, _subtree(ctx))
    found = paging.matching(rows, search, lambda r: r.code, lambda r: r.name)
    targets = [u for u in ctx.agencies if ctx.may(u.id, Action.OFFICIALS)]
    return _view(
        ctx,
        "manage_staff.html",
        rows=paging.paginate(found, asked, "page", keep, PATH),
        search=search,
        keep=keep,
        targets=targets,
        active=OFFICIAL_ACTIVE,
    )


async def _back(ctx: Ctx) -> web.Response:
    """Back to the page the form was on (its unit, filter and page)."""
    kept = paging.state(await read_form(ctx.request), STATE)
    return redirect(f"{PATH}{paging.query_string(kept)}")


@page(manage=True)
async def staff_add(ctx: Ctx) -> web.StreamResponse:
    unit = await _unit_field(ctx, "unit", Action.OFFICIALS)
    if isinstance(unit, web.Response):
        return unit
    code, name = await _field(ctx, "code", 64), await _field(ctx, "name")
    if not code or not code.isprintable() or not name or not name.isprintable():
        return _bad(ctx, "bad_official")
    entry = directory.OfficialEntry(code=code, name=name)
    await directory.sync_officials(
        ctx.services.sessions, unit.id, [entry], whole=False, today=utcnow().date()
    )
    await ctx.services.audit.record(
        ctx.actor, "official.add", {"agency": unit.code, "official": code}
    )
    return await _back(ctx)


@page(manage=True)
async def staff_move(ctx: Ctx) -> web.StreamResponse:
    source = await _unit_field(ctx, "unit", Action.OFFICIALS)
    if isinstance(source, web.Response):
        return source
    target = await _unit_field(ctx, "to", Action.OFFICIALS)
    if isinstance(target, web.Response):
        return target
    code = await _field(ctx, "code", 64)
    try:
        there = await directory.move_official(
            ctx.services.sessions, source.code, code, target.code, utcnow().date()
        )
    except directory.Unknown:
        return error_page(ctx.request, ctx.lang, 404, "not_found")
    except directory.Problem:
        return _bad(ctx, "bad_move_official")
    await ctx.services.audit.record(
        ctx.actor,
        "official.move",
        {"agency": source.code, "official": code, "to": target.code, "as": there},
    )
    return await _back(ctx)


@page(manage=True)
async def staff_leave(ctx: Ctx) -> web.StreamResponse:
    unit = await _unit_field(ctx, "unit", Action.OFFICIALS)
    if isinstance(unit, web.Response):
        return unit
    code = await _field(ctx, "code", 64)
    try:
        await directory.leave_official(ctx.services.sessions, unit.code, code, utcnow().date())
    except directory.Unknown:
        return error_page(ctx.request, ctx.lang, 404, "not_found")
    await ctx.services.audit.record(
        ctx.actor, "official.leave", {"agency": unit.code, "official": code}
    )
    return await _back(ctx)


def setup(app: web.Application) -> None:
    app.router.add_get(PATH, staff_page, name="admin_staff")
    app.router.add_post(f"{PATH}/add", staff_add, name="admin_staff_add")
    app.router.add_post(f"{PATH}/move", staff_move, name="admin_staff_move")
    app.router.add_post(f"{PATH}/leave", staff_leave, name="admin_staff_leave")
