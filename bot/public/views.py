"""The public results page (``/public``) and its open data (``/public/data.csv``, ``.json``).

No login: anyone may read the unit rankings and satisfaction bands of closed quarters and years,
Vietnamese first (``?lang=en`` for English). Every figure comes from
``storage.public_results.public_results``, which only sums what releases published, so the page
reveals nothing a release did not. The page loads nothing from elsewhere and runs no script: its
Content-Security-Policy allows our own stylesheet and nothing else. Both doors are rate-limited
per client address (``bot.limits.limit_public``); an unknown period is a 404 that names the
periods there are, never a 500, whatever the query string holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jinja2
from aiohttp import web

from bot.http_errors import error_response
from bot.i18n import gettext, normalise_language
from bot.limits import Doors, limit_public
from bot.public import opendata
from settings import Settings
from storage.db import Sessions
from storage.limits import Decision
from storage.public_results import PublicResults, public_results
from storage.stats import Thresholds

PREFIX = "/public"
TEMPLATES = web.AppKey("public_templates", jinja2.Environment)
#: Nothing but our own stylesheet and images: no script at all, no external load of any kind.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Releases change at most once a period: a short public cache costs nothing.
    "Cache-Control": "public, max-age=300",
}
CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json; charset=utf-8"}
#: A query value longer than this is no period label of ours ("2026-Q3", "2026").
MAX_LABEL = 16


@dataclass(frozen=True, slots=True)
class PublicServices:
    """What the public page needs: the settings (k, bands, whether officials are shown, rates),
    the database (releases only are read) and the doors' limiter. Nothing else."""

    settings: Settings
    sessions: Sessions
    doors: Doors


PUBLIC = web.AppKey("public_services", PublicServices)


def _label(request: web.Request) -> str | None:
    return request.query.get("period", "")[:MAX_LABEL].strip() or None


async def _results(request: web.Request) -> PublicResults:
    services = request.app[PUBLIC]
    settings = services.settings
    return await public_results(
        services.sessions,
        Thresholds.from_settings(settings),
        _label(request),
        officials=settings.public_officials,
    )


def _bands(settings: Settings) -> list[dict[str, Any]]:
    """The Decision 766 bands in force: name and lowest rate, best first."""
    bands = Thresholds.from_settings(settings).bands_766
    return [{"name": n, "min_rate_pct": m} for n, m in bands.thresholds] + [
        {"name": bands.lowest, "min_rate_pct": 0.0}
    ]


def _render(request: web.Request, name: str, status: int = 200, **values: Any) -> web.Response:
    lang = normalise_language(request.query.get("lang"))
    html = (
        request.app[TEMPLATES]
        .get_template(f"public/{name}")
        .render(lang=lang, prefix=PREFIX, **values)
    )
    return web.Response(text=html, content_type="text/html", status=status, headers=HEADERS)


def _too_many_page(request: web.Request, decision: Decision) -> web.Response:
    lang = normalise_language(request.query.get("lang"))
    message = gettext(lang, "Too many requests from your address. Please try again shortly.")
    response = _render(request, "error.html", status=429, message=message, periods=[])
    response.headers["Retry-After"] = decision.retry_after_header
    response.headers["Cache-Control"] = "no-store"
    return response


async def results_page(request: web.Request) -> web.StreamResponse:
    refused = await limit_public(request.app[PUBLIC].doors, request)
    if refused is not None:
        return _too_many_page(request, refused)
    settings = request.app[PUBLIC].settings
    try:
        results = await _results(request)
    except LookupError:
        lang = normalise_language(request.query.get("lang"))
        periods = (await _results_of_latest(request)).periods
        message = gettext(lang, "There are no published results for this period.")
        return _render(request, "error.html", status=404, message=message, periods=periods)
    lang = normalise_language(request.query.get("lang"))
    return _render(
        request,
        "results.html",
        results=results,
        bands=_bands(settings),
        officials_enabled=settings.public_officials,
        other_lang="en" if lang == "vi" else "vi",
        question=_query(results, lang),
    )


async def _results_of_latest(request: web.Request) -> PublicResults:
    services = request.app[PUBLIC]
    return await public_results(services.sessions, Thresholds.from_settings(services.settings))


def _query(results: PublicResults, lang: str) -> str:
    """The query string that names this period (and language) in links."""
    period = f"period={results.period.label}" if results.period else ""
    language = "lang=en" if lang == "en" else ""
    joined = "&".join(p for p in (period, language) if p)
    return f"?{joined}" if joined else ""


async def data(request: web.Request) -> web.StreamResponse:
    refused = await limit_public(request.app[PUBLIC].doors, request)
    if refused is not None:
        response = error_response(
            429,
            "rate_limited",
            "too many requests for the public results from this address; retry later",
            retry_after=int(refused.retry_after_header),
        )
        response.headers["Retry-After"] = refused.retry_after_header
        return response
    fmt = request.match_info["fmt"]
    try:
        results = await _results(request)
    except LookupError:
        known = [p.label for p in (await _results_of_latest(request)).periods]
        return error_response(
            404,
            "unknown_period",
            "no closed period with this label; published: " + (", ".join(known) or "none yet"),
            periods=known,
        )
    settings = request.app[PUBLIC].settings
    body = opendata.as_csv(results) if fmt == "csv" else opendata.as_json(results, _bands(settings))
    label = results.period.label if results.period else "none"
    return web.Response(
        body=body,
        headers={
            **HEADERS,
            "Content-Type": CONTENT_TYPES[fmt],
            "Content-Disposition": f'attachment; filename="surveybot-public-{label}.{fmt}"',
        },
    )


def setup(app: web.Application, templates: jinja2.Environment, services: PublicServices) -> None:
    app[TEMPLATES] = templates
    app[PUBLIC] = services
    app.router.add_get(PREFIX, results_page, name="public_results")
    app.router.add_get(r"/public/data.{fmt:csv|json}", data, name="public_data")

    async def redirect_slash(request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther(PREFIX)

    app.router.add_get(f"{PREFIX}/", redirect_slash)
