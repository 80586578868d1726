"""The inbound door every channel's webhook goes through, written once.

* **Secret or signature first**: a channel's check runs on the headers and the raw bytes before
  anything is parsed; shared secrets are compared in constant time (:func:`secret_matches`).
* **Once per event**: under a lock on the event, an event whose mark is already set is
  acknowledged without effect; the mark is set only AFTER the work committed (:func:`once`), so a
  crash between the two redelivers the event rather than losing it.
* **2xx only after the commit**: :func:`acknowledge` answers 200 once the work returned, and 503
  when it raised, so the platform retries; nothing identifying is logged, only the error's kind.

Where the marks live is the channel's choice (:class:`Marks`): Zalo keeps them in the database
(:class:`SqlMarks`, ``webhook_seen``), Telegram next to its chat state in Redis, keyed by
``update_id``. Routing the event to the one funnel is the channel's own parsing.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol, TypeVar

from aiohttp import web
from sqlalchemy.exc import IntegrityError

from bot.body import parse_json, read_raw
from bot.channels import DeliveryError
from bot.http_errors import error_response
from storage.coordination import Coordinator
from storage.db import Sessions
from storage.models import WebhookSeen

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Duplicate:
    def __repr__(self) -> str:
        return "DUPLICATE"


#: What :func:`once` returns for an event already processed.
DUPLICATE: Final = _Duplicate()


class Marks(Protocol):
    """De-duplication marks of processed events."""

    async def seen(self, key: str) -> bool: ...
    async def mark(self, key: str) -> None: ...


class SqlMarks:
    """Marks as ``webhook_seen`` rows (purged after the replay window by ``storage.retention``)."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    async def seen(self, key: str) -> bool:
        async with self._sessions() as session:
            return await session.get(WebhookSeen, key) is not None

    async def mark(self, key: str) -> None:
        async with self._sessions() as session:
            session.add(WebhookSeen(event_hash=key))
            with contextlib.suppress(IntegrityError):  # a concurrent worker marked it first
                await session.commit()


def secret_matches(given: str | None, expected: str) -> bool:
    """A shared secret header, compared in constant time (any bytes the header carried)."""
    if given is None:
        return False
    try:
        raw = given.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(raw, expected.encode("utf-8"))


async def read_event(request: web.Request, max_depth: int) -> Any:
    """The body as JSON, bounded (``bot/body.py``); NUL characters stripped, since the platform
    would only retry an event we refused for one."""
    return parse_json(await read_raw(request), max_depth=max_depth, nul="strip")


async def once(
    coordinator: Coordinator,
    marks: Marks,
    lock: str,
    key: str,
    work: Callable[[], Awaitable[T]],
) -> T | _Duplicate:
    """Run ``work`` unless the event ``key`` was processed; mark it only after ``work`` returned
    (its transaction committed). Concurrent deliveries of one event wait on ``lock``."""
    async with coordinator.lock(lock):
        if await marks.seen(key):
            return DUPLICATE
        result = await work()
        await marks.mark(key)
    return result


async def acknowledge(
    source: str,
    run: Callable[[], Awaitable[T]],
    answer: Callable[[T], dict[str, Any]],
    *,
    detail: str = "the event could not be stored; retry",
) -> web.Response:
    """200 with ``answer(result)`` once ``run`` returned; 503 (the platform redelivers) when it
    raised. ``source`` names the door in the log line, which carries only the error's kind."""
    try:
        result = await run()
    except Exception as exc:
        log.warning("%s not processed (%s); it will be redelivered", source, kind(exc))
        return error_response(503, "retry_later", detail)
    return web.json_response(answer(result))


def kind(exc: BaseException) -> str:
    """An error as a log may name it: a delivery error's reason, else its class."""
    return exc.reason if isinstance(exc, DeliveryError) else exc.__class__.__name__
