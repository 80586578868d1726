"""The audit log is hash-chained and anchored outside the database: editing any entry, cutting
off the newest ones, or rewriting the whole chain with fresh hashes is detected by ``verify``."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from bot.runtime import Runtime
from storage.audit import GENESIS, AuditLog, entry_hash
from storage.models import AuditEntry


async def _record(runtime: Runtime, count: int) -> list[AuditEntry]:
    for n in range(count):
        await runtime.audit.record("admin:lan", "export", {"level": "official", "n": n})
    return await runtime.audit.recent(limit=count)


async def test_editing_an_entry_breaks_the_chain(runtime: Runtime) -> None:
    newest = await _record(runtime, 4)
    assert (await runtime.audit.verify()).ok
    assert [e.detail["n"] for e in newest[:2]] == [3, 2]
    async with runtime.sessions() as session:
        await session.execute(
            update(AuditEntry).where(AuditEntry.seq == newest[1].seq).values(actor="someone-else")
        )
        await session.commit()
    result = await runtime.audit.verify()
    assert not result.ok and result.first_bad_seq == newest[1].seq and result.problem == "edited"


async def test_a_deleted_middle_entry_is_detected(runtime: Runtime) -> None:
    entries = await _record(runtime, 3)
    async with runtime.sessions() as session:
        await session.delete(await session.get(AuditEntry, entries[1].seq))
        await session.commit()
    assert not (await runtime.audit.verify()).ok


async def test_cutting_off_the_newest_entries_is_detected_by_the_anchor(runtime: Runtime) -> None:
    entries = await _record(runtime, 4)
    newest, second = entries[0], entries[1]
    async with runtime.sessions() as session:
        await session.execute(delete(AuditEntry).where(AuditEntry.seq >= second.seq))
        await session.commit()
    # What is left is a valid chain on its own: only the anchor knows it was longer.
    result = await runtime.audit.verify()
    assert not result.ok and result.problem == "missing" and result.first_bad_seq == second.seq
    assert newest.seq > second.seq


async def test_a_chain_rewritten_with_fresh_hashes_is_detected_by_the_anchor(
    runtime: Runtime,
) -> None:
    await _record(runtime, 3)
    async with runtime.sessions() as session:
        rows = list((await session.execute(select(AuditEntry).order_by(AuditEntry.seq))).scalars())
        prev = GENESIS
        for row in rows:  # hide every export of official-level data, and re-link the chain
            row.detail = {**row.detail, "level": "agency"}
            row.prev_hash = prev
            row.hash = prev = entry_hash(
                prev, row.at.isoformat(), row.actor, row.action, row.detail
            )
        await session.commit()
    result = await runtime.audit.verify()
    assert not result.ok and result.problem == "rewritten" and result.first_bad_seq == rows[0].seq


async def test_an_unwritable_anchor_loses_no_entry_and_says_so(
    runtime: Runtime, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "anchor-is-a-directory"
    blocked.mkdir()
    log = AuditLog(runtime.sessions, blocked)
    await log.record("admin:lan", "export", {"level": "agency"})
    assert [e.action for e in await log.recent(limit=1)] == ["export"]
    assert "audit anchor" in caplog.text and "not written" in caplog.text
    assert (await log.verify()).ok
