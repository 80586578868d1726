"""Periodic reports stored as filed: generated once per scope and period, listed and read back
within a scope.

``generate`` builds a report from its ``storage.reports.Source`` and stores its two files; the
same period generated again after no new release returns the stored one (the releases are
frozen, so it would be the same report). Two processes generating at once both build it, one
insert wins on the unique key and the other returns the winner's row: one report, one
generation to audit. ``due`` is what the maintenance round generates: every closed quarter and
year with releases inside it, for the province and every agency in them, not yet stored.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import defer

from storage import releases, report_pdf, report_xlsx, reports
from storage.db import Sessions
from storage.models import PeriodicReport, ReleaseFigures, utcnow
from storage.reports import ReportPeriod
from storage.stats import Thresholds

#: A report id as ``new_id`` makes them: anything else (a NUL, a slash) is no report.
_ID = re.compile(r"[0-9a-f]{32}")
FORMATS = {
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
}


@dataclass(frozen=True, slots=True)
class StoredReport:
    """A stored report without its files (lists, audit entries)."""

    id: str
    scope: str
    code: str
    kind: str
    label: str
    through: dt.date
    complete: bool
    releases: list[str]
    generated_at: dt.datetime
    trigger: str

    def filename(self, fmt: str) -> str:
        safe = "".join(
            ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "-" for ch in self.code
        )
        return f"bao-cao-{safe or 'toan-tinh'}-{self.label}.{fmt}"

    def audit_detail(self) -> dict[str, object]:
        """What the audit log says of it (the scope by its code, "*" for the province)."""
        return {
            "report": self.id,
            "scope": self.code or "*",
            "period": self.label,
            "through": self.through.isoformat(),
            "trigger": self.trigger,
        }


def _info(row: PeriodicReport) -> StoredReport:
    return StoredReport(
        row.id,
        row.scope,
        row.code,
        row.kind,
        row.label,
        row.through,
        row.complete,
        list(row.releases),
        row.generated_at,
        row.trigger,
    )


async def _find(
    sessions: Sessions, scope: str, period: ReportPeriod, through: dt.date
) -> StoredReport | None:
    async with sessions() as session:
        row = await session.scalar(
            select(PeriodicReport)
            .options(defer(PeriodicReport.xlsx), defer(PeriodicReport.pdf))
            .where(
                PeriodicReport.scope == scope,
                PeriodicReport.kind == period.kind,
                PeriodicReport.label == period.label,
                PeriodicReport.through == through,
            )
        )
    return _info(row) if row is not None else None


async def generate(
    sessions: Sessions,
    scope: str,
    period: ReportPeriod,
    thresholds: Thresholds,
    trigger: str,
    font: Path = report_pdf.DEFAULT_FONT,
) -> tuple[StoredReport, bool]:
    """The report of ``scope`` for ``period`` and whether this call stored it (False: it was
    there already, or another process stored it meanwhile). ``ReportError`` when nothing has
    been released inside the period."""
    src = await reports.source(sessions, scope, period)
    report = reports.build(src, thresholds)  # raises ReportError without releases
    assert src.through is not None
    found = await _find(sessions, scope, period, src.through)
    if found is not None:
        return found, False
    # Rendering is CPU work (a few hundred ms for a large province): off the event loop.
    xlsx, pdf = await asyncio.to_thread(
        lambda: (report_xlsx.write(report), report_pdf.write(report, font))
    )
    row = PeriodicReport(
        scope=scope,
        code=report.code,
        kind=period.kind,
        label=period.label,
        through=src.through,
        complete=src.complete,
        releases=report.releases,
        generated_at=utcnow(),
        trigger=trigger,
        xlsx=xlsx,
        pdf=pdf,
    )
    async with sessions() as session:
        session.add(row)
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()
            winner = await _find(sessions, scope, period, src.through)
            assert winner is not None
            return winner, False
    return _info(row), True


async def due(sessions: Sessions) -> list[tuple[str, ReportPeriod]]:
    """(scope, period) of every closed quarter and year with releases inside it whose report
    (summing all of them) is not stored yet, oldest first."""
    every = await releases.list_releases(sessions)
    if not every:
        return []
    last = every[-1].ends_on
    periods: dict[tuple[str, str], ReportPeriod] = {}
    for info in every:
        for kind in reports.KINDS:
            period = reports.period_of(kind, info.starts_on)
            if period.ends_on <= last and info.ends_on <= period.ends_on:
                periods[(kind, period.label)] = period
    async with sessions() as session:
        stored = {
            (r.scope, r.kind, r.label, r.through)
            for r in await session.execute(
                select(
                    PeriodicReport.scope,
                    PeriodicReport.kind,
                    PeriodicReport.label,
                    PeriodicReport.through,
                )
            )
        }
        scopes_of: dict[str, set[str]] = {}
        for release_id, scope in await session.execute(
            select(ReleaseFigures.release_id, ReleaseFigures.scope)
        ):
            scopes_of.setdefault(release_id, set()).add(scope)
    result = []
    for period in sorted(periods.values(), key=lambda p: (p.ends_on, p.kind)):
        inner = reports.inside(every, period)
        if not inner:
            continue
        through = inner[-1].ends_on
        scopes = sorted(set().union(*(scopes_of.get(r.id, set()) for r in inner)))
        for scope in scopes:
            if (scope, period.kind, period.label, through) not in stored:
                result.append((scope, period))
    return result


def _scoped(scopes: str | Collection[str] | None) -> list[str] | None:
    return None if scopes is None else [scopes] if isinstance(scopes, str) else list(scopes)


async def listed(sessions: Sessions, scopes: str | Collection[str] | None) -> list[StoredReport]:
    """The stored reports of these scopes (one, several: a subtree; None: every scope), newest
    period first."""
    stmt = select(PeriodicReport).options(defer(PeriodicReport.xlsx), defer(PeriodicReport.pdf))
    wanted = _scoped(scopes)
    if wanted is not None:
        stmt = stmt.where(PeriodicReport.scope.in_(wanted))
    stmt = stmt.order_by(
        PeriodicReport.through.desc(), PeriodicReport.kind, PeriodicReport.generated_at.desc()
    )
    async with sessions() as session:
        return [_info(r) for r in (await session.execute(stmt)).scalars()]


async def file(
    sessions: Sessions, report_id: str, fmt: str, scopes: str | Collection[str] | None
) -> tuple[StoredReport, bytes] | None:
    """One stored file, or None when there is no such report *in the caller's scopes* (None:
    every scope): another unit's report is as unknown as a missing one."""
    if fmt not in FORMATS or not _ID.fullmatch(report_id):
        return None
    column = PeriodicReport.xlsx if fmt == "xlsx" else PeriodicReport.pdf
    stmt = select(PeriodicReport).where(PeriodicReport.id == report_id)
    wanted = _scoped(scopes)
    if wanted is not None:
        stmt = stmt.where(PeriodicReport.scope.in_(wanted))
    async with sessions() as session:
        row = await session.scalar(
            stmt.options(defer(PeriodicReport.xlsx), defer(PeriodicReport.pdf))
        )
        if row is None:
            return None
        data = await session.scalar(select(column).where(PeriodicReport.id == row.id))
    return _info(row), bytes(data or b"")
