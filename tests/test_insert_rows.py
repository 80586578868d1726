"""``storage.upsert.insert_rows``: a batch's new invitations and outbox rows, by COPY on
PostgreSQL, by a multi-row INSERT on SQLite; either way each row reads back as given, with the
columns' defaults filled in, and inside the batch's transaction (a rollback keeps nothing)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import event, select

from bot.runtime import Runtime
from storage.models import OutboxMessage, new_id, utcnow
from storage.upsert import insert_rows, table_of


def messages(count: int) -> list[dict[str, Any]]:
    now = utcnow()
    return [
        {
            "id": new_id(), "dedup_key": f"k-{n}", "channel": "web", "address_sealed": "a1.xyz",
            "conversation": f"c-{n % 3}", "payload": {"sealed": f"p{n}", "ý": [1, None]},
            "priority": 5, "invitation_id": None,
            "created_at": now + dt.timedelta(microseconds=n), "available_at": now,
        }
        for n in range(count)
    ]  # fmt: skip


async def test_rows_read_back_as_given_with_defaults_in_the_callers_transaction(
    runtime: Runtime,
) -> None:
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", seen)
    rows = messages(250)
    async with runtime.sessions() as session:
        await session.execute(select(OutboxMessage.id).limit(1))  # the batch's reads come first
        await insert_rows(session, table_of(OutboxMessage), rows)
        await session.rollback()
    async with runtime.sessions() as session:
        assert (await session.execute(select(OutboxMessage))).first() is None
        await session.execute(select(OutboxMessage.id).limit(1))
        await insert_rows(session, table_of(OutboxMessage), rows)
        await session.commit()
    event.remove(runtime.engine.sync_engine, "before_cursor_execute", seen)
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT INTO OUTBOX")]
    if runtime.engine.dialect.name == "postgresql":
        assert inserts == [], "the rows went by INSERT, not COPY"
    else:
        assert inserts
    async with runtime.sessions() as session:
        stored = {m.id: m for m in (await session.execute(select(OutboxMessage))).scalars()}
    assert len(stored) == len(rows)
    for row in rows:
        message = stored[row["id"]]
        assert {k: getattr(message, k) for k in row} == row
        assert (message.status, message.attempts, message.sent_at) == ("pending", 0, None)
