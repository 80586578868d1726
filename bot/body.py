"""Request bodies, read in one place with bounds on size, time, depth and content.

Every route that reads a body (the agency API, the webhooks, the simulator, the dashboard forms)
goes through :func:`read_raw`, :func:`parse_json` / :func:`read_json` or :func:`read_form`, so:

* a body larger than ``max_body_bytes`` is refused with 413 before it is read when its
  ``Content-Length`` says so, and while it is read otherwise;
* a body not received within ``body_read_timeout_seconds`` is refused with 408 (a client that
  claims 100 MB and sends 10 bytes holds no connection);
* JSON deeper than ``max_json_depth``, with ``NaN``/``Infinity``, or with a lone surrogate (which
  no database can store) is refused with 400; a NUL character is refused with 400 (PostgreSQL
  text cannot hold one) or, for the webhooks, stripped (the platform would only retry);
* a form that is not UTF-8 or not ``application/x-www-form-urlencoded`` is refused with 400/415.

Every refusal is a :class:`BodyError`, a ``ServiceError``: the error middleware turns it into a
JSON body (or a polite HTML page on the dashboard), and nothing is logged with a trace.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from bot.service import ServiceError
from settings import Settings

DEFAULT_MAX_DEPTH = 32
DEFAULT_TIMEOUT = 10.0
MAX_FORM_FIELDS = 100
_FORM = web.RequestKey("surveybot_form", MultiDictProxy)
Nul = Literal["refuse", "strip"]


class BodyError(ServiceError):
    """A body the server refuses to read (status 400, 408, 413 or 415)."""


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """The running bounds of a body; an app without them (a test's bare app) uses the defaults."""

    max_bytes: int
    timeout: float
    max_depth: int

    @classmethod
    def from_settings(cls, settings: Settings) -> BodyLimits:
        return cls(
            settings.max_body_bytes, settings.body_read_timeout_seconds, settings.max_json_depth
        )


BODY_LIMITS = web.AppKey("body_limits", BodyLimits)


def _limits(request: web.Request) -> tuple[int, float, int]:
    limits = request.app.get(BODY_LIMITS)
    if limits is None:
        return request.app._client_max_size, DEFAULT_TIMEOUT, DEFAULT_MAX_DEPTH
    return limits.max_bytes, limits.timeout, limits.max_depth


async def read_raw(request: web.Request) -> bytes:
    """The whole body, bounded in size and in time."""
    max_bytes, timeout, _ = _limits(request)
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise BodyError(413, "body_too_large", f"the body must not exceed {max_bytes} bytes")
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise BodyError(
            408, "body_timeout", f"the body was not received within {timeout:g} seconds"
        ) from None
    except web.HTTPRequestEntityTooLarge:
        raise BodyError(
            413, "body_too_large", f"the body must not exceed {max_bytes} bytes"
        ) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(raw: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH, nul: Nul = "refuse") -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, at most ``max_depth`` levels, storable strings."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError(400, "malformed_json", "the body is not UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise BodyError(400, "too_deep", f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise BodyError(400, "malformed_json", f"the body is not valid JSON: {reason}") from None
    return _clean(value, max_depth, nul)


def _clean(value: Any, max_depth: int, nul: Nul) -> Any:
    """Check depth and strings without recursion; strip NULs in place when asked."""

    def text(s: str) -> str:
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise BodyError(
                400, "invalid_unicode", "the body holds a lone surrogate (\\ud800-\\udfff)"
            ) from None
        if "\x00" in s:
            if nul == "refuse":
                raise BodyError(400, "nul_character", "text must not contain NUL (\\u0000)")
            return s.replace("\x00", "")
        return s

    if isinstance(value, str):
        return text(value)
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise BodyError(400, "too_deep", f"JSON nested deeper than {max_depth} levels")
        if isinstance(node, dict):
            items = list(node.items())
            node.clear()
            for key, item in items:
                if isinstance(item, str):
                    item = text(item)
                elif isinstance(item, dict | list):
                    stack.append((item, depth + 1))
                node[text(key)] = item
        elif isinstance(node, list):
            for index, item in enumerate(node):
                if isinstance(item, str):
                    node[index] = text(item)
                elif isinstance(item, dict | list):
                    stack.append((item, depth + 1))
    return value


async def read_json(
    request: web.Request,
    *,
    require_type: bool = True,
    nul: Nul = "refuse",
    object_only: bool = False,
) -> Any:
    """The body as JSON (``Content-Type: application/json`` when ``require_type``)."""
    if require_type and request.content_type != "application/json":
        raise BodyError(415, "unsupported_media_type", "send Content-Type: application/json")
    raw = await read_raw(request)
    _, _, depth = _limits(request)
    value = parse_json(raw, max_depth=depth, nul=nul)
    if object_only and not isinstance(value, dict):
        raise BodyError(400, "malformed_json", "the body must be a JSON object")
    return value


async def read_form(request: web.Request) -> MultiDictProxy[str]:
    """A browser form (URL-encoded UTF-8); read once per request, then served from the request."""
    cached = request.get(_FORM)
    if cached is not None:
        return cached
    ctype = request.content_type
    if ctype not in ("application/x-www-form-urlencoded", "application/octet-stream", ""):
        raise BodyError(415, "unsupported_media_type", "send an URL-encoded form")
    raw = await read_raw(request)
    try:
        text = raw.decode("ascii")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise BodyError(400, "malformed_form", "the form is not URL-encoded UTF-8") from None
    for key, value in pairs:
        if "\x00" in key or "\x00" in value:
            raise BodyError(400, "nul_character", "form fields must not contain NUL")
    form = MultiDictProxy(MultiDict(pairs))
    request[_FORM] = form
    return form


def ascii_or_none(value: str | None) -> str | None:
    """A header or form value usable as a secret (printable ASCII), or None."""
    if value is None or not value.isascii() or not value.isprintable():
        return None
    return value
