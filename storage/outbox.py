"""The durable outbox: every outbound message is a row before it is a network call.

Rows are written in the same transaction as the state change that caused them, so an answer and
its acknowledgement are durable together. A claim is one statement (``WITH picked AS
MATERIALIZED (SELECT … LIMIT n FOR UPDATE SKIP LOCKED) UPDATE … WHERE id IN picked RETURNING``;
under SQLite's single writer ``IN (SELECT …)`` without the lock clause), whose outer WHERE
re-checks the row, so two dispatchers never take one message. A lane's claim walks the partial
index of unsent rows in claim order (``ix_outbox_lane_order``), probes each row's conversation
by ``ix_outbox_unsent_conversation`` and stops after its limit of heads. Only the oldest
unsent message of a conversation is eligible, so a citizen never sees question 3 before
question 2, even after a retry; a claimed message is leased, and the
lease is renewed while its send runs (``extend``), so a slow send is not taken over and sent
twice. Claims are per lane: replies inside a running conversation (``PRIORITY_REPLY``) have
their own, so a backlog of invitations never holds one up.

What a row keeps is only what delivery needs, and only while it needs it (brief invariant 6):

* the payload (questions, and acknowledgements that echo the citizen's answer) is sealed with
  AES-GCM at enqueue, so it is never readable in the database, not even before delivery;
* a survey message whose retries ran out on passing failures (``STALLED``) stays sealed, as a
  pending one does, until an admin retries it or its survey closes (``finalize`` retires it);
* once a row is retired (sent, dead or cancelled) its payload, address and conversation (the
  contact pseudonym) are erased and its times are cut to the hour it was retired: what is left
  (channel, status, attempts, dedup key, invitation id) serves de-duplication and counting only;
* retired rows of closed invitations (and replies outside any survey) are deleted ``purge``
  hours later (``SURVEYBOT_OUTBOX_RETENTION_HOURS``; the maintenance loop calls it).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Interval,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from storage.backoff import backoff
from storage.models import Invitation, OutboxMessage, SurveyLedger, UTCDateTime, new_id, utcnow
from storage.pseudonym import KeyRing
from storage.upsert import table_of

PRIORITY_REPLY = 0
PRIORITY_INVITATION = 1
LEASE = dt.timedelta(seconds=60)
BACKOFF_BASE_SECONDS = 2.0
MAX_BACKOFF_SECONDS = 300.0
#: Out of retries on passing failures (an outage): kept, sealed, for an admin's retry until its
#: invitation closes. Unsent, so the conversation's later messages still wait behind it.
STALLED = "stalled"
UNSENT = ("pending", "sending", STALLED)
RETIRED = ("sent", "dead", "cancelled")
#: The seal purpose of payloads (storage.pseudonym derives its key when a key set has none).
PAYLOAD_PURPOSE = "payload"


Outcome = Literal["retry", "dead", "stalled"]


@dataclass(frozen=True, slots=True)
class Claimed:
    id: str
    channel: str
    address_sealed: str
    #: As stored: sealed (``open_payload`` reads it).
    payload: dict[str, Any]
    attempts: int
    invitation_id: str | None
    conversation: str
    #: The lane it was claimed in, and when it was enqueued (for a reply, the moment the answer
    #: that caused it was accepted): the answer-latency metric reads both.
    priority: int = PRIORITY_INVITATION
    created_at: dt.datetime | None = None


def seal_payload(keys: KeyRing, payload: dict[str, Any]) -> dict[str, Any]:
    """The stored form of a payload: one AES-GCM token, unreadable without the keys."""
    return {"sealed": keys.seal(json.dumps(payload, ensure_ascii=False), PAYLOAD_PURPOSE)}


def open_payload(keys: KeyRing, stored: dict[str, Any]) -> dict[str, Any]:
    """The payload to send; rows written before payloads were sealed are read as they are."""
    token = stored.get("sealed")
    if not isinstance(token, str):
        return stored
    opened = json.loads(keys.open(token, PAYLOAD_PURPOSE))
    if not isinstance(opened, dict):
        raise ValueError("a sealed payload is not an object")
    return opened


def to_the_hour(at: dt.datetime) -> dt.datetime:
    """The coarse time a retired row keeps: it can count messages per hour, and cannot be
    matched against the minute an agency returned a result or a citizen answered."""
    return at.replace(minute=0, second=0, microsecond=0)


def retired(status: str, at: dt.datetime, reason: str | None = None) -> dict[str, Any]:
    """The column values of a row that will never be sent again: everything that could be
    read or linked (payload, address, contact pseudonym, exact times) is erased."""
    assert status in RETIRED
    hour = to_the_hour(at)
    values: dict[str, Any] = {
        "status": status,
        "payload": {},
        "address_sealed": None,
        "conversation": "",
        "created_at": hour,
        "available_at": hour,
        "sent_at": hour if status == "sent" else None,
    }
    if reason is not None:
        values["last_error"] = reason[:255]
    return values


def enqueue(session: AsyncSession, keys: KeyRing, **fields: Any) -> OutboxMessage:
    """Add a message to the caller's transaction (``row`` says what it holds)."""
    message = OutboxMessage(**row(keys, **fields))
    session.add(message)
    return message


def row(
    keys: KeyRing,
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
    not_before: dt.datetime | None = None,
) -> dict[str, Any]:
    """The column values of a new message; ``order`` keeps messages of one step in sequence.

    The payload is sealed here, so no caller can queue a readable one. ``not_before`` holds the
    message until then (quiet hours, ``storage.schedule``): it is stamped as created then too,
    so in its conversation it queues behind whatever is sent meanwhile (a reply is never stuck
    behind a held invitation)."""
    due = now or utcnow()
    if not_before is not None and not_before > due:
        due = not_before
    return {
        "id": new_id(),
        "dedup_key": dedup_key or new_id(),
        "channel": channel,
        "address_sealed": address_sealed,
        "conversation": conversation,
        "payload": seal_payload(keys, payload),
        "priority": priority,
        "invitation_id": invitation_id,
        "created_at": due + dt.timedelta(microseconds=order),
        "available_at": due,
    }


async def enqueue_rows(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Write many ``row``s at once, in the caller's transaction (a batch's invitations: one
    multi-row INSERT instead of an ORM object and a unit-of-work entry per message)."""
    if rows:
        await session.execute(insert(table_of(OutboxMessage)), list(rows))


async def enqueue_once(session: AsyncSession, keys: KeyRing, **kwargs: Any) -> bool:
    """Enqueue unless a message with the same dedup key exists; True when added."""
    async with session.begin_nested():
        try:
            enqueue(session, keys, **kwargs)
            await session.flush()
        except IntegrityError:
            return False
    return True


async def lease_clock(session: AsyncSession, now: dt.datetime) -> dt.datetime:
    """The time leases are measured by: the database's clock, or the claimant's when that is
    behind it. A claimant's clock that runs ahead would see another process's lease lapse
    early and take a message (or an inbox event) over while it is still being sent; one that
    is behind only sees leases lapse late, and the others take over. SQLite has no clock of its
    own: the processes sharing its file share the machine's."""
    if session.get_bind().dialect.name == "postgresql":
        database = await session.scalar(select(func.now()))
        if isinstance(database, dt.datetime):
            return min(now, database)
    return min(now, utcnow())


def lease_now_param(dialect: str) -> Any:
    """The lease clock as a statement reads it: on PostgreSQL ``least(:now, now())`` inside the
    statement (``now()`` is the transaction's start, the value ``lease_clock``'s separate
    ``SELECT now()`` read, one round trip fewer per claim); SQLite has no clock of its own, so
    the caller binds ``lease_now`` (``min`` of its clock and the machine's)."""
    if dialect == "postgresql":
        return func.least(bindparam("now", type_=UTCDateTime()), func.now())
    return bindparam("lease_now", type_=UTCDateTime())


def leased_until_param(dialect: str) -> Any:
    if dialect == "postgresql":
        return lease_now_param(dialect) + bindparam("lease", type_=Interval())
    return bindparam("leased_until", type_=UTCDateTime())


def lease_params(dialect: str, now: dt.datetime, lease: dt.timedelta) -> dict[str, Any]:
    """The bound values of the lease clock: the claimant's clock, and on SQLite the lease
    clock itself (never ahead of the machine's)."""
    if dialect == "postgresql":
        return {"now": now, "lease": lease}
    lease_now = min(now, utcnow())
    return {"now": now, "lease_now": lease_now, "leased_until": lease_now + lease}


def _due(
    now: dt.datetime | ColumnElement[Any], lease_now: dt.datetime | ColumnElement[Any]
) -> ColumnElement[bool]:
    """Unsent and due: a pending message by the claimant's clock (a retry's backoff, the end
    of quiet hours), a message being sent once its lease ran out by the lease clock."""
    return or_(
        and_(OutboxMessage.status == "pending", OutboxMessage.available_at <= now),
        and_(OutboxMessage.status == "sending", OutboxMessage.available_at <= lease_now),
    )


def _heads(
    now: dt.datetime | ColumnElement[Any], lease_now: dt.datetime | ColumnElement[Any]
) -> ColumnElement[bool]:
    """Due, sendable, not leased, and the oldest unsent message of its conversation."""
    older = aliased(OutboxMessage)
    earlier = or_(
        older.created_at < OutboxMessage.created_at,
        and_(older.created_at == OutboxMessage.created_at, older.id < OutboxMessage.id),
    )
    return and_(
        _due(now, lease_now),
        OutboxMessage.address_sealed.is_not(None),
        ~exists().where(
            older.conversation == OutboxMessage.conversation,
            older.status.in_(UNSENT),
            earlier,
        ),
    )


@functools.cache
def _claim_statement(dialect: str, by_lane: bool, by_conversations: bool) -> Any:
    """The claim, built once per dialect and shape with bound parameters (``claim``): building
    the aliased NOT EXISTS of ``_heads`` on every claim cost more of the dispatcher's CPU than
    running it (py-spy, docs/benchmarks.md: 8 % of the answer path's samples)."""
    now = bindparam("now", type_=UTCDateTime())
    lease_now = lease_now_param(dialect)
    candidates = select(OutboxMessage.id).where(_heads(now, lease_now))
    if by_lane:
        candidates = candidates.where(OutboxMessage.priority == bindparam("lane"))
    if by_conversations:
        candidates = candidates.where(
            OutboxMessage.conversation.in_(bindparam("conversations", expanding=True))
        )
    candidates = candidates.order_by(OutboxMessage.priority, OutboxMessage.created_at).limit(
        bindparam("limit")
    )
    chosen: ColumnElement[bool]
    if dialect == "postgresql":
        # Materialised: the candidates are chosen once. As a plain ``IN (subquery)`` the
        # planner may put it on the inner side of a nested loop and run it again per row;
        # each run re-reads the rows it already leased (not due any more) and takes the next
        # ones, so a claim of 10 took every head (tests/test_outbox_heads.py).
        picked = (
            candidates.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
        )
        chosen = OutboxMessage.id.in_(select(picked.c.id).scalar_subquery())
    else:
        chosen = OutboxMessage.id.in_(candidates.scalar_subquery())
    return (
        update(OutboxMessage)
        .where(chosen, _due(now, lease_now))
        .values(
            status="sending",
            available_at=leased_until_param(dialect),
            attempts=OutboxMessage.attempts + 1,
        )
        .returning(
            OutboxMessage.id,
            OutboxMessage.channel,
            OutboxMessage.address_sealed,
            OutboxMessage.payload,
            OutboxMessage.attempts,
            OutboxMessage.invitation_id,
            OutboxMessage.conversation,
            OutboxMessage.priority,
            OutboxMessage.created_at,
        )
        .execution_options(synchronize_session=False)
    )


async def claim(
    session: AsyncSession,
    limit: int,
    now: dt.datetime | None = None,
    *,
    lane: int | None = None,
    conversations: Sequence[str] | None = None,
    lease: dt.timedelta = LEASE,
) -> list[Claimed]:
    """Lease up to ``limit`` conversation heads, oldest first, in one statement; commits.

    ``lane`` takes only heads of that priority (replies, or invitations and reminders): each
    lane has its own dispatcher slots. ``conversations`` takes those conversations' heads (the
    next message of a conversation just sent to goes out at once instead of waiting for the
    next round).

    ``now`` says what is due; leases are measured by ``lease_clock`` (never a clock ahead of
    the database's), so a process whose clock runs fast takes no message over early."""
    now = now or utcnow()
    dialect = session.get_bind().dialect.name
    params: dict[str, Any] = {**lease_params(dialect, now, lease), "limit": limit}
    if lane is not None:
        params["lane"] = lane
    if conversations is not None:
        params["conversations"] = list(conversations)
    statement = _claim_statement(dialect, lane is not None, conversations is not None)
    rows = (await session.execute(statement, params)).all()
    await session.commit()
    rows = sorted(rows, key=lambda row: (row.priority, row.created_at))
    return [
        Claimed(
            row.id,
            row.channel,
            row.address_sealed,
            row.payload,
            row.attempts,
            row.invitation_id,
            row.conversation,
            row.priority,
            row.created_at,
        )
        for row in rows
    ]


async def sent_then_next(
    session: AsyncSession,
    messages: Sequence[Claimed],
    now: dt.datetime | None = None,
    *,
    delivered: Sequence[str] = (),
    lease: dt.timedelta = LEASE,
) -> dict[str, Claimed]:
    """Mark ``messages`` sent, record the invitations in ``delivered`` as delivered, and lease
    each of their conversations' next message, if due: one transaction for a group of sends
    (three statements whatever its size, where one send at a time cost a transaction for its
    mark and another for its delivery); commits. The followers, by conversation.

    "Delivered" is a flag that only ever goes up, so it needs no lock on its invitation: a
    survey closing at the same moment updates the same ledger row after or before, never
    against it."""
    if not messages:
        return {}
    now = now or utcnow()
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_([m.id for m in messages]))
        .values(**retired("sent", now), last_error=None)
        .execution_options(synchronize_session=False)
    )
    if delivered:
        await session.execute(
            update(SurveyLedger)
            .where(
                SurveyLedger.id.in_(
                    select(Invitation.ledger_id).where(Invitation.id.in_(list(delivered)))
                ),
                SurveyLedger.delivered.is_(False),
            )
            .values(delivered=True)
            .execution_options(synchronize_session=False)
        )
    conversations = sorted({m.conversation for m in messages})
    following = await claim(
        session, len(conversations), now, conversations=conversations, lease=lease
    )
    return {m.conversation: m for m in following}


async def extend(
    session: AsyncSession,
    message_ids: Sequence[str],
    *,
    lease: dt.timedelta = LEASE,
    now: dt.datetime | None = None,
) -> None:
    """Renew the leases of messages whose send is still running; commits."""
    if not message_ids:
        return
    lease_now = await lease_clock(session, now or utcnow())
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(list(message_ids)), OutboxMessage.status == "sending")
        .values(available_at=lease_now + lease)
        .execution_options(synchronize_session=False)
    )
    await session.commit()


async def release(session: AsyncSession, message: Claimed) -> None:
    """Un-claim a message without counting the attempt: it is due again at once."""
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message.id, OutboxMessage.status == "sending")
        .values(status="pending", available_at=utcnow(), attempts=message.attempts - 1)
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
) -> Outcome:
    """Schedule a retry with exponential backoff, or give up: ``"retry"``, ``"dead"`` (refused
    for good: retired and erased at once) or ``"stalled"`` (a survey message out of retries on
    passing failures: kept sealed, for an admin to retry once the outage is over).

    ``counted=False`` (the channel is paused as a whole) gives the attempt back: a pause of any
    length never exhausts ``max_attempts``."""
    now = now or utcnow()
    exhausted = counted and message.attempts >= max_attempts
    if exhausted and not permanent and message.invitation_id is not None:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message.id)
            .values(status=STALLED, available_at=now, last_error=reason[:255])
        )
        return "stalled"
    dead = permanent or exhausted
    delay = (
        retry_after
        if retry_after is not None
        else backoff(
            message.attempts, base=BACKOFF_BASE_SECONDS, cap=MAX_BACKOFF_SECONDS
        ).total_seconds()
    )
    values: dict[str, Any] = {"last_error": reason[:255]}
    if dead:
        values.update(retired("dead", now))
        if permanent:
            # The address refuses for good (blocked bot): drop the rest of that conversation
            # too, rather than retrying each later message into the same wall.
            await retire_unsent(
                session,
                OutboxMessage.conversation == message.conversation,
                OutboxMessage.id != message.id,
                status="cancelled",
                reason="address refused",
                now=now,
            )
    else:
        values.update(status="pending", available_at=now + dt.timedelta(seconds=delay))
        if not counted:
            values.update(attempts=max(0, message.attempts - 1))
    await session.execute(
        update(OutboxMessage).where(OutboxMessage.id == message.id).values(**values)
    )
    return "dead" if dead else "retry"


async def retire_unsent(
    session: AsyncSession,
    *conditions: ColumnElement[bool],
    status: str,
    reason: str,
    now: dt.datetime | None = None,
) -> None:
    """Give up on the unsent messages that match ``conditions``: they will never go out, so
    their payload and address are erased now rather than at delivery."""
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.status.in_(UNSENT), *conditions)
        .values(**retired(status, now or utcnow(), reason))
        .execution_options(synchronize_session=False)
    )


async def erase_conversation(
    session: AsyncSession, conversations: Sequence[str], invitation_ids: Sequence[str]
) -> int:
    """Delete every row, sent or not, of these conversations (contact pseudonyms) or
    invitations: a citizen's erasure. Returns how many rows went."""
    if not conversations and not invitation_ids:
        return 0
    result = await session.execute(
        delete(OutboxMessage)
        .where(
            or_(
                OutboxMessage.conversation.in_(list(conversations)),
                OutboxMessage.invitation_id.in_(list(invitation_ids)),
            )
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def purge(session: AsyncSession, before: dt.datetime) -> int:
    """Delete rows retired before ``before`` that no open invitation still needs.

    An open invitation keeps its rows: their dedup keys stop a second start or reminder of the
    same survey. Once it closes (or for a reply outside any survey) nothing needs them."""
    result = await session.execute(
        delete(OutboxMessage)
        .where(
            OutboxMessage.status.in_(RETIRED),
            OutboxMessage.available_at < before,
            or_(
                OutboxMessage.invitation_id.is_(None),
                OutboxMessage.invitation_id.not_in(select(Invitation.id)),
            ),
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class DeadSummary:
    """Dead messages of one channel, reason and hour: all a retired row still says."""

    channel: str
    reason: str | None
    hour: dt.datetime
    count: int


async def dead_summary(session: AsyncSession, limit: int = 100) -> list[DeadSummary]:
    """The outbox's dead letters, counted per channel, reason and hour, newest first.

    There is nothing to retry here: a dead message's address and payload are erased when it is
    retired, and its invitation has already fallen back to another channel or closed."""
    rows = await session.execute(
        select(
            OutboxMessage.channel,
            OutboxMessage.last_error,
            OutboxMessage.available_at,
            func.count(),
        )
        .where(OutboxMessage.status == "dead")
        .group_by(OutboxMessage.channel, OutboxMessage.last_error, OutboxMessage.available_at)
        .order_by(OutboxMessage.available_at.desc(), OutboxMessage.channel)
        .limit(limit)
    )
    return [DeadSummary(channel, reason, hour, int(n)) for channel, reason, hour, n in rows]


@dataclass(frozen=True, slots=True)
class Stalled:
    """What an admin sees of a stalled message: never its address or payload."""

    id: str
    channel: str
    attempts: int
    reason: str | None
    hour: dt.datetime


async def stalled(session: AsyncSession, limit: int = 200) -> list[Stalled]:
    rows = await session.execute(
        select(OutboxMessage)
        .where(OutboxMessage.status == STALLED)
        .order_by(OutboxMessage.available_at.desc())
        .limit(limit)
    )
    return [
        Stalled(m.id, m.channel, m.attempts, m.last_error, to_the_hour(m.available_at))
        for m in rows.scalars()
    ]


async def retry_stalled(
    session: AsyncSession, message_ids: Sequence[str] | None, now: dt.datetime | None = None
) -> int:
    """An admin's retry: the stalled messages (all of them with ``None``) go back to the queue
    with their attempts from zero. A message whose survey closed meanwhile is no longer stalled
    (``finalize`` retired it) and is not revived. The caller commits."""
    conditions = [OutboxMessage.status == STALLED]
    if message_ids is not None:
        conditions.append(OutboxMessage.id.in_(list(message_ids)))
    result = await session.execute(
        update(OutboxMessage)
        .where(*conditions)
        .values(status="pending", attempts=0, available_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
