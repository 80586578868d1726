"""The dispatcher: drains the outbox to the channels, at least once, in order per conversation.

A message is claimed, sent, then marked sent; a crash between send and mark means a resend after
the lease, which channels deduplicate where they can (at-least-once). While a send runs its lease
is renewed (a slow channel is not a dead dispatcher), and marking it sent also records its
invitation delivered and claims the conversation's next message, in one transaction shared by
every send that finished meanwhile (``bot.sent_marks``). Two lanes, each with its own slots: replies
inside a running conversation, and invitations and reminders, so a backlog of one never holds up
the other. Failures back off exponentially with jitter or by the channel's ``retry_after``; a
permanent refusal closes the invitation as undeliverable instead of retrying forever; a survey
message out of retries on passing failures (an outage) falls back to the citizen's next channel,
or stalls, sealed, until an admin retries it from the dead-letter page or its survey closes.

Addresses and payloads are sealed in the outbox; they are opened here, in memory, just before the
send, and the row forgets both once it is marked sent (``outbox.sent_then_next``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from bot import metrics
from bot.channels import Channel, DeliveryError, OutboundMessage
from bot.sent_marks import SentMarks
from storage import outbox
from storage.db import Sessions
from storage.models import utcnow
from storage.pseudonym import KeyRing

log = logging.getLogger(__name__)
#: How many messages of one conversation a task sends back to back before yielding its slot.
FOLLOW_ON_LIMIT = 10
LANES = (outbox.PRIORITY_REPLY, outbox.PRIORITY_INVITATION)
#: Remember this many invitations already reported delivered (each is reported once).
DELIVERED_MEMORY = 50_000


class Dispatcher:
    def __init__(
        self,
        sessions: Sessions,
        keyring: KeyRing,
        channels: Mapping[str, Channel],
        *,
        max_attempts: int,
        interval: float,
        on_undeliverable: Callable[[str, bool], Awaitable[None]],
        on_delivered: Callable[[str], Awaitable[None]],
        batch_size: int = 50,
        concurrency: int = 16,
        reply_concurrency: int = 8,
        lease: dt.timedelta = outbox.LEASE,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.keys = keyring
        self.channels = channels
        self.max_attempts = max_attempts
        self.interval = interval
        self.on_undeliverable = on_undeliverable
        self.on_delivered = on_delivered
        self.batch_size = batch_size
        self.lease = lease
        #: What "due" means when claiming (a message held for the end of quiet hours waits
        #: for it); the real clock, which tests move.
        self.clock = clock
        self._capacity = {
            outbox.PRIORITY_REPLY: reply_concurrency,
            outbox.PRIORITY_INVITATION: concurrency,
        }
        self._slots = {lane: asyncio.Semaphore(n) for lane, n in self._capacity.items()}
        self._wake = {lane: asyncio.Event() for lane in LANES}
        self._in_flight: set[str] = set()
        self._delivered: set[str] = set()
        self._marks = SentMarks(sessions, clock=lambda: self.clock(), lease=lease)
        #: Set once a stop was asked: sends under way finish, nothing new starts, and every
        #: claimed message not yet sent is given back at once (not left to its lease).
        self._stopping = asyncio.Event()

    def kick(self) -> None:
        """Wake the loops now: a citizen waiting for the next question should not wait a tick."""
        for event in self._wake.values():
            event.set()

    async def run_once(self) -> int:
        """One round of every lane, at once; the number of messages sent."""
        async with self._leases_kept():
            results = await asyncio.gather(*(self._round(lane) for lane in LANES))
        return sum(results)

    async def drain(self, rounds: int = 100) -> None:
        """Send until nothing is ready (tests and the CLI use this instead of the loop)."""
        for _ in range(rounds):
            if not await self.run_once():
                return

    async def run_forever(self, stop: asyncio.Event) -> None:
        """One loop per lane, and the lease keeper, until ``stop``; then the sends under way
        finish and the rest is given back (a graceful stop)."""
        self._stopping.clear()

        async def stopping() -> None:
            await stop.wait()
            self._stopping.set()
            self.kick()

        watcher = asyncio.create_task(stopping())
        try:
            async with self._leases_kept():
                await asyncio.gather(*(self._lane_loop(lane, stop) for lane in LANES))
        finally:
            watcher.cancel()

    async def _lane_loop(self, lane: int, stop: asyncio.Event) -> None:
        """Keep the lane's slots busy: claim as many heads as there are free slots, start a
        task for each, and claim again as soon as a slot frees or a message is queued.

        Not in rounds: a round waited for its slowest send (a chat's one-second spacing, a
        slow channel) before claiming again, so a reply queued meanwhile waited for another
        conversation's send (docs/benchmarks.md, dispatch)."""
        wake = self._wake[lane]
        capacity = self._capacity[lane]
        running: set[asyncio.Task[int]] = set()
        try:
            while not stop.is_set():
                free = capacity - len(running)
                if free > 0:
                    wake.clear()  # a kick from now on means "claim again"
                    wanted = min(free, self.batch_size)
                    try:
                        claimed = await self._claim(lane, wanted)
                    except Exception:
                        log.exception("dispatcher claim failed; retrying")
                        claimed = []
                    for message in claimed:
                        task = asyncio.create_task(self._deliver(message, self._slots[lane]))
                        running.add(task)
                        task.add_done_callback(self._forget_when_done(running))
                    if claimed and len(claimed) == wanted:
                        continue  # there may be more due: claim again while slots are free
                # Nothing more due, or no slot free: until a send ends (its slot frees; what
                # it gave back is due), a kick (with a slot free), or the interval.
                kicked = asyncio.ensure_future(wake.wait()) if free > 0 else None
                try:
                    await asyncio.wait(
                        [*running, *([kicked] if kicked else [])],
                        timeout=self.interval,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    if kicked is not None:
                        kicked.cancel()
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    def _forget_when_done(
        self, running: set[asyncio.Task[int]]
    ) -> Callable[[asyncio.Task[int]], None]:
        """A delivery task's done callback: its slot is free again, and a failure the task
        did not record (the database down while marking) is logged, not lost."""

        def done(task: asyncio.Task[int]) -> None:
            running.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("delivery failed", exc_info=task.exception())

        return done

    async def _claim(self, lane: int, limit: int) -> list[outbox.Claimed]:
        async with self.sessions() as session:
            claimed = await outbox.claim(session, limit, self.clock(), lane=lane, lease=self.lease)
        self._in_flight.update(m.id for m in claimed)
        return claimed

    async def _round(self, lane: int) -> int:
        """Claim a batch of the lane and deliver it all (``run_once``, ``drain``)."""
        claimed = await self._claim(lane, self.batch_size)
        results = await asyncio.gather(*(self._deliver(m, self._slots[lane]) for m in claimed))
        return sum(results)

    @contextlib.asynccontextmanager
    async def _leases_kept(self) -> AsyncIterator[None]:
        """Renew the lease of every message this dispatcher holds, at a third of its length."""
        keeper = asyncio.create_task(self._keep_leases())
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _keep_leases(self) -> None:
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            with contextlib.suppress(Exception):  # the database is down: the sends wait too
                async with self.sessions() as session:
                    await outbox.extend(
                        session, list(self._in_flight), lease=self.lease, now=self.clock()
                    )

    async def _deliver(self, message: outbox.Claimed, slots: asyncio.Semaphore) -> int:
        """Send a conversation's head, then its next due messages, in order, in one task.

        Whatever this task holds and did not send (the fairness cap, a stop) is given back at
        once rather than left to its lease; a task cancelled outright leaves it to the lease
        (awaiting the database while the loop shuts down could hang the shutdown)."""
        sent = 0
        current: outbox.Claimed | None = message
        try:
            async with slots:
                while current is not None and sent < FOLLOW_ON_LIMIT:
                    if self._stopping.is_set():
                        break
                    if not await self._send(current):
                        current = None  # its failure is recorded: nothing to give back
                        break
                    sent += 1
                    following = await self._marks.sent(
                        current, delivered=self._first_delivery(current)
                    )
                    await self._report_delivered(current)
                    self._in_flight.discard(current.id)
                    current = following
                    if current is not None:
                        self._in_flight.add(current.id)
            if current is not None:
                await self._release(current)
        finally:
            self._in_flight.discard(message.id)
            if current is not None:
                self._in_flight.discard(current.id)
        return sent

    def _first_delivery(self, message: outbox.Claimed) -> bool:
        """Whether marking ``message`` sent should also record its invitation delivered: the
        first message of the invitation this process sends, on a channel where acceptance is
        delivery (a channel that forgets the address once sent waits for its receipt)."""
        invitation = message.invitation_id
        if not invitation or invitation in self._delivered:
            return False
        return not self._forgets_address(message)

    def _forgets_address(self, message: outbox.Claimed) -> bool:
        channel = self.channels.get(message.channel)
        return channel is not None and channel.capabilities.forget_address_once_sent

    async def _report_delivered(self, message: outbox.Claimed) -> None:
        """Remember the invitation as delivered; on a channel that forgets the address once
        sent, tell the service (it deletes the address; the receipt marks delivery)."""
        invitation = message.invitation_id
        if not invitation or invitation in self._delivered:
            return
        if self._forgets_address(message):
            await self.on_delivered(invitation)
        if len(self._delivered) >= DELIVERED_MEMORY:
            self._delivered.clear()
        self._delivered.add(invitation)

    async def _release(self, message: outbox.Claimed) -> None:
        """Give back a claimed message this task will not send (fairness cap reached)."""
        async with self.sessions() as session:
            await outbox.release(session, message)
            await session.commit()

    async def _send(self, message: outbox.Claimed) -> bool:
        """Open the sealed address and payload in memory and send; False when it failed (the
        failure is recorded: a retry later, or a dead letter)."""
        channel = self.channels.get(message.channel)
        started = metrics.now()
        try:
            if channel is None:
                raise DeliveryError(f"channel {message.channel!r} is not configured")
            address = self.keys.open(message.address_sealed)
            raw = address.split(":", 1)[1]
            payload = outbox.open_payload(self.keys, message.payload)
            outbound = OutboundMessage.from_dict(payload)
            outbound.reply = message.priority == outbox.PRIORITY_REPLY
            await channel.send(raw, outbound)
        except DeliveryError as exc:
            await self._failed(
                message, exc.reason, exc.retry_after, exc.permanent, counted=not exc.paused
            )
            return False
        except Exception as exc:  # a bug or an unexpected transport error: retry later
            log.warning("send failed on %s: %s", message.channel, exc.__class__.__name__)
            await self._failed(message, exc.__class__.__name__, None, False)
            return False
        metrics.message_sent(message.channel, started)
        if (
            message.priority == outbox.PRIORITY_REPLY
            and message.invitation_id
            and message.created_at is not None
        ):
            metrics.answer_handed_over(message.channel, message.created_at)
        return True

    async def _failed(
        self,
        message: outbox.Claimed,
        reason: str,
        retry_after: float | None,
        permanent: bool,
        counted: bool = True,
    ) -> None:
        async with self.sessions() as session:
            outcome = await outbox.mark_failed(
                session,
                message,
                reason,
                retry_after=retry_after,
                permanent=permanent,
                max_attempts=self.max_attempts,
                counted=counted,
            )
            await session.commit()
        gave_up = outcome != "retry"
        metrics.send_failed(message.channel, retry_after if counted else None, gave_up)
        log.info(
            "delivery on %s failed (%s)%s",
            message.channel,
            reason,
            {"retry": "", "dead": "; giving up", "stalled": "; stalled for an admin"}[outcome],
        )
        if gave_up and message.invitation_id:
            await self.on_undeliverable(message.invitation_id, outcome == "dead")
