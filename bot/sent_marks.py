"""Group commit of "sent" marks: the sends that finish while one mark is being written share
the next transaction, instead of paying one each.

A dispatcher runs dozens of sends at once; each, once the channel accepted it, must be marked
sent, its invitation recorded as delivered and its conversation's next message leased before
that task can go on. Written one at a time, that was a transaction per message (and another,
under the invitation's lock, per delivery): the database round trips, not the channel, set the
rate (docs/benchmarks.md, dispatch). Here a mark joins a queue; one writer at a time takes
everything queued (up to ``max_batch``) into ``outbox.sent_then_next``, so a quiet dispatcher
writes each mark at once and a busy one writes tens per transaction, with no timer and no
added wait.

A mark that is lost with its process (a crash before the write) is a send that looks unsent:
its lease lapses and it goes out again, which is the at-least-once the outbox already keeps.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from storage import outbox
from storage.db import Sessions

#: At most this many marks in one transaction (the statements' IN lists stay small).
MAX_BATCH = 200


@dataclass(slots=True)
class _Mark:
    message: outbox.Claimed
    delivered: bool
    done: asyncio.Future[outbox.Claimed | None]


class SentMarks:
    def __init__(
        self,
        sessions: Sessions,
        *,
        clock: Callable[[], dt.datetime],
        lease: dt.timedelta,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.lease = lease
        self.max_batch = max_batch
        self._queue: list[_Mark] = []
        self._writer: asyncio.Task[None] | None = None

    async def sent(self, message: outbox.Claimed, *, delivered: bool) -> outbox.Claimed | None:
        """Mark ``message`` sent (and its invitation delivered): its conversation's next
        message, leased to the caller, once the mark is committed. Raises what the write
        raised (the database is down: the message stays leased, and is sent again later)."""
        done: asyncio.Future[outbox.Claimed | None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Mark(message, delivered, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all())
        return await done

    async def _write_all(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            try:
                async with self.sessions() as session:
                    following = await outbox.sent_then_next(
                        session,
                        [mark.message for mark in batch],
                        self.clock(),
                        delivered=sorted(
                            {
                                mark.message.invitation_id
                                for mark in batch
                                if mark.delivered and mark.message.invitation_id
                            }
                        ),
                        lease=self.lease,
                    )
            except Exception as exc:
                for mark in batch:
                    if not mark.done.done():
                        mark.done.set_exception(exc)
                continue
            for mark in batch:
                if not mark.done.done():
                    mark.done.set_result(following.get(mark.message.conversation))
