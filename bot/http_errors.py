"""Every error an HTTP client can cause becomes a 4xx JSON body that names the problem.

Unexpected failures become a 500 JSON body with no trace: a traceback is never shown to a client,
and the logged line names the exception class only (its message might echo input).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

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


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ServiceError as exc:
        return error_response(exc.status, exc.error, exc.detail)
    except ValidationError as exc:
        return validation_response(exc)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_response(413, "body_too_large", exc.text or "the body is too large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.reason.lower().replace(" ", "_")
        return error_response(exc.status, reason, exc.text or exc.reason)
    except Exception as exc:
        log.error("unhandled %s on %s", exc.__class__.__name__, _route(request))
        return error_response(500, "internal_error", "the request could not be completed")


def _route(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "?"


class RouteAccessLogger(web.AbstractAccessLogger):
    """Access lines carry the route pattern, never the path: paths and queries hold tokens."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        resource = request.match_info.route.resource if isinstance(request, web.Request) else None
        route = resource.canonical if resource is not None else "(unmatched)"
        self.logger.info("%s %s %s %.1fms", request.method, route, response.status, time * 1000)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
