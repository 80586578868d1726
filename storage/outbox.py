"""The durable outbox: every outbound message is a row before it is a network call.

Rows are written in the same transaction as the state change that caused them, so an answer and
its acknowledgement are durable together. Claiming is optimistic (a conditional UPDATE whose row
count says who won), which works the same on SQLite and on several PostgreSQL clients. Only the
oldest unsent message of a conversation is eligible, so a citizen never sees question 3 before
question 2, even after a retry.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import OutboxMessage, new_id, utcnow

PRIORITY_REPLY = 0
PRIORITY_INVITATION = 1
LEASE = dt.timedelta(seconds=60)
MAX_BACKOFF_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class Claimed:
    id: str
    channel: str
    address_sealed: str
    payload: dict[str, Any]
    attempts: int
    invitation_id: str | None
    conversation: str


def enqueue(
    session: AsyncSession,
    *,
    channel: str,
    address_sealed: str,
    conversation: str,
    payload: dict[str, Any],
    priority: int,
    dedup_key: str | None = None,
    invitation_id: str | None = None,
    order: int = 0,
    now: dt.datetime | None = None,
) -> OutboxMessage:
    """Add a message to the caller's transaction; ``order`` keeps messages of one step in sequence."""
    created = (now or utcnow()) + dt.timedelta(microseconds=order)
    row = OutboxMessage(
        id=new_id(),
        dedup_key=dedup_key or new_id(),
        channel=channel,
        address_sealed=address_sealed,
        conversation=conversation,
        payload=payload,
        priority=priority,
        invitation_id=invitation_id,
        created_at=created,
        available_at=created,
    )
    session.add(row)
    return row


async def enqueue_once(session: AsyncSession, **kwargs: Any) -> bool:
    """Enqueue unless a message with the same dedup key exists; True when added."""
    async with session.begin_nested():
        try:
            enqueue(session, **kwargs)
            await session.flush()
        except IntegrityError:
            return False
    return True


async def claim(session: AsyncSession, limit: int, now: dt.datetime | None = None) -> list[Claimed]:
    """Claim up to ``limit`` messages: the head of each conversation, replies first.

    Priority picks *which conversations* go first (a citizen mid-survey before a backlog of new
    invitations); inside a conversation the oldest message always goes first, whatever its
    priority, so a reminder and a reply can never swap places.
    """
    now = now or utcnow()
    unsent = OutboxMessage.status.in_(("pending", "sending"))
    order: dict[str, int] = {}
    for conversation in (
        await session.execute(
            select(OutboxMessage.conversation)
            .where(unsent)
            .order_by(OutboxMessage.priority, OutboxMessage.created_at)
            .limit(limit * 20)
        )
    ).scalars():
        order.setdefault(conversation, len(order))
    heads: dict[str, OutboxMessage] = {}
    if order:
        rows = (
            await session.execute(
                select(OutboxMessage)
                .where(unsent, OutboxMessage.conversation.in_(list(order)))
                .order_by(OutboxMessage.created_at)
            )
        ).scalars()
        for row in rows:
            heads.setdefault(row.conversation, row)
    ranked = sorted(heads.values(), key=lambda row: order[row.conversation])
    claimed: list[Claimed] = []
    for row in ranked:
        if len(claimed) >= limit:
            break
        taken = await _take(session, row, now)
        if taken is not None:
            claimed.append(taken)
    await session.commit()
    return claimed


async def claim_next(
    session: AsyncSession, conversation: str, now: dt.datetime | None = None
) -> Claimed | None:
    """The conversation's next message, if it is due: a reply's second message (the next
    question after an acknowledgement) goes out at once instead of waiting for the next round."""
    now = now or utcnow()
    row = (
        await session.execute(
            select(OutboxMessage)
            .where(
                OutboxMessage.conversation == conversation,
                OutboxMessage.status.in_(("pending", "sending")),
            )
            .order_by(OutboxMessage.created_at)
            .limit(1)
        )
    ).scalar_one_or_none()
    taken = await _take(session, row, now) if row is not None else None
    await session.commit()
    return taken


async def _take(session: AsyncSession, row: OutboxMessage, now: dt.datetime) -> Claimed | None:
    """Claim one row if it is due and nobody else took it (the conditional UPDATE decides)."""
    if row.available_at > now or row.address_sealed is None:
        return None
    result = await session.execute(
        update(OutboxMessage)
        .where(
            and_(
                OutboxMessage.id == row.id,
                OutboxMessage.status == row.status,
                OutboxMessage.attempts == row.attempts,
            )
        )
        .values(status="sending", available_at=now + LEASE, attempts=row.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return Claimed(
        row.id,
        row.channel,
        row.address_sealed,
        row.payload,
        row.attempts + 1,
        row.invitation_id,
        row.conversation,
    )


async def release(session: AsyncSession, message: Claimed) -> None:
    """Un-claim a message without counting the attempt: it is due again at once."""
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message.id, OutboxMessage.status == "sending")
        .values(status="pending", available_at=utcnow(), attempts=message.attempts - 1)
    )


async def mark_sent(session: AsyncSession, message_id: str, now: dt.datetime | None = None) -> None:
    """Sent: the sealed address is erased at once, it is no longer needed."""
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id)
        .values(status="sent", address_sealed=None, sent_at=now or utcnow(), last_error=None)
    )


async def mark_failed(
    session: AsyncSession,
    message: Claimed,
    reason: str,
    *,
    retry_after: float | None,
    permanent: bool,
    max_attempts: int,
    now: dt.datetime | None = None,
    counted: bool = True,
) -> bool:
    """Schedule a retry with exponential backoff, or give up; True when the message is dead.

    ``counted=False`` (the channel is paused as a whole) gives the attempt back: a pause of any
    length never exhausts ``max_attempts``."""
    now = now or utcnow()
    dead = permanent or (counted and message.attempts >= max_attempts)
    delay = (
        retry_after if retry_after is not None else min(2.0**message.attempts, MAX_BACKOFF_SECONDS)
    )
    values: dict[str, Any] = {"last_error": reason[:255]}
    if dead:
        values.update(status="dead", address_sealed=None)
        if permanent:
            # The address refuses for good (blocked bot): drop the rest of that conversation
            # too, rather than retrying each later message into the same wall.
            await session.execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.conversation == message.conversation,
                    OutboxMessage.status.in_(("pending", "sending")),
                    OutboxMessage.id != message.id,
                )
                .values(status="cancelled", address_sealed=None, last_error="address refused")
            )
    else:
        values.update(status="pending", available_at=now + dt.timedelta(seconds=delay))
        if not counted:
            values.update(attempts=max(0, message.attempts - 1))
    await session.execute(
        update(OutboxMessage).where(OutboxMessage.id == message.id).values(**values)
    )
    return dead
