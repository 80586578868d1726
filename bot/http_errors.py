"""Every error an HTTP client can cause becomes a 4xx JSON body that names the problem.

Unexpected failures become a 500 JSON body with no trace: a traceback is never shown to a client,
and the logged line names the exception class only (its message might echo input).
"""

from __future__ import annotations

import contextlib
import html
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web, web_server
from aiohttp.web_protocol import RequestHandler
from pydantic import ValidationError

from bot.body import BodyError, read_raw
from bot.i18n import N_, gettext
from bot.service import ServiceError

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, error: str, detail: str, **extra: Any) -> web.Response:
    body: dict[str, Any] = {"error": error, "detail": detail, **extra}
    return web.json_response(body, status=status)


def validation_response(exc: ValidationError) -> web.Response:
    fields = [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "problem": e["msg"]}
        for e in exc.errors()
    ]
    return error_response(
        422, "invalid_fields", "some fields are missing or invalid", fields=fields
    )


#: Routes that are pages a person opens: their errors are a polite HTML page, not JSON.
PAGE_PREFIXES = ("/admin", "/r/", "/demo/telegram")
PAGE_EXACT = ("/simulator", "/demo/telegram", "/public", "/public/")
API_MARKERS = ("/api/", "/static/")

#: Said in both languages: the error can come before anything knows the reader's language.
ERROR_TEXT = N_("The request could not be completed. Please go back and try again.")
ERROR_PAGE = """<!doctype html>
<html lang="vi"><head><meta charset="utf-8"><title>{status} &middot; {title}</title></head>
<body><h1>{status} &middot; {title}</h1>
<p>{vi}</p>
<p lang="en">{en}</p>
<p><code>{error}</code></p></body></html>
"""


def is_page(path: str) -> bool:
    if any(marker in path for marker in API_MARKERS):
        return False
    return path in PAGE_EXACT or path.startswith(PAGE_PREFIXES)


def page_error(status: int, error: str, headers: dict[str, str] | None = None) -> web.Response:
    title = html.escape(
        HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
    )
    text = ERROR_PAGE.format(
        status=status,
        title=title,
        error=html.escape(error),
        vi=html.escape(gettext("vi", ERROR_TEXT)),
        en=html.escape(ERROR_TEXT),
    )
    return web.Response(text=text, status=status, content_type="text/html", headers=headers)


def _answer(
    request: web.BaseRequest,
    status: int,
    error: str,
    detail: str,
    headers: dict[str, str] | None = None,
    fields: list[dict[str, str]] | None = None,
) -> web.Response:
    if is_page(request.path):
        return page_error(status, error, headers)
    extra = {"fields": fields} if fields else {}
    response = error_response(status, error, detail, **extra)
    if headers:
        response.headers.update(headers)
    return response


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await _errors_as_answers(request, handler)
    if response.status >= 400 and not response.prepared:
        await _drain(request)
    return response


async def _drain(request: web.Request) -> None:
    """Read what is left of a refused request's body (bounded), so closing the connection does
    not reset it under the client before it has read our answer."""
    if request.body_exists and not request.content.is_eof():
        with contextlib.suppress(BodyError, OSError, web.HTTPException):
            await read_raw(request)


async def _errors_as_answers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ServiceError as exc:
        named = [{"field": f, "problem": p} for f, p in exc.fields]
        return _answer(request, exc.status, exc.error, exc.detail, fields=named or None)
    except ValidationError as exc:
        return validation_response(exc)
    except web.HTTPRequestEntityTooLarge as exc:
        return _answer(request, 413, "body_too_large", exc.text or "the body is too large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.reason.lower().replace(" ", "_")
        kept = {k: v for k, v in exc.headers.items() if k.lower() in KEPT_HEADERS}
        return _answer(request, exc.status, reason, exc.text or exc.reason, kept)
    except Exception as exc:
        log.error("unhandled %s on %s", exc.__class__.__name__, _route(request))
        return _answer(request, 500, "internal_error", "the request could not be completed")


KEPT_HEADERS = ("allow", "retry-after", "location", "www-authenticate")


def _route(request: web.BaseRequest) -> str:
    match_info = getattr(request, "_match_info", None)
    resource = match_info.route.resource if match_info is not None else None
    return resource.canonical if resource is not None else "(unmatched)"


class RouteAccessLogger(web.AbstractAccessLogger):
    """Access lines carry the route pattern, never the path: paths and queries hold tokens.

    Requests aiohttp refused before routing (a URL over 8 KB, control bytes in a header, not HTTP
    at all) have no route: they are logged as ``(unmatched)``, with their status.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        method = request.method if request.method.isascii() else "?"
        self.logger.info(
            "%s %s %s %.1fms", method[:16], _route(request), response.status, time * 1000
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


BARE_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering requests it cannot parse with our JSON body.

    aiohttp answers a request it rejects before routing (bad request line, URL over 8 KB, control
    bytes in a header) itself, in text/plain, and logs the parser's traceback. Here the client
    gets the same ``{"error", "detail"}`` body as everywhere else, and the log gets one line.
    """

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        kind = exc.__class__.__name__ if exc is not None else "error"
        log.warning("request refused before routing: %s %s", status, kind)
        if request.writer.output_size > 0:
            raise ConnectionError("the response was already started")
        if status >= 500:
            response = error_response(500, "internal_error", "the request could not be completed")
        else:
            detail = "the request is not valid HTTP (too long a URL or header, or control bytes)"
            response = error_response(status, "bad_request", detail)
        # No route, so no app hook: the headers every other answer carries are set here.
        response.headers.update(BARE_SECURITY_HEADERS)
        response.force_close()
        return response


def install_request_handler() -> None:
    """Make every aiohttp server in this process use :class:`JsonErrorRequestHandler`."""
    web_server.RequestHandler = JsonErrorRequestHandler  # type: ignore[misc]
