"""Management pages: units (create under a parent, rename, move), API keys (create, shown
once; revoke), logins (create with a role and a unit, disable, reset, force a password change)
and one's own password.

Every unit, key or login a form names is checked through ``bot.dashboard.scope`` before
anything changes: a field edited to reach outside the principal's subtree gets the polite
403 page and an ``access.denied`` audit entry, an unknown one 404, bad input a 400 page naming
what is wrong. Every change is written to the audit log.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from bot.body import read_form
from bot.dashboard import accounts, auth, paging, scope
from bot.dashboard.i18n import t
from bot.dashboard.scope import Action
from bot.dashboard.views import PREFIX, Ctx, _denied, _view, error_page, page, redirect, render
from storage import api_keys, units


async def _field(ctx: Ctx, name: str, limit: int = 255) -> str:
    return str((await read_form(ctx.request)).get(name, "")).strip()[:limit]


def _bad(ctx: Ctx, message: str) -> web.Response:
    """400 with the reason in the reader's language (the messages are catalogued)."""
    return render(
        ctx.request, "error.html", ctx.lang, status=400, message=t(ctx.lang, message), ctx=None
    )


def _subtree(ctx: Ctx) -> set[str] | None:
    """The units a management page lists: the chosen unit's subtree (None: every unit)."""
    if ctx.agency is None:
        return ctx.within
    return set(ctx.tree.subtree(ctx.agency.id)) & (ctx.within or set(ctx.tree.units))


# ------------------------------------------------------------------------------ units
UNITS_PATH = f"{PREFIX}/units"
#: The page's state a link carries: the filter and the page.
UNITS_STATE = ("q", "page")


@page(manage=True)
async def units_page(ctx: Ctx) -> web.StreamResponse:
    """The tree, in its order, a page of it at a time (a province has hundreds of communes,
    and every row's "move under" offers every unit: unpaged, the page grew with the square of
    the tree). ``?unit=CODE`` without a page opens the page that holds that unit: where a
    change sends the browser back to."""
    query = ctx.request.query
    try:
        asked = paging.number(query, "page")
    except paging.BadPage:
        return error_page(ctx.request, ctx.lang, 400, "bad_request")
    keep = paging.state(query, UNITS_STATE)
    search = keep.get("q", "")
    rows = [(u, d) for u, d in ctx.tree.walk() if ctx.within is None or u.id in ctx.within]
    parents = [u for u, _ in rows if ctx.may(u.id, Action.ADD_UNDER)]
    found = paging.matching(rows, search, lambda r: r[0].code, lambda r: r[0].name)
    wanted = query.get("unit", "")
    if wanted and "page" not in query:
        place = next((i for i, (u, _) in enumerate(found) if u.code == wanted), 0)
        asked = place // paging.SIZE + 1
    shown = paging.paginate(found, asked, "page", keep, UNITS_PATH)
    return _view(
        ctx,
        "manage_units.html",
        rows=shown,
        parents=parents,
        kinds=units.KINDS,
        keep=keep,
        search=search,
    )


def _to_unit(code: str) -> web.Response:
    """Back to the page of the tree that holds ``code``, scrolled to its row."""
    return redirect(f"{UNITS_PATH}?{urlencode({'unit': code})}#unit-{code}")


async def _unit_field(ctx: Ctx, name: str, action: Action) -> units.Unit | web.Response:
    """The unit a form field names, if this principal may do ``action`` on it."""
    code = await _field(ctx, name, 64)
    unit = ctx.tree.by_code(code)
    if unit is None and ctx.user.is_admin:
        return error_page(ctx.request, ctx.lang, 404, "not_found")
    if unit is None or not ctx.may(unit.id, action):
        return await _denied(ctx.request, ctx.lang, ctx.user, {name: code})
    return unit


@page(manage=True)
async def unit_create(ctx: Ctx) -> web.StreamResponse:
    parent_id: str | None = None
    if await _field(ctx, "parent") or not ctx.user.is_admin:
        parent = await _unit_field(ctx, "parent", Action.ADD_UNDER)
        if isinstance(parent, web.Response):
            return parent
        parent_id = parent.id
    try:
        made = await units.create_unit(
            ctx.services.sessions,
            await _field(ctx, "code", 64),
            await _field(ctx, "name"),
            await _field(ctx, "kind", 16),
            parent_id,
        )
    except units.UnitError as exc:
        return _bad(ctx, exc.reason)
    parent_code = ctx.tree.units[parent_id].code if parent_id else None
    await ctx.services.audit.record(
        ctx.actor, "unit.create", {"unit": made.code, "parent": parent_code, "kind": made.kind}
    )
    return _to_unit(made.code)


@page(manage=True)
async def unit_edit(ctx: Ctx) -> web.StreamResponse:
    unit = await _unit_field(ctx, "unit", Action.EDIT)
    if isinstance(unit, web.Response):
        return unit
    try:
        done = await units.rename_unit(
            ctx.services.sessions, unit.id, await _field(ctx, "name"), await _field(ctx, "kind")
        )
    except units.UnitError as exc:
        return _bad(ctx, exc.reason)
    await ctx.services.audit.record(
        ctx.actor,
        "unit.rename",
        {"unit": unit.code, "from": unit.name, "to": done.name, "kind": done.kind},
    )
    return _to_unit(unit.code)


@page(manage=True)
async def unit_move(ctx: Ctx) -> web.StreamResponse:
    unit = await _unit_field(ctx, "unit", Action.EDIT)
    if isinstance(unit, web.Response):
        return unit
    parent_id: str | None = None
    if await _field(ctx, "parent") or not ctx.user.is_admin:
        parent = await _unit_field(ctx, "parent", Action.ADD_UNDER)
        if isinstance(parent, web.Response):
            return parent
        parent_id = parent.id
    if not scope.may_move(ctx.user, ctx.tree, unit.id, parent_id):
        return await _denied(ctx.request, ctx.lang, ctx.user, {"unit": unit.code})
    try:
        await units.move_unit(ctx.services.sessions, unit.id, parent_id)
    except units.UnitError as exc:
        return _bad(ctx, exc.reason)
    old = ctx.tree.units.get(unit.parent_id or "")
    await ctx.services.audit.record(
        ctx.actor,
        "unit.move",
        {
            "unit": unit.code,
            "from": old.code if old else None,
            "to": ctx.tree.units[parent_id].code if parent_id else None,
        },
    )
    return _to_unit(unit.code)


# ------------------------------------------------------------------------------ API keys
async def _keys_view(ctx: Ctx, status: int = 200, **values: Any) -> web.Response:
    keys = await api_keys.listing(ctx.services.sessions, _subtree(ctx))
    targets = [u for u in ctx.agencies if ctx.may(u.id, Action.KEYS)]
    values.setdefault("new_key", None)
    values.setdefault("new_key_unit", None)
    response = _view(ctx, "manage_keys.html", keys=keys, targets=targets, **values)
    response.set_status(status)
    return response


@page(manage=True)
async def keys_page(ctx: Ctx) -> web.StreamResponse:
    return await _keys_view(ctx)


@page(manage=True)
async def key_create(ctx: Ctx) -> web.StreamResponse:
    unit = await _unit_field(ctx, "unit", Action.KEYS)
    if isinstance(unit, web.Response):
        return unit
    label = await _field(ctx, "label", 128)
    if not label or not label.isprintable():
        return _bad(ctx, "bad_label")
    key_id, raw = await api_keys.create(ctx.services.sessions, unit.id, label)
    await ctx.services.audit.record(
        ctx.actor, "apikey.create", {"agency": unit.code, "key": key_id, "label": label}
    )
    # Shown once, on this answer only (no-store), never again.
    return await _keys_view(ctx, 201, new_key=raw, new_key_unit=unit)


@page(manage=True)
async def key_revoke(ctx: Ctx) -> web.StreamResponse:
    key = await api_keys.get(ctx.services.sessions, await _field(ctx, "key", 32))
    if key is None:
        return error_page(ctx.request, ctx.lang, 404, "not_found")
    if not ctx.may(key.agency_id, Action.KEYS):
        return await _denied(ctx.request, ctx.lang, ctx.user, {"key": key.id})
    if await api_keys.revoke(ctx.services.sessions, key.id):
        await ctx.services.audit.record(
            ctx.actor, "apikey.revoke", {"agency": key.agency_code, "key": key.id}
        )
    return redirect(f"{PREFIX}/keys")


# ------------------------------------------------------------------------------ logins
@page(manage=True)
async def logins_page(ctx: Ctx) -> web.StreamResponse:
    subtree = _subtree(ctx)
    logins = await accounts.listing(ctx.services.sessions, subtree)
    targets = [u for u in ctx.agencies if ctx.may(u.id, Action.LOGINS)]
    roles = [r for r in auth.ROLES if scope.may_grant(ctx.user, r)]

    def manageable(login: accounts.Login) -> bool:
        return scope.may_manage_login(
            ctx.user, ctx.tree, login.role, login.agency_id, login.id, ctx.user.user_id
        )

    return _view(
        ctx,
        "manage_logins.html",
        logins=logins,
        targets=targets,
        roles=roles,
        manageable=manageable,
    )


@page(manage=True)
async def login_create(ctx: Ctx) -> web.StreamResponse:
    role = await _field(ctx, "role", 16)
    if role not in auth.ROLES:
        return _bad(ctx, "bad_role")
    if not scope.may_grant(ctx.user, role):
        return await _denied(ctx.request, ctx.lang, ctx.user, {"role": role})
    unit_id: str | None = None
    if role != "admin":
        unit = await _unit_field(ctx, "unit", Action.LOGINS)
        if isinstance(unit, web.Response):
            return unit
        unit_id = unit.id
    try:
        made = await accounts.create(
            ctx.services.sessions,
            await _field(ctx, "username", 64),
            str((await read_form(ctx.request)).get("password", ""))[:1024],
            role,
            unit_id,
        )
    except auth.AuthError as exc:
        return _bad(ctx, str(exc))
    await ctx.services.audit.record(
        ctx.actor,
        "login.create",
        {"username": made.username, "role": role, "agency": made.agency_code or "*"},
    )
    return redirect(f"{PREFIX}/logins")


async def _target(ctx: Ctx) -> accounts.Login | web.Response:
    login = await accounts.get(ctx.services.sessions, await _field(ctx, "login", 32))
    if login is None:
        return error_page(ctx.request, ctx.lang, 404, "not_found")
    if not scope.may_manage_login(
        ctx.user, ctx.tree, login.role, login.agency_id, login.id, ctx.user.user_id
    ):
        return await _denied(ctx.request, ctx.lang, ctx.user, {"login": login.username})
    return login


@page(manage=True)
async def login_disable(ctx: Ctx) -> web.StreamResponse:
    login = await _target(ctx)
    if isinstance(login, web.Response):
        return login
    disabled = await _field(ctx, "enable", 1) != "1"
    await accounts.set_disabled(ctx.services.sessions, login.id, disabled)
    action = "login.disable" if disabled else "login.enable"
    await ctx.services.audit.record(ctx.actor, action, {"username": login.username})
    return redirect(f"{PREFIX}/logins")


@page(manage=True)
async def login_reset(ctx: Ctx) -> web.StreamResponse:
    login = await _target(ctx)
    if isinstance(login, web.Response):
        return login
    password = str((await read_form(ctx.request)).get("password", ""))[:1024]
    try:
        await accounts.reset_password(ctx.services.sessions, login.id, password)
    except auth.AuthError as exc:
        return _bad(ctx, str(exc))
    await ctx.services.audit.record(ctx.actor, "login.reset", {"username": login.username})
    return redirect(f"{PREFIX}/logins")


@page(manage=True)
async def login_force(ctx: Ctx) -> web.StreamResponse:
    login = await _target(ctx)
    if isinstance(login, web.Response):
        return login
    await accounts.force_change(ctx.services.sessions, login.id)
    await ctx.services.audit.record(ctx.actor, "login.force_change", {"username": login.username})
    return redirect(f"{PREFIX}/logins")


# ------------------------------------------------------------------------------ password
@page()
async def password_page(ctx: Ctx) -> web.StreamResponse:
    return _view(ctx, "password.html", forced=ctx.user.must_change_password)


@page()
async def password_change(ctx: Ctx) -> web.StreamResponse:
    form = await read_form(ctx.request)
    current = str(form.get("current", ""))[:1024]
    new = str(form.get("new", ""))[:1024]
    if new != str(form.get("again", ""))[:1024]:
        return _bad(ctx, "the two new passwords differ")
    try:
        await accounts.change_own(ctx.services.sessions, ctx.user.user_id, current, new)
    except auth.AuthError as exc:
        return _bad(ctx, str(exc))
    await ctx.services.audit.record(ctx.actor, "password.change", {})
    return redirect(f"{PREFIX}/")


def setup(app: web.Application) -> None:
    add = app.router
    add.add_get(f"{PREFIX}/units", units_page, name="admin_units")
    add.add_post(f"{PREFIX}/units/create", unit_create, name="admin_unit_create")
    add.add_post(f"{PREFIX}/units/edit", unit_edit, name="admin_unit_edit")
    add.add_post(f"{PREFIX}/units/move", unit_move, name="admin_unit_move")
    add.add_get(f"{PREFIX}/keys", keys_page, name="admin_keys")
    add.add_post(f"{PREFIX}/keys/create", key_create, name="admin_key_create")
    add.add_post(f"{PREFIX}/keys/revoke", key_revoke, name="admin_key_revoke")
    add.add_get(f"{PREFIX}/logins", logins_page, name="admin_logins")
    add.add_post(f"{PREFIX}/logins/create", login_create, name="admin_login_create")
    add.add_post(f"{PREFIX}/logins/disable", login_disable, name="admin_login_disable")
    add.add_post(f"{PREFIX}/logins/reset", login_reset, name="admin_login_reset")
    add.add_post(f"{PREFIX}/logins/force", login_force, name="admin_login_force")
    add.add_get(f"{PREFIX}/password", password_page, name="admin_password")
    add.add_post(f"{PREFIX}/password", password_change, name="admin_password_change")
