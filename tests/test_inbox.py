"""The durable inbox (issue 15, item 1): accepted once, sealed, claimed once, processed once.

Every test runs on SQLite and PostgreSQL. The race test runs its claimers at the same time over
separate connections; it fails when the claim's guards (``FOR UPDATE SKIP LOCKED`` and the outer
lease re-check) are removed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import String, func, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage import inbox
from storage.db import Sessions, make_engine, make_sessions
from storage.inbox_worker import LATER, InboxWorker
from storage.migrate import upgrade_async
from storage.models import InboxEvent, utcnow
from storage.pseudonym import KeyRing

T0 = dt.datetime(2026, 12, 2, 8, 0, tzinfo=dt.UTC)


class Effects(DeclarativeBase):
    """A table of this test's own: what a handler "did", one row per application."""


class Effect(Effects):
    __tablename__ = "inbox_test_effect"
    key: Mapped[str] = mapped_column(String(80), primary_key=True)


@pytest.fixture
async def sessions(database_url: str, tmp_path: Path) -> AsyncIterator[Sessions]:
    await upgrade_async(database_url)
    engine = make_engine(database_url)
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # the session's shared database: start empty
            await conn.execute(text("TRUNCATE inbox_event"))
        await conn.run_sync(Effects.metadata.drop_all)
        await conn.run_sync(Effects.metadata.create_all)
    yield make_sessions(engine)
    async with engine.begin() as conn:
        await conn.run_sync(Effects.metadata.drop_all)
    await engine.dispose()


async def put(
    sessions: Sessions, keyring: KeyRing, key: str, conversation: str, at: dt.datetime = T0,
    **body: Any,
) -> bool:  # fmt: skip
    async with sessions() as session:
        new = await inbox.accept(
            session, keyring, channel="zalo_oa", event_key=key, conversation=conversation,
            body={"key": key, **body}, now=at,
        )  # fmt: skip
        await session.commit()
    return new is not None


async def claim(sessions: Sessions, keyring: KeyRing, at: dt.datetime = T0, **kw: Any) -> list[str]:
    async with sessions() as session:
        return [c.body["key"] for c in await inbox.claim(session, keyring, now=at, **kw)]


async def mark_done(sessions: Sessions, keyring: KeyRing, key: str) -> None:
    async with sessions() as session:
        hashed = inbox.keyed(keyring, "event", "zalo_oa", key)
        event_id = await session.scalar(select(InboxEvent.id).where(InboxEvent.event_key == hashed))
        assert event_id is not None
        await inbox.done(session, event_id, now=T0)
        await session.commit()


async def test_an_event_is_accepted_once_and_stored_sealed(
    sessions: Sessions, keyring: KeyRing
) -> None:
    assert await put(sessions, keyring, "m-1", "c1", text="Rất hài lòng", chat="8841234567")
    assert not await put(sessions, keyring, "m-1", "c1", text="Rất hài lòng", chat="8841234567")
    async with sessions() as session:
        rows = (await session.execute(text("SELECT * FROM inbox_event"))).all()
    assert len(rows) == 1
    stored = " ".join(str(value) for value in rows[0])
    assert "hài lòng" not in stored and "8841234567" not in stored  # sealed, not readable
    assert "m-1" not in stored and "c1" not in stored.split()  # event and chat ids keyed
    assert await claim(sessions, keyring) == ["m-1"]  # and it opens with the keys


async def test_one_conversation_is_processed_one_event_at_a_time_in_order(
    sessions: Sessions, keyring: KeyRing
) -> None:
    second = T0 + dt.timedelta(seconds=1)
    await put(sessions, keyring, "a1", "A")
    await put(sessions, keyring, "a2", "A", at=second)
    await put(sessions, keyring, "b1", "B", at=second)
    assert sorted(await claim(sessions, keyring, at=second)) == ["a1", "b1"]
    assert await claim(sessions, keyring, at=second) == []  # a2 waits behind the leased a1
    await mark_done(sessions, keyring, "a1")
    assert await claim(sessions, keyring, at=second) == ["a2"]


async def test_a_lease_that_runs_out_is_taken_over(sessions: Sessions, keyring: KeyRing) -> None:
    """The worker died after claiming: once its lease is over another worker takes the event."""
    await put(sessions, keyring, "m-1", "c1")
    lease = dt.timedelta(seconds=60)
    assert await claim(sessions, keyring, lease=lease) == ["m-1"]
    assert await claim(sessions, keyring, at=T0 + dt.timedelta(seconds=59), lease=lease) == []
    async with sessions() as session:
        taken = await inbox.claim(session, keyring, now=T0 + lease, lease=lease)
    assert [(c.body["key"], c.attempts) for c in taken] == [("m-1", 2)]


async def test_failures_back_off_then_dead_letter_then_an_admin_requeues(
    sessions: Sessions, keyring: KeyRing
) -> None:
    await put(sessions, keyring, "m-1", "c1")
    now = T0
    for attempt in range(1, 4):
        async with sessions() as session:
            [event] = await inbox.claim(session, keyring, now=now)
            assert event.attempts == attempt
            status = await inbox.failed(session, event.id, "boom", max_attempts=3, now=now)
        assert status == (inbox.DEAD if attempt == 3 else inbox.PENDING)
        if status == inbox.PENDING:
            async with sessions() as session:
                due = await session.scalar(select(InboxEvent.available_at))
            assert due is not None and due > now  # backed off
            assert await claim(sessions, keyring, at=now) == []
            now = due
    assert await claim(sessions, keyring, at=now + dt.timedelta(days=1)) == []
    async with sessions() as session:
        [dead] = await inbox.dead_letters(session)
        assert (dead.attempts, dead.last_error) == (3, "boom")
        assert await inbox.requeue(session, [dead.id], now=now) == [dead.channel]
    assert await claim(sessions, keyring, at=now) == ["m-1"]


def test_backoff_grows_and_is_jittered() -> None:
    steps = [inbox.backoff(n).total_seconds() for n in range(1, 12)]
    assert all(1.0 <= s <= 2.0 for s in steps[:1])
    assert steps[5] >= 32 and max(steps) <= inbox.MAX_BACKOFF_SECONDS
    assert len({inbox.backoff(4) for _ in range(20)}) > 1


async def test_a_processed_event_keeps_only_its_replay_mark_until_purged(
    sessions: Sessions, keyring: KeyRing
) -> None:
    await put(sessions, keyring, "m-1", "c1", text="Tốt")
    await claim(sessions, keyring)
    await mark_done(sessions, keyring, "m-1")
    async with sessions() as session:
        row = await session.scalar(select(InboxEvent))
        assert row is not None
        assert (row.body_sealed, row.conversation, row.received_at.minute) == (None, "", 0)
    assert not await put(sessions, keyring, "m-1", "c1", text="Tốt")  # a replay: refused
    async with sessions() as session:
        window = dt.timedelta(hours=9)
        kept = await inbox.purge(session, now=T0 + window, done_after=window, dead_after=window)
        gone = await inbox.purge(session, now=T0 + 2 * window, done_after=window, dead_after=window)
        await session.commit()
        assert (kept, gone) == (0, 1)


async def test_claimers_at_the_same_time_never_share_an_event_or_a_conversation(
    database_url: str, sessions: Sessions, keyring: KeyRing
) -> None:
    """Six claimers over their own connections, at once, drain 240 events of 40 conversations."""
    for n in range(240):
        at = T0 + dt.timedelta(milliseconds=n)
        await put(sessions, keyring, f"e{n:03d}", f"c{n % 40:02d}", at=at, n=n)
    taken: list[tuple[int, str, int]] = []  # (claimer, key, n)
    holding: dict[str, int] = {}
    overlaps: list[str] = []
    engines = [make_engine(database_url) for _ in range(6)]

    async def claimer(index: int) -> None:
        own = make_sessions(engines[index])
        idle = 0
        while idle < 3:
            async with own() as session:
                batch = await inbox.claim(session, keyring, limit=4, now=T0 + dt.timedelta(1))
            idle = 0 if batch else idle + 1
            for event in batch:
                conversation = f"c{event.body['n'] % 40:02d}"
                if conversation in holding:
                    overlaps.append(conversation)
                holding[conversation] = index
                taken.append((index, event.body["key"], event.body["n"]))
            await asyncio.sleep(0)  # let the others claim while this batch is held
            for event in batch:
                holding.pop(f"c{event.body['n'] % 40:02d}", None)
                async with own() as session:
                    await inbox.done(session, event.id, now=T0)
                    await session.commit()

    try:
        await asyncio.gather(*(claimer(i) for i in range(6)))
    finally:
        for engine in engines:
            await engine.dispose()
    keys = [key for _, key, _ in taken]
    assert len(keys) == len(set(keys)) == 240, "an event was claimed twice or lost"
    assert not overlaps, "two events of one conversation were held at once"
    per_conversation: dict[int, list[int]] = defaultdict(list)
    for _, _, n in taken:
        per_conversation[n % 40].append(n)
    assert all(ns == sorted(ns) for ns in per_conversation.values()), "processed out of order"
    assert len({claimer for claimer, _, _ in taken}) > 1, "the claimers did not overlap"


async def effects(sessions: Sessions) -> list[str]:
    async with sessions() as session:
        return sorted((await session.execute(select(Effect.key))).scalars())


def writer(sessions: Sessions, calls: list[str], fail: Any = None) -> Any:
    """A handler whose effect is one row, committed like the service commits its answers."""

    async def handler(event: inbox.Claimed) -> str:
        key = event.body["key"]
        calls.append(key)
        async with sessions() as session:
            session.add(Effect(key=f"effect-{key}-{len(calls)}"))
            await session.flush()
            if fail is not None:
                await fail(session, len(calls))
            await session.commit()
        return "stored"

    return handler


async def test_the_worker_processes_each_event_once_even_when_a_commit_fails(
    sessions: Sessions, keyring: KeyRing
) -> None:
    """The handler's effect and the done mark commit together: a failure before the commit
    rolls both back, the retry applies the effect once."""
    calls: list[str] = []
    clock = [T0]

    async def fail_first(session: Any, call: int) -> None:
        if call == 1:
            raise ConnectionError("the database went away before the commit")

    worker = InboxWorker(sessions, keyring, clock=lambda: clock[0])
    worker.register("zalo_oa", writer(sessions, calls, fail_first))
    await put(sessions, keyring, "m-1", "c1")
    assert await worker.run_once() == 1
    assert await effects(sessions) == []  # rolled back with its receipt
    clock[0] = T0 + dt.timedelta(minutes=5)  # past the backoff
    assert await worker.run_once() == 1
    assert await worker.run_once() == 0
    assert await effects(sessions) == ["effect-m-1-2"]
    assert calls == ["m-1", "m-1"]


async def test_an_effect_committed_before_a_later_failure_is_never_applied_again(
    sessions: Sessions, keyring: KeyRing
) -> None:
    """The first writing commit also marks the event done: a handler that fails after it
    (a send, a second step) leaves nothing to retry, so the answer is not stored twice."""
    calls: list[str] = []

    async def handler(event: inbox.Claimed) -> None:
        await writer(sessions, calls)(event)
        raise ConnectionError("the step after the commit failed")

    clock = [T0]
    worker = InboxWorker(sessions, keyring, clock=lambda: clock[0])
    worker.register("zalo_oa", handler)
    await put(sessions, keyring, "m-1", "c1")
    assert await worker.run_once() == 1
    clock[0] = T0 + dt.timedelta(hours=1)
    assert await worker.run_once() == 0
    assert await effects(sessions) == ["effect-m-1-1"]
    async with sessions() as session:
        assert await inbox.pending_count(session) == 0


async def test_a_task_the_handler_spawns_does_not_mark_the_event(
    sessions: Sessions, keyring: KeyRing
) -> None:
    """A background task started by the handler (a dispatcher kick) inherits its context: its
    commit must not mark the event, or the handler's own failure would lose the answer."""
    calls: list[str] = []
    clock = [T0]

    async def handler(event: inbox.Claimed) -> None:
        calls.append(event.body["key"])
        if len(calls) == 1:
            spawned = asyncio.create_task(writer(sessions, [])(event))
            await spawned
            raise ConnectionError("the handler's own transaction failed")

    worker = InboxWorker(sessions, keyring, clock=lambda: clock[0])
    worker.register("zalo_oa", handler)
    await put(sessions, keyring, "m-1", "c1")
    assert await worker.run_once() == 1
    async with sessions() as session:
        assert await inbox.pending_count(session) == 1  # still to be processed
    clock[0] = T0 + dt.timedelta(minutes=5)
    assert await worker.run_once() == 1
    assert calls == ["m-1", "m-1"]


async def test_an_event_acknowledged_then_abandoned_by_a_dead_worker_is_processed_once(
    sessions: Sessions, keyring: KeyRing
) -> None:
    """Accepted (the channel got its 200), claimed by a worker that then died: after its lease
    another worker processes it once, and the channel's redelivery is a duplicate."""
    await put(sessions, keyring, "m-1", "c1")
    assert await claim(sessions, keyring) == ["m-1"]  # the worker that dies here
    calls: list[str] = []
    later = T0 + inbox.LEASE + dt.timedelta(seconds=1)
    worker = InboxWorker(sessions, keyring, clock=lambda: later)
    worker.register("zalo_oa", writer(sessions, calls))
    assert await worker.run_once() == 1
    assert not await put(sessions, keyring, "m-1", "c1")  # Zalo redelivers: a duplicate
    assert await worker.run_once() == 0
    assert await effects(sessions) == ["effect-m-1-1"]


async def test_a_slow_worker_overtaken_after_its_lease_cannot_apply_the_event_again(
    database_url: str, sessions: Sessions, keyring: KeyRing
) -> None:
    """Two workers at once on one event: the first stalls past its lease, the second takes the
    event over and stores it; the first's commit is then refused, so the effect exists once.
    Fails when the done mark written with the effect is not guarded."""
    await put(sessions, keyring, "m-1", "c1")
    lease = dt.timedelta(seconds=10)
    stalled, overtaken = asyncio.Event(), asyncio.Event()
    calls: list[str] = []

    async def slow_then_store(event: inbox.Claimed) -> None:
        stalled.set()
        await overtaken.wait()  # before any write: SQLite's one writer stays free
        await writer(sessions, calls)(event)

    engine = make_engine(database_url)
    other = make_sessions(engine)
    first = InboxWorker(sessions, keyring, lease=lease, clock=lambda: T0)
    first.register("zalo_oa", slow_then_store)
    second = InboxWorker(other, keyring, lease=lease, clock=lambda: T0 + 2 * lease)
    second.register("zalo_oa", writer(other, calls))

    async def take_over() -> int:
        await stalled.wait()
        try:
            return await second.run_once()
        finally:
            overtaken.set()

    try:
        results = await asyncio.gather(first.run_once(), take_over())
    finally:
        await engine.dispose()
    assert results == [1, 1]
    assert calls == ["m-1", "m-1"]  # both ran the handler...
    assert len(await effects(sessions)) == 1, "the event was applied twice"  # ...once stored
    async with sessions() as session:
        assert await inbox.pending_count(session) == 0


async def test_process_now_answers_with_the_outcome_or_later(
    sessions: Sessions, keyring: KeyRing
) -> None:
    release = asyncio.Event()

    async def handler(event: inbox.Claimed) -> str:
        if event.body["key"] == "slow":
            await release.wait()
        return f"handled {event.body['key']}"

    worker = InboxWorker(sessions, keyring)
    worker.register("zalo_oa", handler)
    async with sessions() as session:
        fast = await inbox.accept(
            session, keyring, channel="zalo_oa", event_key="fast", conversation="c1",
            body={"key": "fast"},
        )  # fmt: skip
        slow = await inbox.accept(
            session, keyring, channel="zalo_oa", event_key="slow", conversation="c2",
            body={"key": "slow"},
        )  # fmt: skip
        await session.commit()
    assert fast is not None and slow is not None
    assert await worker.process_now(fast, 5) == "handled fast"
    assert await worker.process_now(slow, 0.05) is LATER  # still running in the background
    release.set()
    await worker.drain(5)
    async with sessions() as session:
        assert await inbox.pending_count(session) == 0


async def test_an_event_of_an_unknown_channel_is_kept_for_an_admin(
    sessions: Sessions, keyring: KeyRing
) -> None:
    """A channel switched off after its events were accepted: they end as dead letters."""
    now = [T0]
    worker = InboxWorker(sessions, keyring, max_attempts=2, clock=lambda: now[0])
    await put(sessions, keyring, "m-1", "c1")
    for _ in range(2):
        assert await worker.run_once() == 1
        now[0] += dt.timedelta(hours=1)
    async with sessions() as session:
        [dead] = await inbox.dead_letters(session)
        assert dead.channel == "zalo_oa" and dead.last_error == "NoHandler"
        assert await inbox.pending_count(session) == 0
        count = await session.scalar(select(func.count()).select_from(InboxEvent))
    assert count == 1


async def database_now(sessions: Sessions) -> dt.datetime:
    """The database's clock (the machine's on SQLite, which has none of its own)."""
    async with sessions() as session:
        if session.get_bind().dialect.name != "postgresql":
            return utcnow()
        value = await session.scalar(select(func.now()))
    assert isinstance(value, dt.datetime)
    return value


async def test_a_claimant_whose_clock_runs_five_minutes_ahead_takes_no_lease_over_early(
    sessions: Sessions, keyring: KeyRing
) -> None:
    """Leases are measured on the database's clock, read inside the claim's statement: a worker
    whose clock is 5 minutes fast neither sees a live lease of 60 s as lapsed nor leases an
    event until 5 minutes from now."""
    lease = dt.timedelta(seconds=60)
    ahead = dt.timedelta(minutes=5)
    await put(sessions, keyring, "m-1", "c1")
    assert await claim(sessions, keyring, at=utcnow(), lease=lease) == ["m-1"]
    assert await claim(sessions, keyring, at=utcnow() + ahead, lease=lease) == []

    await put(sessions, keyring, "m-2", "c2")
    assert await claim(sessions, keyring, at=utcnow() + ahead, lease=lease) == ["m-2"]
    hashed = inbox.keyed(keyring, "event", "zalo_oa", "m-2")
    async with sessions() as session:
        until = await session.scalar(
            select(InboxEvent.leased_until).where(InboxEvent.event_key == hashed)
        )
    assert until is not None and until <= await database_now(sessions) + lease


async def accept_and_claim(
    sessions: Sessions, keyring: KeyRing, key: str, conversation: str, at: dt.datetime = T0
) -> tuple[str | None, inbox.Claimed | None]:
    async with sessions() as session:
        return await inbox.accept_and_claim(
            session, keyring, channel="zalo_oa", event_key=key, conversation=conversation,
            body={"key": key}, now=at, lease=dt.timedelta(seconds=60),
        )  # fmt: skip


async def test_the_webhook_stores_and_leases_its_event_at_once_unless_its_chat_has_one_waiting(
    sessions: Sessions, keyring: KeyRing
) -> None:
    """``accept_and_claim``: one statement stores the event leased to the webhook (attempt 1,
    the fence of its receipt); a redelivery is a duplicate; an event of a chat whose earlier
    event is still pending is stored unleased, for the worker to take after that one."""
    event_id, claimed = await accept_and_claim(sessions, keyring, "a1", "A")
    assert claimed is not None and claimed.id == event_id
    assert (claimed.body, claimed.attempts) == ({"key": "a1"}, 1)
    assert await accept_and_claim(sessions, keyring, "a1", "A") == (None, None)  # redelivered
    waiting, none = await accept_and_claim(sessions, keyring, "a2", "A", T0 + dt.timedelta(1))
    assert waiting is not None and none is None
    assert await claim(sessions, keyring, at=T0 + dt.timedelta(seconds=1)) == []  # a1 leased
    async with sessions() as session:
        assert await inbox.done(session, event_id, now=T0, attempt=1)
        await session.commit()
    assert await claim(sessions, keyring, at=T0 + dt.timedelta(1)) == ["a2"]


async def test_a_webhook_claim_by_a_clock_five_minutes_fast_leases_on_the_database_clock(
    sessions: Sessions, keyring: KeyRing
) -> None:
    lease = dt.timedelta(seconds=60)
    _, claimed = await accept_and_claim(
        sessions, keyring, "m-1", "c1", utcnow() + dt.timedelta(minutes=5)
    )
    assert claimed is not None
    async with sessions() as session:
        until = await session.scalar(
            select(InboxEvent.leased_until).where(InboxEvent.id == claimed.id)
        )
    assert until is not None and until <= await database_now(sessions) + lease


async def test_two_events_of_one_chat_arriving_together_are_never_both_leased(
    database_url: str, sessions: Sessions, keyring: KeyRing
) -> None:
    """Two webhooks of one chat at once, over their own connections: one event is leased to its
    webhook, the other waits for the worker (the conversation's lock orders them)."""
    engines = [make_engine(database_url) for _ in range(2)]
    try:
        results = await asyncio.gather(
            *(
                accept_and_claim(make_sessions(engine), keyring, f"t{n}", "same-chat")
                for n, engine in enumerate(engines)
            )
        )
    finally:
        for engine in engines:
            await engine.dispose()
    assert all(event_id is not None for event_id, _ in results)
    assert sum(claimed is not None for _, claimed in results) == 1
