"""The loop that processes the durable inbox (``storage/inbox.py``), in any number of processes.

Each round claims a batch (at most one event per conversation, so a batch runs concurrently
without two answers of one citizen racing), runs every event's channel handler under a
``Receipt`` (its first writing commit marks the event done), and keeps the leases alive while
handlers run. A handler that raises leaves its event for a later round (exponential backoff with
jitter, then a dead letter); a process that dies mid-round leaves leases that run out, and
another process takes the events over. A webhook that just accepted an event asks for it at
once (``process_now``) so the citizen's next question does not wait for a round.

Nothing here knows a channel: handlers are registered by channel name.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from bot import metrics
from storage import inbox
from storage.db import Sessions
from storage.models import utcnow
from storage.pseudonym import KeyRing

log = logging.getLogger(__name__)

#: A channel's handler: applies one event; what it returns is shown to the webhook's caller.
Handler = Callable[[inbox.Claimed], Awaitable[object]]


class _Later:
    def __repr__(self) -> str:
        return "LATER"


#: ``process_now``'s answer when the event will be (or is being) processed in the background.
LATER: Final = _Later()


class NoHandler(LookupError):
    """An event of a channel no handler is registered for (kept, then a dead letter)."""


class InboxWorker:
    def __init__(
        self,
        sessions: Sessions,
        keys: KeyRing,
        *,
        batch: int = 20,
        lease: dt.timedelta = inbox.LEASE,
        max_attempts: int = inbox.MAX_ATTEMPTS,
        idle_seconds: float = 1.0,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.keys = keys
        self.handlers: dict[str, Handler] = {}
        self.batch = batch
        self.lease = lease
        self.max_attempts = max_attempts
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[object]] = set()

    def register(self, channel: str, handler: Handler) -> None:
        self.handlers[channel] = handler

    def notify(self) -> None:
        """An event was accepted in this process: the next round starts now, not at the poll."""
        self._wake.set()

    async def process_now(self, event_id: str, deadline: float) -> object:
        """Claim ``event_id`` and process it, waiting at most ``deadline`` seconds: the handler's
        outcome, or ``LATER`` when it is not claimable now (an earlier event of the same chat
        comes first) or still running (it goes on in the background, the webhook answers)."""
        async with self.sessions() as session:
            claimed = await inbox.claim(
                session, self.keys, limit=1, lease=self.lease, now=self.clock(), only=event_id
            )
        if not claimed:
            self.notify()
            return LATER
        return await self.process_claimed(claimed[0], deadline)

    async def process_claimed(self, event: inbox.Claimed, deadline: float) -> object:
        """Process an event this process has just leased (``inbox.accept_and_claim``), waiting
        at most ``deadline`` seconds: the handler's outcome, or ``LATER`` when it goes on in
        the background."""
        task = asyncio.create_task(self._with_lease([event]))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        try:
            async with asyncio.timeout(deadline):
                return await asyncio.shield(task)
        except TimeoutError:
            return LATER

    async def run_once(self) -> int:
        """One round: claim a batch and process it; the number of events claimed."""
        async with self.sessions() as session:
            claimed = await inbox.claim(
                session, self.keys, limit=self.batch, lease=self.lease, now=self.clock()
            )
        if claimed:
            await self._with_lease(claimed)
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

    async def drain(self, timeout: float) -> None:
        """Let events being processed in the background finish (a graceful stop)."""
        if self._running:
            await asyncio.wait(set(self._running), timeout=timeout)

    async def _with_lease(self, claimed: list[inbox.Claimed]) -> object:
        """Process a batch while renewing its leases; the first event's outcome."""
        keeper = asyncio.create_task(self._keep_leases([event.id for event in claimed]))
        try:
            outcomes = await asyncio.gather(*(self._process(event) for event in claimed))
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        return outcomes[0]

    async def _process(self, event: inbox.Claimed) -> object:
        try:
            receipt, outcome = await asyncio.create_task(self._handle(event))
            if not receipt.used:  # the handler wrote nothing: mark it on its own
                async with self.sessions() as session:
                    await inbox.done(session, event.id, now=self.clock(), attempt=event.attempts)
                    await session.commit()
            return outcome
        except Exception as exc:
            # Only the error's class: a message may quote the event (a citizen's text).
            reason = exc.__class__.__name__
            log.warning("inbox event of %s failed (attempt %d): %s",
                        event.channel, event.attempts, reason)  # fmt: skip
            with contextlib.suppress(Exception):  # if this fails too, the lease runs out
                async with self.sessions() as session:
                    status = await inbox.failed(
                        session, event.id, reason, max_attempts=self.max_attempts,
                        now=self.clock(), attempt=event.attempts,
                    )  # fmt: skip
                if status == inbox.DEAD:
                    log.error("inbox event of %s is a dead letter", event.channel)
                    metrics.dead_letter("inbox", event.channel)
            return LATER

    async def _handle(self, event: inbox.Claimed) -> tuple[inbox.Receipt, object]:
        """The handler in a task of its own, under the event's receipt (only this task's
        commits mark the event; the worker's own commits happen outside it)."""
        handler = self.handlers.get(event.channel)
        if handler is None:
            raise NoHandler(event.channel)
        receipt = inbox.Receipt(event.id, event.attempts, self.clock())
        token = inbox.processing(receipt)
        try:
            outcome = await handler(event)
        finally:
            inbox.finished(token)
        return receipt, outcome

    async def _keep_leases(self, event_ids: list[str]) -> None:
        """Renew the batch's leases at a third of their length until the round ends."""
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                async with self.sessions() as session:
                    await inbox.heartbeat(session, event_ids, lease=self.lease, now=self.clock())
