"""The dispatcher: drains the outbox to the channels, at least once, in order per conversation.

A message is claimed, sent, then marked sent; a crash between send and mark means a resend after
the lease, which channels deduplicate where they can (at-least-once). Failures back off
exponentially or by the channel's ``retry_after``; a permanent refusal closes the invitation as
undeliverable instead of retrying forever.

Addresses and payloads are sealed in the outbox; they are opened here, in memory, just before the
send, and the row forgets both once it is marked sent (``outbox.mark_sent``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping

from bot.channels import Channel, DeliveryError, OutboundMessage
from storage import outbox
from storage.db import Sessions
from storage.models import utcnow
from storage.pseudonym import KeyRing

log = logging.getLogger(__name__)
#: How many messages of one conversation a task sends back to back before yielding its slot.
FOLLOW_ON_LIMIT = 10


class Dispatcher:
    def __init__(
        self,
        sessions: Sessions,
        keyring: KeyRing,
        channels: Mapping[str, Channel],
        *,
        max_attempts: int,
        interval: float,
        on_undeliverable: Callable[[str], Awaitable[None]],
        on_delivered: Callable[[str], Awaitable[None]],
        batch_size: int = 50,
        concurrency: int = 16,
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
        #: What "due" means when claiming (a message held for the end of quiet hours waits
        #: for it); the real clock, which tests move.
        self.clock = clock
        self._semaphore = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()

    def kick(self) -> None:
        """Wake the loop now: a citizen waiting for the next question should not wait a tick."""
        self._wake.set()

    async def run_once(self) -> int:
        async with self.sessions() as session:
            claimed = await outbox.claim(session, self.batch_size, now=self.clock())
        results = await asyncio.gather(*(self._deliver(m) for m in claimed))
        return sum(results)

    async def drain(self, rounds: int = 100) -> None:
        """Send until nothing is ready (tests and the CLI use this instead of the loop)."""
        for _ in range(rounds):
            if not await self.run_once():
                return

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                sent = await self.run_once()
            except Exception:
                log.exception("dispatcher round failed; retrying")
                sent = 0
            if sent:
                continue
            self._wake.clear()
            try:
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _deliver(self, message: outbox.Claimed) -> int:
        """Send a conversation's head, then its next due messages, in order, in one task."""
        sent = 0
        async with self._semaphore:
            current: outbox.Claimed | None = message
            while current is not None and sent < FOLLOW_ON_LIMIT:
                if not await self._deliver_one(current):
                    break
                sent += 1
                async with self.sessions() as session:
                    current = await outbox.claim_next(
                        session, current.conversation, now=self.clock()
                    )
            if current is not None and sent >= FOLLOW_ON_LIMIT:
                await self._release(current)
        return sent

    async def _release(self, message: outbox.Claimed) -> None:
        """Give back a claimed message this task will not send (fairness cap reached)."""
        async with self.sessions() as session:
            await outbox.release(session, message)
            await session.commit()

    async def _deliver_one(self, message: outbox.Claimed) -> bool:
        channel = self.channels.get(message.channel)
        try:
            if channel is None:
                raise DeliveryError(f"channel {message.channel!r} is not configured")
            address = self.keys.open(message.address_sealed)
            raw = address.split(":", 1)[1]
            payload = outbox.open_payload(self.keys, message.payload)
            await channel.send(raw, OutboundMessage.from_dict(payload))
        except DeliveryError as exc:
            await self._failed(
                message, exc.reason, exc.retry_after, exc.permanent, counted=not exc.paused
            )
            return False
        except Exception as exc:  # a bug or an unexpected transport error: retry later
            log.warning("send failed on %s: %s", message.channel, exc.__class__.__name__)
            await self._failed(message, exc.__class__.__name__, None, False)
            return False
        async with self.sessions() as session:
            await outbox.mark_sent(session, message.id)
            await session.commit()
        if message.invitation_id:
            await self.on_delivered(message.invitation_id)
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
            dead = await outbox.mark_failed(
                session,
                message,
                reason,
                retry_after=retry_after,
                permanent=permanent,
                max_attempts=self.max_attempts,
                counted=counted,
            )
            await session.commit()
        log.info(
            "delivery on %s failed (%s)%s", message.channel, reason, "; giving up" if dead else ""
        )
        if dead and message.invitation_id:
            await self.on_undeliverable(message.invitation_id)
