"""Dashboard pages. Every page resolves a scope first, through ``bot.dashboard.scope`` (the
one place that answers "may P act on unit U"): the unit chosen with ``?agency=`` (or a form's
``agency`` field), else the principal's own (the province for an admin). A unit outside the
principal's subtree, asked for by editing the URL or a form, is refused with 403 and audited.
Views of official-level data and every export are written to the audit log.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from bot.body import read_form
from bot.dashboard import auth, scope
from bot.dashboard.i18n import language, t
from bot.forwarded import served_over_https
from bot.i18n import gettext
from bot.limits import client_address
from storage import (
    aggregates,
    export,
    fields,
    releases,
    report_pdf,
    report_store,
    reports,
    stats,
    units,
)
from storage.models import utcnow

PREFIX = "/admin"
COOKIE = "sb_admin"
LOGIN_CSRF_COOKIE = "sb_login_csrf"
LANG_COOKIE = "sb_lang"
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
TEMPLATES = web.AppKey("dashboard_templates", jinja2.Environment)
DASHBOARD = web.AppKey("dashboard_services", auth.DashboardServices)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(slots=True)
class Ctx:
    """What every page knows: who is asking, in which language, for which unit, and the tree."""

    request: web.Request
    user: auth.Principal
    lang: str
    agency: units.Unit | None
    agencies: list[units.Unit]
    tree: units.Tree

    @property
    def within(self) -> set[str] | None:
        """The units this principal may read (None: every unit)."""
        return scope.readable(self.user, self.tree)

    def may(self, unit_id: str | None, action: scope.Action) -> bool:
        return scope.may(self.user, self.tree, unit_id, action)

    def depth(self, unit: units.Unit) -> int:
        return self.tree.depth(unit.id)

    @property
    def services(self) -> auth.DashboardServices:
        return self.request.app[DASHBOARD]

    @property
    def thresholds(self) -> stats.Thresholds:
        return stats.Thresholds.from_settings(self.services.settings)

    @property
    def agency_id(self) -> str | None:
        return self.agency.id if self.agency else None

    @property
    def actor(self) -> str:
        return f"admin:{self.user.username}"


Page = Callable[[Ctx], Awaitable[web.StreamResponse]]


def _lang(request: web.Request) -> str:
    return language(request.query.get("lang") or request.cookies.get(LANG_COOKIE))


def render(
    request: web.Request, name: str, lang: str, status: int = 200, **values: Any
) -> web.Response:
    env = request.app[TEMPLATES]
    html = env.get_template(f"dashboard/{name}").render(
        lang=lang,
        path=request.path_qs,
        prefix=PREFIX,
        **values,
    )
    response = web.Response(text=html, content_type="text/html", status=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def error_page(
    request: web.Request, lang: str, status: int, key: str, **values: Any
) -> web.Response:
    return render(
        request, "error.html", lang, status=status, message=t(lang, key), ctx=None, **values
    )


#: The pages a login that must change its password may still open.
PASSWORD_PATHS = (f"{PREFIX}/password", f"{PREFIX}/logout")


def page(
    admin_only: bool = False, manage: bool = False
) -> Callable[[Page], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """Authenticate, check the CSRF token of a POST, resolve the unit scope, then run the page.

    ``manage``: managers and admins only (a viewer's 403 is audited like any refusal).
    """

    def wrap(handler: Page) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            services = request.app[DASHBOARD]
            lang = _lang(request)
            user = await auth.load_session(services.sessions, request.cookies.get(COOKIE))
            if user is None:
                raise web.HTTPSeeOther(f"{PREFIX}/login")
            if user.must_change_password and request.path not in PASSWORD_PATHS:
                raise web.HTTPSeeOther(f"{PREFIX}/password")
            if (admin_only and not user.is_admin) or (manage and not user.is_manager):
                return await _denied(request, lang, user, {})
            wanted = request.query.get("agency", "")
            if request.method == "POST":
                form = await read_form(request)
                if not _same(form.get("csrf", ""), user.csrf):
                    return error_page(request, lang, 403, "bad_request")
                wanted = wanted or str(form.get("agency", ""))
            tree = await units.load_tree(services.sessions)
            agency: units.Unit | None = None
            if wanted:
                agency = tree.by_code(wanted[:64])
                if agency is None and user.is_admin:
                    return error_page(request, lang, 404, "not_found")
                if agency is None or not scope.may(user, tree, agency.id, scope.Action.READ):
                    return await _denied(request, lang, user, {"agency": wanted[:64]})
            else:
                home = scope.home(user)
                agency = tree.units.get(home) if home else None
                if not scope.may(user, tree, home, scope.Action.READ):
                    return await _denied(request, lang, user, {})
            within = scope.readable(user, tree)
            agencies = [u for u, _ in tree.walk() if within is None or u.id in within]
            return await handler(Ctx(request, user, lang, agency, agencies, tree))

        return run

    return wrap


async def _denied(
    request: web.Request, lang: str, user: auth.Principal, detail: dict[str, Any]
) -> web.Response:
    """403, polite, and audited: someone reached for what their scope does not hold."""
    await request.app[DASHBOARD].audit.record(
        f"admin:{user.username}", "access.denied", {"path": request.path, **detail}
    )
    return error_page(request, lang, 403, "forbidden")


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison of any two strings (compare_digest refuses non-ASCII str)."""
    return secrets.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def _view(ctx: Ctx, name: str, **values: Any) -> web.Response:
    return render(
        ctx.request,
        name,
        ctx.lang,
        ctx=ctx,
        user=ctx.user,
        agency=ctx.agency,
        agencies=ctx.agencies,
        csrf=ctx.user.csrf,
        **values,
    )


# ------------------------------------------------------------------------------ login
async def login_form(request: web.Request) -> web.Response:
    lang = _lang(request)
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", lang, ctx=None, csrf=token, failed=False)
    _set_cookie(request, response, LOGIN_CSRF_COOKIE, token, max_age=3600)
    if request.query.get("lang"):
        _set_cookie(request, response, LANG_COOKIE, lang, max_age=365 * 86400)
    return response


async def login(request: web.Request) -> web.Response:
    services = request.app[DASHBOARD]
    lang = _lang(request)
    form = await read_form(request)
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not _same(form.get("csrf", ""), expected):
        return error_page(request, lang, 403, "bad_request")
    username = str(form.get("username", ""))[:64]
    password = str(form.get("password", ""))[:1024]
    client = client_address(request, services.doors)
    user = await auth.login_attempt(services, username, password, client)
    if isinstance(user, auth.Throttled):  # locked out: 429, the password was not even checked
        response = render(
            request, "error.html", lang, status=429, message=user.message(lang), ctx=None
        )
        response.headers["Retry-After"] = user.retry_after
        return response
    if user is None:
        await services.audit.record("anonymous", "login.failed", {"username": username})
        token = secrets.token_urlsafe(24)
        response = render(
            request, "login.html", lang, status=401, ctx=None, csrf=token, failed=True
        )
        _set_cookie(request, response, LOGIN_CSRF_COOKIE, token, max_age=3600)
        return response
    token = await auth.open_session(services.sessions, user, services.settings.admin_session_hours)
    await services.audit.record(f"admin:{user.username}", "login", {"role": user.role})
    response = redirect(f"{PREFIX}/")
    _set_cookie(request, response, COOKIE, token)
    response.del_cookie(LOGIN_CSRF_COOKIE, path=PREFIX)
    return response


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, **SECURITY_HEADERS})


def _set_cookie(
    request: web.Request,
    response: web.StreamResponse,
    name: str,
    value: str,
    max_age: int | None = None,
) -> None:
    response.set_cookie(
        name,
        value,
        path=PREFIX,
        httponly=True,
        samesite="Strict",
        secure=served_over_https(request, request.app[DASHBOARD].settings),
        max_age=max_age,
    )


@page()
async def logout(ctx: Ctx) -> web.StreamResponse:
    await auth.close_session(ctx.services.sessions, ctx.request.cookies.get(COOKIE))
    await ctx.services.audit.record(ctx.actor, "logout", {})
    response = redirect(f"{PREFIX}/login")
    response.del_cookie(COOKIE, path=PREFIX)
    return response


async def switch_language(request: web.Request) -> web.StreamResponse:
    lang = language(request.match_info["lang"])
    target = request.query.get("next", f"{PREFIX}/")
    if not target.startswith(f"{PREFIX}/") or "//" in target or "\\" in target:
        target = f"{PREFIX}/"
    if not target.isascii() or not target.isprintable():  # CR/LF/NUL would break the header
        target = f"{PREFIX}/"
    response = redirect(target)
    _set_cookie(request, response, LANG_COOKIE, lang, max_age=365 * 86400)
    return response


# ------------------------------------------------------------------------------ pages
async def _release(ctx: Ctx) -> releases.Published:
    """The figures this page may show: a frozen release (the latest, or ``?release=``)."""
    wanted = ctx.request.query.get("release", "")[:16] or None
    return await releases.published(
        ctx.services.sessions, ctx.thresholds, ctx.agency_id, wanted, within=ctx.within
    )


async def _figures(
    ctx: Ctx, name: str, view: releases.Published | None = None, **values: Any
) -> web.Response:
    """A page of figures, with the release they come from and when the next one is due."""
    view = view or await _release(ctx)
    settings = ctx.services.settings
    history = view.history
    period, due = releases.next_release(
        history, settings.release_period, settings.effective_release_delay_hours, utcnow().date()
    )
    return _view(
        ctx,
        name,
        view=view,
        release=view.release,
        history=history,
        next_period=period,
        next_due=due,
        **values,
    )


@page()
async def overview(ctx: Ctx) -> web.StreamResponse:
    view = await _release(ctx)
    classes = view.classes or {}
    chart = {  # machine-readable figures; Chart.js writes them in ``locale`` (Intl)
        "locale": ctx.lang,
        "trend": {
            "labels": [c.key for c in view.trend],
            "rates": [None if c.rate is None else round(c.rate, 1) for c in view.trend],
            "label": gettext(ctx.lang, "Satisfaction rate"),
        },
        "bands": {
            "labels": list(classes),
            "counts": list(classes.values()),
            "label": gettext(ctx.lang, "Responses"),
        },
    }
    chart_json = json.dumps(chart, ensure_ascii=False)
    return await _figures(
        ctx, "overview.html", view, k=ctx.thresholds.k_group, chart_json=chart_json
    )


@page()
async def ranking(ctx: Ctx) -> web.StreamResponse:
    view = await _release(ctx)
    # A unit's scope ranks its subtree (itself and every unit under it that it may read), the
    # same figures the province's document ranks; units are ranked among their own kind
    # (wards among wards, districts among districts), never a district against its wards.
    kinds: dict[str, list[stats.Cell]] = {}
    for cell in view.agencies:
        unit = ctx.tree.by_code(cell.key)
        cell.rank = None
        kinds.setdefault(unit.kind if unit else units.KINDS[-2], []).append(cell)
    groups = [
        (kind, stats.rank(kinds[kind], ctx.thresholds.k_group))
        for kind in (*units.KINDS, *sorted(set(kinds) - set(units.KINDS)))
        if kind in kinds
    ]
    names = {a.code: a.name for a in ctx.agencies}
    return await _figures(
        ctx, "ranking.html", view, groups=groups, names=names, k=ctx.thresholds.k_group
    )


async def _units(ctx: Ctx, level: str) -> web.StreamResponse:
    if level == "official":
        await ctx.services.audit.record(
            ctx.actor,
            "view.officials",
            {"agency": ctx.agency.code if ctx.agency else "*"},
        )
    view = await _release(ctx)
    return await _figures(
        ctx,
        "units.html",
        view,
        cells=view.officials if level == "official" else view.procedures,
        level=level,
        field_name=lambda code: fields.label(code, ctx.lang) or "–",
        k=ctx.thresholds.k_official if level == "official" else ctx.thresholds.k_group,
    )


@page()
async def officials(ctx: Ctx) -> web.StreamResponse:
    return await _units(ctx, "official")


@page()
async def procedures(ctx: Ctx) -> web.StreamResponse:
    return await _units(ctx, "procedure")


@page()
async def fields_page(ctx: Ctx) -> web.StreamResponse:
    """Fields (lĩnh vực) ranked, and per field the criteria that drive dissatisfaction (the
    highest lift first): the province's fields for an admin, the agency's own for a viewer."""
    view = await _release(ctx)
    driving = sorted(
        view.field_criteria,
        key=lambda s: (s.field, s.suppressed, -(s.lift or 0.0), s.agency, s.criterion),
    )
    return await _figures(
        ctx,
        "fields.html",
        view,
        cells=view.fields,
        driving=driving,
        field_name=lambda code: fields.label(code, ctx.lang) or code,
        k=ctx.thresholds.k_group,
    )


@page()
async def criteria(ctx: Ctx) -> web.StreamResponse:
    return await _figures(ctx, "criteria.html", k=ctx.thresholds.k_group)


@page()
async def coverage(ctx: Ctx) -> web.StreamResponse:
    return await _figures(ctx, "coverage.html", k=ctx.thresholds.k_group)


def _export_levels(ctx: Ctx) -> tuple[str, ...]:
    """Row-level data never reaches an agency viewer: only aggregates cut from releases do."""
    return ("responses", *aggregates.LEVELS) if ctx.user.is_admin else aggregates.LEVELS


@page()
async def exports_page(ctx: Ctx) -> web.StreamResponse:
    history = await releases.list_releases(ctx.services.sessions)
    return _view(
        ctx,
        "exports.html",
        levels=_export_levels(ctx),
        formats=export.FORMATS,
        periods=export.PERIODS,
        history=history,
    )


@page()
async def download(ctx: Ctx) -> web.StreamResponse:
    form = await read_form(ctx.request)
    level = str(form.get("level", "agency"))
    fmt = str(form.get("format", "csv"))
    if level not in _export_levels(ctx):
        await ctx.services.audit.record(
            ctx.actor, "access.denied", {"path": ctx.request.path, "level": level[:32]}
        )
        return error_page(ctx.request, ctx.lang, 403, "rows_admin_only")
    if fmt not in export.FORMATS:
        return error_page(ctx.request, ctx.lang, 400, "bad_request")
    release = str(form.get("release", ""))[:16] or None
    period = str(form.get("period", "month"))
    try:
        if level == "responses":
            spec = export.ExportSpec(
                level=level,
                fmt=fmt,
                period=period,
                agency_id=ctx.agency_id,
                until=await releases.released_until(ctx.services.sessions),
            )
            chunks = export.stream_export(ctx.services.sessions, spec, ctx.thresholds)
            filename, content_type = spec.filename, spec.content_type
            # The files are built and checked before the first chunk: an erasure meanwhile
            # becomes an error page, not a broken download.
            first = await anext(chunks)
        else:
            wanted = aggregates.AggregateSpec(level, release, ctx.agency_id, ctx.within)
            header, rows = await aggregates.aggregate_table(
                ctx.services.sessions, wanted, ctx.thresholds
            )
            chunks = aggregates.stream_table(header, rows, fmt)
            filename, content_type = (
                f"surveybot-{level}-{release or 'latest'}.{fmt}",
                export.CONTENT_TYPES[fmt],
            )
            first = await anext(chunks)
    except (export.ExportError, aggregates.AggregateError) as exc:
        # The storage's reason is technical English (shared with the CLI): framed in the reader's.
        message = gettext(ctx.lang, "The export could not be made ({reason}).", reason=str(exc))
        return render(ctx.request, "error.html", ctx.lang, status=400, message=message, ctx=None)
    except export.ChangedDuringExport as exc:
        message = gettext(
            ctx.lang, "The data changed during the export ({reason}).", reason=str(exc)
        )
        return render(ctx.request, "error.html", ctx.lang, status=409, message=message, ctx=None)
    await ctx.services.audit.record(
        ctx.actor,
        "export",
        {
            "level": level,
            "format": fmt,
            "period": period if level == "responses" else (release or "latest"),
            "agency": ctx.agency.code if ctx.agency else "*",
            "via": "dashboard",
        },
    )
    response = web.StreamResponse(
        headers={
            "Content-Type": content_type,
            "Content-Disposition": f'attachment; filename="{filename}"',
            **SECURITY_HEADERS,
        }
    )
    await response.prepare(ctx.request)
    await response.write(first)
    async for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


# ------------------------------------------------------------------------------ reports
def _report_scope(ctx: Ctx) -> str:
    """The scope a report is made for: the chosen (or a viewer's own) agency, else the province."""
    return ctx.agency_id if ctx.agency_id is not None else releases.PROVINCE


def _visible_scopes(ctx: Ctx) -> set[str] | None:
    """The reports a user may list and download: the chosen unit's subtree (a viewer's or
    manager's own, or one inside it; the scope rule decided which), or, for a province admin
    with no unit chosen, every scope (None)."""
    if ctx.agency is None:
        return None if ctx.user.is_admin else set()
    return set(ctx.tree.subtree(ctx.agency.id))


@page()
async def reports_page(ctx: Ctx) -> web.StreamResponse:
    sessions = ctx.services.sessions
    stored = await report_store.listed(sessions, _visible_scopes(ctx))
    periods = reports.periods_with_releases(await releases.list_releases(sessions))
    return _view(
        ctx,
        "reports.html",
        stored=stored,
        periods=periods,
        formats=tuple(report_store.FORMATS),
    )


@page()
async def generate_report(ctx: Ctx) -> web.StreamResponse:
    """On demand: the report of one period for the page's scope (stored, audited)."""
    form = await read_form(ctx.request)
    services = ctx.services
    try:
        period = reports.parse_period(str(form.get("period", ""))[:20])
        report, created = await report_store.generate(
            services.sessions,
            _report_scope(ctx),
            period,
            ctx.thresholds,
            "request",
            services.settings.report_font or report_pdf.DEFAULT_FONT,
        )
    except reports.ReportError as exc:
        message = gettext(ctx.lang, "The report could not be made ({reason}).", reason=str(exc))
        return render(ctx.request, "error.html", ctx.lang, status=400, message=message, ctx=None)
    if created:
        await services.audit.record(ctx.actor, "report.generate", report.audit_detail())
    query = f"?agency={ctx.agency.code}" if ctx.agency and ctx.user.is_admin else ""
    return redirect(f"{PREFIX}/reports{query}")


@page()
async def download_report(ctx: Ctx) -> web.StreamResponse:
    """One stored report's file; another unit's report is Not Found, like a missing one."""
    fmt = ctx.request.match_info["fmt"]
    found = await report_store.file(
        ctx.services.sessions, ctx.request.match_info["report_id"], fmt, _visible_scopes(ctx)
    )
    if found is None:
        return error_page(ctx.request, ctx.lang, 404, "not_found")
    report, data = found
    await ctx.services.audit.record(
        ctx.actor, "report.download", {**report.audit_detail(), "format": fmt}
    )
    return web.Response(
        body=data,
        headers={
            "Content-Type": report_store.FORMATS[fmt],
            "Content-Disposition": f'attachment; filename="{report.filename(fmt)}"',
            **SECURITY_HEADERS,
        },
    )


@page(admin_only=True)
async def audit_page(ctx: Ctx) -> web.StreamResponse:
    try:
        offset = min(max(0, int(ctx.request.query.get("offset", "0")[:12])), 10**9)
    except ValueError:
        return error_page(ctx.request, ctx.lang, 400, "bad_request")
    entries = await ctx.services.audit.recent(limit=200, offset=offset)
    check = await ctx.services.audit.verify()
    return _view(
        ctx,
        "audit.html",
        entries=entries,
        check=check,
        dumps=lambda d: json.dumps(d, ensure_ascii=False, sort_keys=True),
    )


def setup(
    app: web.Application, templates: jinja2.Environment, services: auth.DashboardServices
) -> None:
    app[TEMPLATES] = templates
    app[DASHBOARD] = services
    app.router.add_get(f"{PREFIX}/login", login_form, name="admin_login_form")
    app.router.add_post(f"{PREFIX}/login", login, name="admin_login")
    app.router.add_post(f"{PREFIX}/logout", logout, name="admin_logout")
    app.router.add_get(f"{PREFIX}/lang/{{lang}}", switch_language, name="admin_lang")
    app.router.add_get(f"{PREFIX}/", overview, name="admin_overview")
    app.router.add_get(f"{PREFIX}/ranking", ranking, name="admin_ranking")
    app.router.add_get(f"{PREFIX}/officials", officials, name="admin_officials")
    app.router.add_get(f"{PREFIX}/procedures", procedures, name="admin_procedures")
    app.router.add_get(f"{PREFIX}/fields", fields_page, name="admin_fields")
    app.router.add_get(f"{PREFIX}/criteria", criteria, name="admin_criteria")
    app.router.add_get(f"{PREFIX}/coverage", coverage, name="admin_coverage")
    app.router.add_get(f"{PREFIX}/exports", exports_page, name="admin_exports")
    app.router.add_post(f"{PREFIX}/exports/download", download, name="admin_download")
    app.router.add_get(f"{PREFIX}/reports", reports_page, name="admin_reports")
    app.router.add_post(f"{PREFIX}/reports/generate", generate_report, name="admin_report_make")
    app.router.add_get(
        f"{PREFIX}/reports/{{report_id}}.{{fmt}}", download_report, name="admin_report_file"
    )
    app.router.add_get(f"{PREFIX}/audit", audit_page, name="admin_audit")
    app.router.add_static(f"{PREFIX}/static", STATIC_DIR, name="admin_static")

    async def redirect_root(request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther(f"{PREFIX}/")

    app.router.add_get(PREFIX, redirect_root)
