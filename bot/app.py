"""The aiohttp application: agency API, rating links and QR codes, the simulator, health."""

from __future__ import annotations

import io
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import jinja2
import segno
from aiohttp import web

from bot import api, dashboard
from bot.body import BODY_LIMITS, BodyLimits
from bot.dashboard.auth import DashboardServices
from bot.forwarded import served_over_https
from bot.http_errors import install_request_handler, json_errors
from bot.i18n import normalise_language
from bot.openapi import openapi_document
from bot.pages import STATIC_DIR, make_templates
from bot.telemetry import Scrape, webhook_timing
from bot.telemetry import setup as setup_metrics
from settings import Settings

SETTINGS = web.AppKey("settings", Settings)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
Readiness = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
READINESS: web.AppKey[Readiness] = web.AppKey("readiness")


async def health(request: web.Request) -> web.Response:
    """Alive: the process answers (a load balancer restarts it otherwise). The process id
    tells an operator which of ``--workers`` answered."""
    return web.json_response({"status": "ok", "pid": os.getpid()})


async def ready(request: web.Request) -> web.Response:
    """Ready: the database, Redis, the schema at head and every channel (503 otherwise, so a
    load balancer sends no traffic here). The report names states, never a secret."""
    ok, report = await request.app[READINESS]()
    return web.json_response({"status": "ready" if ok else "not_ready", **report},
                             status=200 if ok else 503)  # fmt: skip


async def openapi(request: web.Request) -> web.Response:
    """The document of the running configuration (its batch limit is a setting)."""
    return web.json_response(openapi_document(request.app[SETTINGS].max_batch_size))


async def rating_page(request: web.Request) -> web.Response:
    """What the receipt's QR code opens: pick a chat app. Viewing does not consume the token."""
    settings = request.app[SETTINGS]
    token = request.match_info["token"]
    bot = settings.telegram_bot_username
    # Vietnamese (with an English line) unless the receipt's link asks for English: the page is
    # read from paper by anyone, whatever the phone's language.
    lang = normalise_language(request.query.get("lang"))
    html = (
        request.app[TEMPLATES]
        .get_template("rating.html")
        .render(
            lang=lang,
            telegram_url=f"https://t.me/{bot}?start={token}" if bot else None,
            zalo_url=f"https://zalo.me/{oa}" if (oa := settings.zalo_oa_id) else None,
            zalo_code=f"#{token}",
            # relative: right behind any proxy host; the chat goes on in the page's language
            simulator_url=f"/simulator?token={token}" + ("&lang=en" if lang == "en" else ""),
            qr_url=f"/r/{token}/qr.svg",
        )
    )
    return web.Response(
        text=html, content_type="text/html", headers={"Referrer-Policy": "no-referrer"}
    )


async def rating_qr(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    token = request.match_info["token"]
    kind = request.match_info["kind"]
    target = request.query.get("target")
    bot = settings.telegram_bot_username
    if target == "telegram" and bot:
        data = f"https://t.me/{bot}?start={token}"
    else:
        data = f"{settings.effective_public_base_url}/r/{token}"
    qr = segno.make(data, error="m")
    buffer = io.BytesIO()
    if kind == "svg":
        qr.save(buffer, kind="svg", scale=6, border=2)
        return web.Response(body=buffer.getvalue(), content_type="image/svg+xml")
    qr.save(buffer, kind="png", scale=8, border=2)
    return web.Response(body=buffer.getvalue(), content_type="image/png")


def security_headers(settings: Settings) -> dict[str, str]:
    """The headers every answer carries, HTML and JSON alike (no page may run inline script)."""
    headers = {
        "Content-Security-Policy": CSP,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    if settings.effective_public_base_url.startswith("https://"):
        headers["Strict-Transport-Security"] = HSTS
    return headers


HSTS = "max-age=31536000; includeSubDomains"


CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


@dataclass(frozen=True, slots=True)
class AppParts:
    """What the HTTP app is assembled from: each route module's own narrow services, and the
    lifecycle of what runs behind it (started and closed with the app unless told otherwise)."""

    settings: Settings
    api: api.AgencyApi
    dashboard: DashboardServices
    #: Every channel package's inbound routes (webhooks, the simulator).
    channel_routes: Sequence[web.RouteDef]
    start: Callable[[], None]
    close: Callable[[], Awaitable[None]]
    #: ``/readyz``: whether this process can serve now, and the report behind it.
    readiness: Readiness
    #: What ``/metrics`` reads at scrape time (served only with ``SURVEYBOT_METRICS_ENABLED``).
    metrics: Scrape | None = None


class Composed(Protocol):
    """The composition root (``bot.runtime.Runtime``) as the app sees it: a source of parts."""

    def app_parts(self) -> AppParts: ...


def create_app(composed: Composed, *, background: bool = True) -> web.Application:
    install_request_handler()
    parts = composed.app_parts()
    settings = parts.settings
    app = web.Application(
        middlewares=[json_errors, webhook_timing], client_max_size=settings.max_body_bytes
    )
    headers = security_headers(settings)

    async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
        # A signal, not a middleware: it also reaches streamed downloads and static files.
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        if served_over_https(request, settings):  # also behind a trusted TLS proxy
            response.headers.setdefault("Strict-Transport-Security", HSTS)

    app.on_response_prepare.append(add_security_headers)
    app[SETTINGS] = settings
    app[BODY_LIMITS] = BodyLimits.from_settings(settings)
    app[api.AGENCY_API] = parts.api
    app.add_routes(api.routes())
    app.router.add_get("/api/v1/openapi.json", openapi, name="openapi")
    app.router.add_get("/healthz", health, name="health")
    app[READINESS] = parts.readiness
    app.router.add_get("/readyz", ready, name="ready")
    if settings.metrics_enabled and parts.metrics is not None:
        setup_metrics(app, parts.metrics, settings.metrics_token)
    app.router.add_get(r"/r/{token:[A-Za-z0-9_-]{8,128}}", rating_page, name="rating_page")
    app.router.add_get(
        r"/r/{token:[A-Za-z0-9_-]{8,128}}/qr.{kind:svg|png}", rating_qr, name="rating_qr"
    )
    app.router.add_static("/static", STATIC_DIR, name="static")
    app[TEMPLATES] = make_templates()
    dashboard.setup(app, make_templates(), parts.dashboard)
    app.add_routes(parts.channel_routes)

    if background:

        async def lifecycle(app: web.Application):  # type: ignore[no-untyped-def]
            parts.start()
            yield
            await parts.close()

        app.cleanup_ctx.append(lifecycle)
    return app
