"""The durable inbox: a verified channel event is a sealed row before it is acknowledged.

Why: a channel that gets its 200 never sends the event again, and Zalo may not redeliver at all
on a 5xx (``../shared/reference/zalo.md`` §2.1). So the webhook only verifies the event, writes it
here in one short transaction (``accept``) and answers 200 inside the channel's deadline;
processing happens afterwards, from this table, with retries of our own. A crash after the
acknowledgement loses nothing: the row is still pending and its lease runs out.

* **Exactly once per event id.** The row is unique per (channel, event key), so a redelivery
  finds it and is acknowledged as a duplicate; and ``done`` is written *in the transaction that
  processes the event* (the worker runs the handler under a ``Receipt``), so an event's effects and
  its "processed" mark commit together or not at all: while a handler runs, its first
  transaction that writes anything also writes ``done`` (session hooks below, fenced by the
  claim's attempt number), so a worker that was overtaken after its lease ran out fails its
  commit instead of applying the event a second time.
* **One chat at a time, in order.** Only the oldest pending event of a conversation can be
  claimed, so two workers never process one citizen's answers concurrently or out of order.
* **Claims in one statement.** ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)`` on
  PostgreSQL, the same statement under SQLite's single writer; the outer WHERE re-checks the
  lease, so a row is never claimed twice even by a worker that waited for a lock. The lease
  clock is read inside the statement, and the statement is built once with bound parameters.
  The webhook's own event is stored already leased to it (``accept_and_claim``, one statement)
  unless its conversation has a pending event, under the conversation's advisory lock.
* **Nothing readable.** The body is sealed (AES-GCM, purpose ``inbox``) and erased with the
  conversation key once processed; a processed row keeps only its event key (the replay mark)
  and hour-level times, and is purged after the redelivery windows. A dead letter (``attempts``
  exhausted) keeps its sealed body for an admin to requeue until it is purged.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    and_,
    bindparam,
    case,
    delete,
    event,
    exists,
    func,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction, aliased

from storage.backoff import backoff as retry_delay
from storage.models import InboxEvent, UTCDateTime, new_id, utcnow
from storage.outbox import lease_now_param, lease_params, leased_until_param, to_the_hour
from storage.pseudonym import KeyRing

PENDING, DONE, DEAD = "pending", "done", "dead"
LEASE = dt.timedelta(seconds=60)
MAX_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 2.0
MAX_BACKOFF_SECONDS = 600.0
BODY_PURPOSE = "inbox"


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claimed event: its body opened, ready for its channel's handler."""

    id: str
    channel: str
    body: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What an admin sees of an event that could not be processed (never its body)."""

    id: str
    channel: str
    attempts: int
    last_error: str | None
    received_hour: dt.datetime


class AlreadyProcessed(RuntimeError):
    """The event was claimed again (this worker's lease ran out) or finished elsewhere: the
    transaction that would have applied it a second time is refused."""


@dataclass(eq=False, slots=True)
class Receipt:
    """One claimed event being processed: whose first writing commit also marks it done.

    ``attempt`` is the claim's fencing token (a later claim raised it); ``task`` is the
    handler's own task, so a background task it spawns (which inherits the context) never
    marks the event with a commit of its own."""

    event_id: str
    attempt: int
    now: dt.datetime
    task: asyncio.Task[Any] | None = None
    used: bool = field(default=False)
    _staged: Session | None = field(default=None, repr=False)

    def applies_to(self, session: Session) -> bool:
        return not self.used and self._staged is None and bool(session.info.get(_WROTE))


_PROCESSING: contextvars.ContextVar[Receipt | None] = contextvars.ContextVar(
    "inbox_processing", default=None
)
_WROTE = "inbox_wrote"


def processing(receipt: Receipt) -> contextvars.Token[Receipt | None]:
    """From here on, in this task, the first writing commit marks ``receipt``'s event done."""
    receipt.task = asyncio.current_task()
    return _PROCESSING.set(receipt)


def finished(token: contextvars.Token[Receipt | None]) -> None:
    _PROCESSING.reset(token)


def _in_handler() -> Receipt | None:
    receipt = _PROCESSING.get()
    if receipt is None or receipt.task is None or asyncio.current_task() is not receipt.task:
        return None
    return receipt


@event.listens_for(Session, "do_orm_execute")
def _note_statement(state: ORMExecuteState) -> None:
    if _in_handler() is not None and (state.is_insert or state.is_update or state.is_delete):
        state.session.info[_WROTE] = True


@event.listens_for(Session, "after_flush")
def _note_flush(session: Session, _context: UOWTransaction) -> None:
    if _in_handler() is not None:
        session.info[_WROTE] = True


@event.listens_for(Session, "before_commit")
def _mark_in_the_same_transaction(session: Session) -> None:
    receipt = _in_handler()
    if receipt is None or not receipt.applies_to(session):
        return
    result = session.execute(_done_statement(receipt.event_id, receipt.now, receipt.attempt))
    if int(getattr(result, "rowcount", 0) or 0) != 1:
        raise AlreadyProcessed("the inbox event was claimed again or is already processed")
    receipt._staged = session


@event.listens_for(Session, "after_commit")
def _confirm(session: Session) -> None:
    session.info.pop(_WROTE, None)
    receipt = _PROCESSING.get()
    if receipt is not None and receipt._staged is session:
        receipt.used, receipt._staged = True, None


@event.listens_for(Session, "after_rollback")
def _unstage(session: Session) -> None:
    session.info.pop(_WROTE, None)
    receipt = _PROCESSING.get()
    if receipt is not None and receipt._staged is session:
        receipt._staged = None


def keyed(keys: KeyRing, kind: str, channel: str, value: str) -> str:
    """A platform's event id or chat id as stored: a keyed hash, so the table names no one (a
    plain hash of a chat id is reversible by enumerating ids)."""
    return keys.pseudonym("contact", f"inbox-{kind}\x1f{channel}\x1f{value}").digest


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


async def accept(
    session: AsyncSession,
    keys: KeyRing,
    *,
    channel: str,
    event_key: str,
    conversation: str,
    body: dict[str, Any],
    now: dt.datetime | None = None,
) -> str | None:
    """Store a verified event unless it is already here: its id when new, None for a
    redelivery (the caller commits). ``event_key`` and ``conversation`` are the platform's own
    values; only their keyed hashes are stored."""
    now = now or utcnow()
    event_id = new_id()
    values = {
        "id": event_id,
        "channel": channel,
        "event_key": keyed(keys, "event", channel, event_key),
        "conversation": keyed(keys, "chat", channel, conversation),
        "body_sealed": keys.seal(json.dumps(body, ensure_ascii=False), BODY_PURPOSE),
        "status": PENDING,
        "attempts": 0,
        "received_at": now,
        "available_at": now,
    }
    insert = pg_insert if _dialect(session) == "postgresql" else sqlite_insert
    statement = (
        insert(InboxEvent)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["channel", "event_key"])
    )
    result = await session.execute(statement)
    return event_id if int(result.rowcount or 0) == 1 else None  # type: ignore[attr-defined]


def _claimable(now: Any, lease_now: Any) -> Any:
    """Pending, due (by the claimant's clock), not leased (by the lease clock), and the oldest
    pending event of its conversation."""
    older = aliased(InboxEvent)
    earlier = or_(
        older.received_at < InboxEvent.received_at,
        and_(older.received_at == InboxEvent.received_at, older.id < InboxEvent.id),
    )
    return and_(
        InboxEvent.status == PENDING,
        InboxEvent.available_at <= now,
        or_(InboxEvent.leased_until.is_(None), InboxEvent.leased_until <= lease_now),
        ~exists().where(
            older.conversation == InboxEvent.conversation, older.status == PENDING, earlier
        ),
    )


@functools.cache
def _claim_statement(dialect: str, targeted: bool) -> Any:
    """The claim, built once per dialect and shape with bound parameters (``_claim_params``):
    building the aliased NOT EXISTS on every claim cost more CPU than running it
    (docs/benchmarks.md, Answer path)."""
    now = bindparam("now", type_=UTCDateTime())
    lease_now = lease_now_param(dialect)
    candidates = select(InboxEvent.id).where(_claimable(now, lease_now))
    if targeted:
        candidates = candidates.where(InboxEvent.id == bindparam("only"))
    candidates = candidates.order_by(InboxEvent.received_at).limit(bindparam("limit"))
    if dialect == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    return (
        update(InboxEvent)
        .where(
            InboxEvent.id.in_(candidates.scalar_subquery()),
            InboxEvent.status == PENDING,
            or_(InboxEvent.leased_until.is_(None), InboxEvent.leased_until <= lease_now),
        )
        .values(leased_until=leased_until_param(dialect), attempts=InboxEvent.attempts + 1)
        .returning(InboxEvent.id, InboxEvent.channel, InboxEvent.body_sealed, InboxEvent.attempts)
        .execution_options(synchronize_session=False)
    )


async def claim(
    session: AsyncSession,
    keys: KeyRing,
    *,
    limit: int = 20,
    lease: dt.timedelta = LEASE,
    now: dt.datetime | None = None,
    only: str | None = None,
) -> list[Claimed]:
    """Lease up to ``limit`` events, at most one per conversation, oldest first; commits.
    ``only`` claims that one event, if it is claimable (the webhook processing what it just
    accepted). Leases are measured on the lease clock (``outbox.lease_clock``'s: never a clock
    ahead of the database's), so a worker whose clock runs fast takes no event over early."""
    now = now or utcnow()
    dialect = _dialect(session)
    params = {**lease_params(dialect, now, lease), "limit": limit}
    if only is not None:
        params["only"] = only
    rows = (await session.execute(_claim_statement(dialect, only is not None), params)).all()
    await session.commit()
    return [
        Claimed(row.id, row.channel, _opened(keys, row.body_sealed), row.attempts)
        for row in rows
        if row.body_sealed is not None
    ]


@functools.cache
def _accept_statement(dialect: str) -> Any:
    """Store an event, leased to its claimant at once unless its conversation has a pending
    event already (that one comes first: the worker takes this one after it)."""
    waiting = (
        select(InboxEvent.id)
        .where(
            InboxEvent.conversation == bindparam("conversation"),
            InboxEvent.status == PENDING,
        )
        .limit(1)
    )
    first = ~exists(waiting)
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return (
        insert(InboxEvent)
        .values(
            id=bindparam("id"),
            channel=bindparam("channel"),
            event_key=bindparam("event_key"),
            conversation=bindparam("conversation"),
            body_sealed=bindparam("body_sealed"),
            status=PENDING,
            attempts=case((first, 1), else_=0),
            received_at=bindparam("now", type_=UTCDateTime()),
            available_at=bindparam("now", type_=UTCDateTime()),
            leased_until=case((first, leased_until_param(dialect)), else_=null()),
        )
        .on_conflict_do_nothing(index_elements=["channel", "event_key"])
        .returning(InboxEvent.attempts)
    )


def _conversation_lock_key(conversation: str) -> int:
    """A PostgreSQL advisory lock key (signed 64 bits) of a stored conversation key."""
    digest = hashlib.blake2b(conversation.encode(), digest_size=8, person=b"inbox-conv").digest()
    return int.from_bytes(digest, "big", signed=True)


async def accept_and_claim(
    session: AsyncSession,
    keys: KeyRing,
    *,
    channel: str,
    event_key: str,
    conversation: str,
    body: dict[str, Any],
    lease: dt.timedelta = LEASE,
    now: dt.datetime | None = None,
) -> tuple[str | None, Claimed | None]:
    """``accept`` and the webhook's claim of what it accepted in one statement and one
    transaction; commits. (None, None) for a redelivery; (id, None) when an earlier event of
    the conversation is still pending (the worker processes this one after it); else the
    event, leased by the caller, its attempt number the fence of its ``Receipt``.

    On PostgreSQL the conversation's advisory lock (for this transaction) is taken first, so
    two events of one chat arriving together are stored one after the other and the second
    sees the first pending: at most one event per conversation is ever leased, as with
    ``claim``. SQLite's write lock at BEGIN does the same."""
    now = now or utcnow()
    dialect = _dialect(session)
    stored = keyed(keys, "chat", channel, conversation)
    if dialect == "postgresql":
        await session.execute(
            select(func.pg_advisory_xact_lock(bindparam("key", type_=BigInteger()))),
            {"key": _conversation_lock_key(stored)},
        )
    event_id = new_id()
    params = {
        **lease_params(dialect, now, lease),
        "id": event_id,
        "channel": channel,
        "event_key": keyed(keys, "event", channel, event_key),
        "conversation": stored,
        "body_sealed": keys.seal(json.dumps(body, ensure_ascii=False), BODY_PURPOSE),
    }
    attempts = (await session.execute(_accept_statement(dialect), params)).scalar_one_or_none()
    await session.commit()
    if attempts is None:
        return None, None
    if not attempts:
        return event_id, None
    return event_id, Claimed(event_id, channel, body, attempts)


def _opened(keys: KeyRing, sealed: str) -> dict[str, Any]:
    body = json.loads(keys.open(sealed, BODY_PURPOSE))
    if not isinstance(body, dict):
        raise ValueError("a sealed inbox body is not an object")
    return body


def _done_statement(event_id: str, now: dt.datetime, attempt: int | None = None) -> Any:
    hour = to_the_hour(now)
    guard = [InboxEvent.id == event_id, InboxEvent.status == PENDING]
    if attempt is not None:
        guard.append(InboxEvent.attempts == attempt)
    return (
        update(InboxEvent)
        .where(*guard)
        .values(
            status=DONE,
            body_sealed=None,
            conversation="",
            received_at=hour,
            available_at=hour,
            leased_until=None,
            last_error=None,
        )
        .execution_options(synchronize_session=False)
    )


async def done(
    session: AsyncSession,
    event_id: str,
    *,
    now: dt.datetime | None = None,
    attempt: int | None = None,
) -> bool:
    """Processed: the body and the conversation key go, the event key stays as the replay mark.
    With ``attempt`` (the claim's), only if no later claim took the event over. True when this
    call marked it (the caller commits)."""
    result = await session.execute(_done_statement(event_id, now or utcnow(), attempt))
    return int(result.rowcount or 0) == 1  # type: ignore[attr-defined]


def backoff(attempts: int) -> dt.timedelta:
    return retry_delay(attempts, base=BACKOFF_BASE_SECONDS, cap=MAX_BACKOFF_SECONDS)


async def failed(
    session: AsyncSession,
    event_id: str,
    error: str,
    *,
    max_attempts: int = MAX_ATTEMPTS,
    now: dt.datetime | None = None,
    attempt: int | None = None,
) -> str:
    """Back off and retry later, or, past ``max_attempts``, keep it as a dead letter; commits.
    With ``attempt`` (the claim's), nothing changes when a later claim took the event over.

    Returns the event's new status (DONE when it was processed, or is no longer ours)."""
    now = now or utcnow()
    attempts = await session.scalar(
        select(InboxEvent.attempts).where(InboxEvent.id == event_id, InboxEvent.status == PENDING)
    )
    if attempts is None or (attempt is not None and attempts != attempt):
        return DONE
    status = DEAD if attempts >= max_attempts else PENDING
    await session.execute(
        update(InboxEvent)
        .where(InboxEvent.id == event_id, InboxEvent.attempts == attempts)
        .values(
            status=status,
            available_at=now + backoff(attempts) if status == PENDING else to_the_hour(now),
            leased_until=None,
            last_error=error[:255],
        )
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    return status


async def heartbeat(
    session: AsyncSession,
    event_ids: Sequence[str],
    *,
    lease: dt.timedelta = LEASE,
    now: dt.datetime | None = None,
) -> None:
    """Extend the leases of events still being processed (a slow handler is not a dead one)."""
    if not event_ids:
        return
    dialect = _dialect(session)
    await session.execute(
        update(InboxEvent)
        .where(InboxEvent.id.in_(list(event_ids)), InboxEvent.status == PENDING)
        .values(leased_until=leased_until_param(dialect))
        .execution_options(synchronize_session=False),
        lease_params(dialect, now or utcnow(), lease),
    )
    await session.commit()


async def dead_letters(session: AsyncSession, limit: int = 100) -> list[DeadLetter]:
    rows = await session.execute(
        select(InboxEvent)
        .where(InboxEvent.status == DEAD)
        .order_by(InboxEvent.available_at.desc())
        .limit(limit)
    )
    return [
        DeadLetter(row.id, row.channel, row.attempts, row.last_error, row.available_at)
        for row in rows.scalars()
    ]


async def requeue(
    session: AsyncSession, event_ids: Sequence[str] | None, *, now: dt.datetime | None = None
) -> list[str]:
    """An admin's retry of dead letters (those of ``event_ids``, or every one when None):
    pending again, attempts from zero, in one statement; commits. The channel of each event
    requeued (an id already retried, or purged, is simply not among them)."""
    now = now or utcnow()
    chosen = update(InboxEvent).where(InboxEvent.status == DEAD)
    if event_ids is not None:
        chosen = chosen.where(InboxEvent.id.in_(list(event_ids)))
    result = await session.execute(
        chosen.values(status=PENDING, attempts=0, available_at=now, leased_until=None)
        .returning(InboxEvent.channel)
        .execution_options(synchronize_session=False)
    )
    channels = list(result.scalars())
    await session.commit()
    return channels


async def pending_count(session: AsyncSession) -> int:
    """Events accepted and not yet processed (a gauge for operators)."""
    count = await session.scalar(
        select(func.count()).select_from(InboxEvent).where(InboxEvent.status == PENDING)
    )
    return int(count or 0)


async def purge(
    session: AsyncSession,
    *,
    now: dt.datetime,
    done_after: dt.timedelta,
    dead_after: dt.timedelta,
) -> int:
    """Delete processed marks past the redelivery windows and dead letters past retention."""
    result = await session.execute(
        delete(InboxEvent)
        .where(
            or_(
                and_(InboxEvent.status == DONE, InboxEvent.available_at < now - done_after),
                and_(InboxEvent.status == DEAD, InboxEvent.available_at < now - dead_after),
            )
        )
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
