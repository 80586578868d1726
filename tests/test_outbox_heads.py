"""A lane's claim over a large backlog: exactly the conversation heads, oldest first, and on
PostgreSQL a walk of the lane's index that stops at its limit (not an anti-join of every unsent
row before a sort: 45-210 ms per claim over 20,000 rows, docs/benchmarks.md, Dispatch)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from sqlalchemy import event, update

from bot.runtime import Runtime
from storage import outbox
from storage.db import make_engine, make_sessions
from storage.models import OutboxMessage, utcnow

BASE = utcnow() - dt.timedelta(minutes=10)


def message(
    runtime: Runtime, conversation: str, at: int, priority: int = outbox.PRIORITY_INVITATION
) -> dict[str, Any]:
    """An outbox row of ``conversation``, created ``at`` milliseconds after ``BASE``."""
    return outbox.row(
        runtime.keyring,
        channel="flaky",
        address_sealed=runtime.keyring.seal(f"flaky:{conversation}"),
        conversation=conversation,
        payload={"text": f"{conversation}@{at}"},
        priority=priority,
        now=BASE + dt.timedelta(milliseconds=at),
    )


async def backlog(runtime: Runtime, conversations: int, per: int = 2) -> list[dict[str, Any]]:
    """``conversations`` conversations of ``per`` invitation messages each, interleaved in time
    (every conversation's first message before any second one), written in one statement."""
    rows = [
        message(runtime, f"c{c:05d}", k * conversations + c)
        for k in range(per)
        for c in range(conversations)
    ]
    async with runtime.sessions() as session:
        await outbox.enqueue_rows(session, rows)
        await session.commit()
    return rows


async def test_a_lane_claims_only_heads_oldest_first_and_a_follower_after_its_head(
    runtime: Runtime,
) -> None:
    """Heads in order; a conversation whose head is stalled, retrying later, or still being
    sent holds back its follower; a retired head lets it go."""
    rows = await backlog(runtime, 30)
    first = {r["conversation"]: r["id"] for r in rows[:30]}
    async with runtime.sessions() as session:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == first["c00000"])
            .values(status=outbox.STALLED)
        )
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == first["c00001"])
            .values(available_at=utcnow() + dt.timedelta(minutes=5))  # a retry's backoff
        )
        await outbox.retire_unsent(
            session, OutboxMessage.id == first["c00002"], status="cancelled", reason="test"
        )
        await session.commit()
    async with runtime.sessions() as session:
        claimed = await outbox.claim(session, 10, lane=outbox.PRIORITY_INVITATION)
    # c00002's follower is now its head, but younger than every other first message
    assert [c.conversation for c in claimed] == [f"c{n:05d}" for n in range(3, 13)]
    assert all(c.id == first[c.conversation] for c in claimed)
    async with runtime.sessions() as session:
        rest = await outbox.claim(session, 100, lane=outbox.PRIORITY_INVITATION)
    # the other first messages, then c00002's second; no follower of a claimed head
    assert [c.conversation for c in rest] == [f"c{n:05d}" for n in range(13, 30)] + ["c00002"]
    async with runtime.sessions() as session:
        nothing = await outbox.claim(session, 100, lane=outbox.PRIORITY_INVITATION)
        assert nothing == []
        assert await outbox.claim(session, 10, lane=outbox.PRIORITY_REPLY) == []
        followers = await outbox.sent_then_next(session, claimed[:1])
    following = followers.get(claimed[0].conversation)
    assert following is not None and following.conversation == claimed[0].conversation
    assert following.id != claimed[0].id


async def test_racing_lane_claims_over_a_backlog_take_each_head_once(
    runtime: Runtime, database_url: str
) -> None:
    """Six claimers at once over 300 conversations: every head claimed by exactly one of them,
    and no conversation's second message while its first is out."""
    await backlog(runtime, 300)
    claimers = 6
    engines = [make_engine(database_url) for _ in range(claimers)]
    together = asyncio.Barrier(claimers)

    async def claimer(index: int) -> list[outbox.Claimed]:
        taken: list[outbox.Claimed] = []
        async with make_sessions(engines[index])() as session:
            await together.wait()
            while batch := await outbox.claim(session, 25, lane=outbox.PRIORITY_INVITATION):
                taken += batch
        return taken

    try:
        claims = await asyncio.gather(*(claimer(i) for i in range(claimers)))
    finally:
        for engine in engines:
            await engine.dispose()
    conversations = [c.conversation for taken in claims for c in taken]
    assert len(conversations) == 300 and len(set(conversations)) == 300


async def test_a_lane_claim_on_postgresql_walks_the_lane_in_order_and_stops_at_its_limit(
    runtime: Runtime,
) -> None:
    """The plan of a lane's claim over 5,000 unsent rows: the lane's partial index in claim
    order, each row's conversation probed by an index of it, no hash anti-join and no sort."""
    if runtime.engine.dialect.name != "postgresql":
        return  # SQLite plans its own way (and the embedded default has no such backlog)
    await backlog(runtime, 2500)
    async with runtime.engine.connect() as connection:
        await connection.exec_driver_sql("ANALYZE outbox")
        await connection.commit()
    captured: list[tuple[str, Any]] = []

    def grab(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "UPDATE outbox" in statement:
            captured.append((statement, parameters))

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", grab)
    try:
        async with runtime.sessions() as session:
            assert len(await outbox.claim(session, 50, lane=outbox.PRIORITY_INVITATION)) == 50
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", grab)
    statement, parameters = captured[0]
    async with runtime.engine.connect() as connection:
        plan = "\n".join(
            row[0] for row in await connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
        )
    assert "ix_outbox_lane_order" in plan, plan
    # each probe one conversation's index entries, never a bitmap of every unsent row
    assert not any(step in plan for step in ("Hash Anti Join", "Sort", "BitmapAnd")), plan
