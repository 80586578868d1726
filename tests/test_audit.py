"""The audit log is hash-chained: editing any entry is detected by ``verify``."""

from __future__ import annotations

from sqlalchemy import update

from bot.runtime import Runtime
from storage import audit
from storage.models import AuditEntry


async def test_editing_an_entry_breaks_the_chain(runtime: Runtime) -> None:
    for n in range(4):
        await audit.record(runtime.sessions, "admin:lan", "export", {"level": "official", "n": n})
    assert (await audit.verify(runtime.sessions)).ok
    newest = await audit.recent(runtime.sessions, limit=2)
    assert [e.detail["n"] for e in newest] == [3, 2]
    async with runtime.sessions() as session:
        await session.execute(
            update(AuditEntry).where(AuditEntry.seq == newest[1].seq).values(actor="someone-else")
        )
        await session.commit()
    result = await audit.verify(runtime.sessions)
    assert not result.ok and result.first_bad_seq == newest[1].seq


async def test_a_deleted_middle_entry_is_detected(runtime: Runtime) -> None:
    for n in range(3):
        await audit.record(runtime.sessions, "cli", "apikey.create", {"n": n})
    entries = await audit.recent(runtime.sessions)
    async with runtime.sessions() as session:
        await session.delete(await session.get(AuditEntry, entries[1].seq))
        await session.commit()
    assert not (await audit.verify(runtime.sessions)).ok
