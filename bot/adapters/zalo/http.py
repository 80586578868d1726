"""A thin aiohttp client for Zalo's HTTP APIs (no maintained async SDK exists).

Why its own module: Zalo answers failures as HTTP 200 with ``{"error": <int> != 0}`` (OA, ZNS,
OAuth) or ``{"ok": false, "error_code"}`` (Bot), so every caller needs the same "read the body,
never trust the status" logic, the same timeouts, and one connection pool per process.
Nothing here logs a URL, a body or a header: they carry tokens, user ids and phone numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp


class ZaloTransportError(Exception):
    """The call did not produce a readable Zalo answer (timeout, 5xx, not JSON).

    Whether the request took effect is unknown: callers retry (at-least-once).
    """


class ZaloHttp:
    """One lazily created ``ClientSession`` with a total timeout per call."""

    def __init__(self, timeout_seconds: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def call(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """The decoded JSON object of the answer, whatever its HTTP status below 500."""
        _, body = await self.request(
            method,
            url,
            json_body=json_body,
            form=form,
            params=params,
            headers=headers,
            timeout=timeout,
        )
        return body

    async def request(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Like :meth:`call`, with the HTTP status (for callers that must tell a 429 apart)."""
        kwargs: dict[str, Any] = {"headers": dict(headers or {})}
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
        if json_body is not None:
            kwargs["data"] = json.dumps(json_body, ensure_ascii=False).encode("utf-8")
            kwargs["headers"]["Content-Type"] = "application/json"
        elif form is not None:
            kwargs["data"] = dict(form)
        if params is not None:
            kwargs["params"] = dict(params)
        try:
            async with self._client().request(method, url, **kwargs) as response:
                raw = await response.read()
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ZaloTransportError(exc.__class__.__name__) from None
        if status >= 500:
            raise ZaloTransportError(f"HTTP {status}")
        try:
            body = json.loads(raw)
        except ValueError:
            raise ZaloTransportError(f"HTTP {status} without JSON") from None
        if not isinstance(body, dict):
            raise ZaloTransportError("answer is not a JSON object")
        return status, body

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def zalo_error(body: Mapping[str, Any]) -> int:
    """The OA/ZNS/OAuth ``error`` code as an int (0 = success; unreadable = -1)."""
    value = body.get("error", 0)
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1
