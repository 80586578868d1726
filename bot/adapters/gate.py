"""The inbound door every channel's webhook and poller goes through, written once.

* **Secret or signature first**: a channel's check runs on the headers and the raw bytes before
  anything is parsed; shared secrets are compared in constant time (:func:`secret_matches`).
* **Stored, then acknowledged**: a verified event becomes a sealed row of the durable inbox
  (``storage/inbox.py``) in one short transaction, and only then is the platform answered 200;
  when the row cannot be written the answer is 503, so the platform may redeliver, and nothing
  was acknowledged. A redelivery of an event already stored is a duplicate (by its event id).
* **Processed from the inbox, exactly once**: the channel's handler runs from the inbox worker
  (``storage/inbox_worker.py``), at once for the event just stored (leased to this webhook by
  the statement that stored it, ``inbox.accept_and_claim``, unless an earlier event of the
  chat is still pending, which comes first) when it finishes inside
  ``inline_seconds`` (the citizen's next question goes out before the platform's deadline),
  else in the background, with retries of our own. A crash after the 200 loses nothing.

Nothing identifying is logged, only the door and the error's kind. Routing the event to the one
funnel is the channel's own handler.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from bot.body import parse_json, read_raw
from bot.channels import DeliveryError
from bot.http_errors import error_response
from storage import inbox
from storage.db import Sessions
from storage.inbox_worker import LATER, InboxWorker
from storage.pseudonym import KeyRing

log = logging.getLogger(__name__)

#: A channel's handler of one stored event's body.
EventHandler = Callable[[dict[str, Any]], Awaitable[object]]


class _Word:
    """An outcome that is not the handler's: shown to the platform (and tests) as a word."""

    def __init__(self, word: str) -> None:
        self.word = word

    def __repr__(self) -> str:
        return self.word.upper()

    def __str__(self) -> str:
        return self.word


#: The event was stored before: acknowledged without effect.
DUPLICATE: Final = _Word("duplicate")
#: Stored and acknowledged; processed in the background (an earlier event of the chat first).
QUEUED: Final = _Word("queued")


class Inbox:
    """The door to the durable inbox for the channel packages."""

    def __init__(
        self, sessions: Sessions, keys: KeyRing, worker: InboxWorker, inline_seconds: float
    ) -> None:
        self._sessions = sessions
        self._keys = keys
        self._worker = worker
        self.inline_seconds = inline_seconds

    def handle(self, channel: str, handler: EventHandler) -> None:
        """Register how ``channel``'s stored events are processed."""

        async def run(event: inbox.Claimed) -> object:
            return await handler(event.body)

        self._worker.register(channel, run)

    async def accept(
        self, channel: str, event_key: str, conversation: str, body: dict[str, Any]
    ) -> object:
        """Store one verified event and try to process it now. Raises only when it could not be
        stored; otherwise the handler's outcome, ``DUPLICATE`` or ``QUEUED``."""
        async with self._sessions() as session:
            event_id, claimed = await inbox.accept_and_claim(
                session,
                self._keys,
                channel=channel,
                event_key=event_key,
                conversation=conversation,
                body=body,
                lease=self._worker.lease,
                now=self._worker.clock(),
            )
        if event_id is None:
            return DUPLICATE
        if claimed is None:  # an earlier event of the chat is pending: it comes first
            self._worker.notify()
            return QUEUED
        outcome = await self._worker.process_claimed(claimed, self.inline_seconds)
        return QUEUED if outcome is LATER else outcome

    async def take(
        self,
        source: str,
        channel: str,
        event_key: str,
        conversation: str,
        body: dict[str, Any],
        answer: Callable[[object], dict[str, Any]] | None = None,
    ) -> web.Response:
        """A webhook's answer: 200 once the event is stored (``answer`` shapes the body), 503
        when it could not be (the platform may redeliver; nothing was acknowledged)."""
        try:
            outcome = await self.accept(channel, event_key, conversation, body)
        except Exception as exc:
            log.warning("%s not stored (%s); it may be redelivered", source, kind(exc))
            return error_response(503, "retry_later", "the event could not be stored; retry")
        return web.json_response((answer or default_answer)(outcome))


def default_answer(outcome: object) -> dict[str, Any]:
    if outcome is DUPLICATE:
        return {"ok": True, "duplicate": True}
    if outcome is QUEUED:
        return {"ok": True, "queued": True}
    return {"ok": True}


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


def kind(exc: BaseException) -> str:
    """An error as a log may name it: a delivery error's reason, else its class."""
    return exc.reason if isinstance(exc, DeliveryError) else exc.__class__.__name__
