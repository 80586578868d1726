"""A tamper-evident audit log: each entry's hash covers the previous entry's hash.

Editing or deleting an entry breaks every later link, which ``verify`` reports. A chain kept
only in the database cannot show that its newest entries were cut off, nor that someone with
write access rewrote it and recomputed every hash, so each new head (sequence number and hash)
is also appended to an anchor file outside the database, and logged: ``verify`` fails when an
anchored entry is missing from the database or differs from it. The unique ``prev_hash`` makes
two writers racing for the same tail collide, and the loser retries.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from storage.db import Sessions
from storage.models import AuditEntry, utcnow

GENESIS = "0" * 64
log = logging.getLogger("surveybot.audit")


def entry_hash(prev_hash: str, at: str, actor: str, action: str, detail: dict[str, Any]) -> str:
    canonical = json.dumps(
        [prev_hash, at, actor, action, detail],
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    #: "edited" (a link does not hold), "missing" or "rewritten" (against the anchor).
    problem: str | None = None


class AuditLog:
    """The deployment's audit log: entries in the database, heads in the anchor file."""

    def __init__(self, sessions: Sessions, anchor: Path | None = None) -> None:
        self.sessions = sessions
        self.anchor = anchor

    async def record(self, actor: str, action: str, detail: dict[str, Any]) -> None:
        for _ in range(10):
            async with self.sessions() as session:
                tail = (
                    await session.execute(
                        select(AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
                    )
                ).scalar_one_or_none()
                prev = tail or GENESIS
                at = utcnow().replace(microsecond=0)
                digest = entry_hash(prev, at.isoformat(), actor, action, detail)
                entry = AuditEntry(
                    at=at, actor=actor, action=action, detail=detail, prev_hash=prev, hash=digest
                )
                session.add(entry)
                try:
                    await session.commit()
                except IntegrityError:
                    await session.rollback()
                    continue
                self._anchor(entry.seq, digest)
                return
        raise RuntimeError("audit log is too contended to append")

    def _anchor(self, seq: int, digest: str) -> None:
        """Append the new head; lines from several processes may interleave, never clash."""
        log.info("audit head %s %s", seq, digest)
        if self.anchor is None:
            return
        try:
            self.anchor.parent.mkdir(parents=True, exist_ok=True)
            with self.anchor.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"seq": seq, "hash": digest}) + "\n")
        except OSError as exc:
            # The entry is committed and its head is in the log line above; failing the
            # request that caused it would only lose the user's work, so alert and go on.
            log.error("audit anchor %s not written (%s): head %s %s", self.anchor, exc, seq, digest)

    def anchored(self) -> dict[int, str]:
        """Every head the anchor file recorded, by sequence number."""
        if self.anchor is None or not self.anchor.exists():
            return {}
        heads: dict[int, str] = {}
        try:
            with self.anchor.open(encoding="utf-8") as handle:
                for line in handle:
                    try:
                        item = json.loads(line)
                        heads[int(item["seq"])] = str(item["hash"])
                    except (ValueError, KeyError, TypeError):
                        continue  # a torn last line from a crash mid-write
        except OSError as exc:
            log.error(
                "audit anchor %s unreadable (%s): only the chain is checked", self.anchor, exc
            )
        return heads

    async def verify(self) -> Verification:
        anchored = self.anchored()
        prev = GENESIS
        count = 0
        async with self.sessions() as session:
            rows = await session.stream_scalars(select(AuditEntry).order_by(AuditEntry.seq))
            async for entry in rows:
                count += 1
                expected = entry_hash(
                    prev, entry.at.isoformat(), entry.actor, entry.action, entry.detail
                )
                if entry.prev_hash != prev or entry.hash != expected:
                    return Verification(False, count, entry.seq, "edited")
                if anchored.pop(entry.seq, entry.hash) != entry.hash:
                    return Verification(False, count, entry.seq, "rewritten")
                prev = entry.hash
        if anchored:
            return Verification(False, count, min(anchored), "missing")
        return Verification(True, count)

    async def recent(self, limit: int = 200, offset: int = 0) -> list[AuditEntry]:
        """The newest entries first, for the audit page."""
        limit = max(1, min(limit, 1000))
        async with self.sessions() as session:
            rows = await session.execute(
                select(AuditEntry)
                .order_by(AuditEntry.seq.desc())
                .limit(limit)
                .offset(max(offset, 0))
            )
            return list(rows.scalars())
