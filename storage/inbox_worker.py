"""The loop that processes the durable inbox (``storage/inbox.py``), in any number of processes.

Each round claims a batch (at most one event per conversation, so a batch runs concurrently
without two answers of one citizen racing), hands every event to its channel's handler with a
``Receipt``, and keeps the leases alive while handlers run. A handler that raises leaves its
event for a later round (exponential backoff with jitter, then a dead letter); a process that
dies mid-round leaves leases that run out, and another process takes the events over. Nothing
here knows a channel: handlers are registered by channel name.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping

from storage import inbox
from storage.db import Sessions
from storage.models import utcnow
from storage.pseudonym import KeyRing

log = logging.getLogger(__name__)

Handler = Callable[[inbox.Claimed, inbox.Receipt], Awaitable[None]]


class InboxWorker:
    def __init__(
        self,
        sessions: Sessions,
        keys: KeyRing,
        handlers: Mapping[str, Handler],
        *,
        batch: int = 20,
        lease: dt.timedelta = inbox.LEASE,
        max_attempts: int = inbox.MAX_ATTEMPTS,
        idle_seconds: float = 1.0,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.keys = keys
        self.handlers = dict(handlers)
        self.batch = batch
        self.lease = lease
        self.max_attempts = max_attempts
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """An event was just accepted in this process: process it now, not at the next poll."""
        self._wake.set()

    async def run_once(self) -> int:
        """One round: claim a batch and process it; the number of events claimed."""
        async with self.sessions() as session:
            claimed = await inbox.claim(
                session, self.keys, limit=self.batch, lease=self.lease, now=self.clock()
            )
        if not claimed:
            return 0
        keeper = asyncio.create_task(self._keep_leases([event.id for event in claimed]))
        try:
            await asyncio.gather(*(self._process(event) for event in claimed))
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        return len(claimed)

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop``: back to back while there is work, else wait for a notify or
        ``idle_seconds`` (events accepted by another process, retries coming due)."""
        while not stop.is_set():
            try:
                if await self.run_once():
                    continue
            except Exception as exc:  # the database is down: wait, the events are safe
                log.warning("inbox round failed: %s", exc.__class__.__name__)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.idle_seconds)

    async def _process(self, event: inbox.Claimed) -> None:
        handler = self.handlers.get(event.channel)
        receipt = inbox.Receipt(event.id)
        try:
            if handler is None:
                raise LookupError(f"no handler for channel {event.channel!r}")
            await handler(event, receipt)
            if not receipt.used:  # the handler changed nothing: mark it on its own
                async with self.sessions() as session:
                    await inbox.done(session, event.id, now=self.clock())
                    await session.commit()
        except Exception as exc:
            reason = f"{exc.__class__.__name__}: {str(exc)[:200]}"
            log.warning("inbox event of %s failed (attempt %d): %s", event.channel,
                        event.attempts, exc.__class__.__name__)  # fmt: skip
            with contextlib.suppress(Exception):  # if this fails too, the lease runs out
                async with self.sessions() as session:
                    status = await inbox.failed(
                        session, event.id, reason, max_attempts=self.max_attempts,
                        now=self.clock(),
                    )  # fmt: skip
                if status == inbox.DEAD:
                    log.error("inbox event of %s is a dead letter", event.channel)

    async def _keep_leases(self, event_ids: list[str]) -> None:
        """Renew the batch's leases at a third of their length until the round ends."""
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                async with self.sessions() as session:
                    await inbox.heartbeat(session, event_ids, lease=self.lease, now=self.clock())
