"""A tamper-evident audit log: each entry's hash covers the previous entry's hash.

Editing or deleting an entry breaks every later link, which ``verify`` reports. The unique
``prev_hash`` makes two writers racing for the same tail collide, and the loser retries.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from storage.db import Sessions
from storage.models import AuditEntry, utcnow

GENESIS = "0" * 64


def entry_hash(prev_hash: str, at: str, actor: str, action: str, detail: dict[str, Any]) -> str:
    canonical = json.dumps(
        [prev_hash, at, actor, action, detail],
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


async def record(sessions: Sessions, actor: str, action: str, detail: dict[str, Any]) -> None:
    for _ in range(10):
        async with sessions() as session:
            tail = (
                await session.execute(
                    select(AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
                )
            ).scalar_one_or_none()
            prev = tail or GENESIS
            at = utcnow().replace(microsecond=0)
            digest = entry_hash(prev, at.isoformat(), actor, action, detail)
            session.add(
                AuditEntry(
                    at=at, actor=actor, action=action, detail=detail, prev_hash=prev, hash=digest
                )
            )
            try:
                await session.commit()
                return
            except IntegrityError:
                await session.rollback()
    raise RuntimeError("audit log is too contended to append")


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    entries: int
    first_bad_seq: int | None = None


async def verify(sessions: Sessions) -> Verification:
    prev = GENESIS
    count = 0
    async with sessions() as session:
        rows = await session.stream_scalars(select(AuditEntry).order_by(AuditEntry.seq))
        async for entry in rows:
            count += 1
            expected = entry_hash(
                prev, entry.at.isoformat(), entry.actor, entry.action, entry.detail
            )
            if entry.prev_hash != prev or entry.hash != expected:
                return Verification(False, count, entry.seq)
            prev = entry.hash
    return Verification(True, count)


async def recent(sessions: Sessions, limit: int = 200, offset: int = 0) -> list[AuditEntry]:
    """The newest entries first, for the audit page."""
    limit = max(1, min(limit, 1000))
    async with sessions() as session:
        rows = await session.execute(
            select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(limit).offset(max(offset, 0))
        )
        return list(rows.scalars())
