"""The agency-level criteria of Circular 01/2018 (5, 8 and 9) per unit and calendar quarter.

An assessor scores each unit 2/1/0 on them once a quarter, the rhythm units are assessed in, so
a value belongs to a (unit, quarter), never to the unit for ever. A survey that closes takes the
values of its response's unit for the quarter of the response's day (``answered_on``, the day
that also places it in its release), and keeps them in its ``score_inputs``.

Setting or clearing a quarter re-scores that unit's responses of the quarter in the same
transaction (their inputs' agency part, then the caller's scorer, ``bot.responses.apply_score``),
in bounded batches, and is refused (``Frozen``) once any release covers a day of the quarter:
released figures never change, so neither may what they were computed from. Two locks keep
that true across processes on PostgreSQL (SQLite serialises every writer at BEGIN): a change
holds off publication (``releases.hold_off_publication``) and locks its (unit, quarter), which a
closing survey takes shared before reading the values, so a survey closing during a change
either is re-scored by it or reads the new values.

Before migration 0020 a unit had one set of values (``Agency.agency_criteria``, set by the
CLI); they stay, read only, as the fallback of every quarter with no row of its own, so an
upgraded deployment scores as before until a quarter is assessed. Clearing a quarter returns
it to that fallback.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from bot.flows.scoring import AGENCY_CRITERIA, MAX_PER_CRITERION
from storage import releases
from storage.db import Sessions
from storage.models import Agency, Response, UnitCriteria, utcnow

#: Responses re-scored per round trip (all of them in one transaction).
BATCH = 1000
LABEL = re.compile(r"^(\d{4})-Q([1-4])$")
#: Scores one response from its stored inputs; whether its score changed (``apply_score``).
Rescore = Callable[[Response], bool]
Values = dict[str, int]


@dataclass(frozen=True, slots=True, order=True)
class Quarter:
    """A calendar quarter, written "2026-Q3"."""

    year: int
    number: int

    @classmethod
    def of(cls, day: dt.date) -> Quarter:
        return cls(day.year, (day.month - 1) // 3 + 1)

    @classmethod
    def parse(cls, label: str) -> Quarter:
        """The quarter a label names; ValueError for anything else."""
        found = LABEL.match(label.strip())
        if found is None or not 1900 <= int(found.group(1)) <= 9998:
            raise ValueError(f"a quarter is written like 2026-Q3, not {label!r}")
        return cls(int(found.group(1)), int(found.group(2)))

    @property
    def label(self) -> str:
        return f"{self.year}-Q{self.number}"

    @property
    def starts_on(self) -> dt.date:
        return dt.date(self.year, 3 * self.number - 2, 1)

    @property
    def ends_on(self) -> dt.date:
        return self.shift(1).starts_on - dt.timedelta(days=1)

    def shift(self, quarters: int) -> Quarter:
        index = self.year * 4 + self.number - 1 + quarters
        return Quarter(index // 4, index % 4 + 1)

    def __str__(self) -> str:
        return self.label


class Frozen(Exception):
    """The quarter is covered by a release: its criteria (and scores) can no longer change."""

    def __init__(self, quarter: Quarter, labels: list[str]) -> None:
        super().__init__(f"{quarter.label} is covered by the release(s) {', '.join(labels)}")
        self.quarter = quarter
        self.labels = labels


@dataclass(frozen=True, slots=True)
class Criteria:
    """One unit's criteria for one quarter: its own values, and the pre-0020 fallback."""

    unit_id: str
    quarter: Quarter
    #: The quarter's own values (criterion → points); None when the quarter has no row.
    own: Values | None
    fallback: Values = field(default_factory=dict)

    @property
    def in_force(self) -> Values:
        """What a survey of the quarter is scored with."""
        return dict(self.own) if self.own is not None else dict(self.fallback)


@dataclass(frozen=True, slots=True)
class Change:
    """What a set or clear did: the values in force before and after; how many responses of the
    quarter had their inputs changed and how many their score (for tests and operators only:
    a live count, never shown on a page)."""

    before: Values
    after: Values
    rescored: int
    changed: int


def check(values: Mapping[str, int | None]) -> Values:
    """The assessed values, each one of 5, 8, 9 and 0..2; ValueError naming what is wrong."""
    out: Values = {}
    for criterion, points in values.items():
        if criterion not in AGENCY_CRITERIA:
            raise ValueError(f"criterion {criterion!r} is not agency-level (5, 8 or 9)")
        if points is None:
            continue
        if isinstance(points, bool) or not isinstance(points, int):
            raise ValueError(f"criterion {criterion}: points must be a whole number")
        if not 0 <= points <= MAX_PER_CRITERION:
            raise ValueError(f"criterion {criterion}: points must be 0, 1 or 2")
        out[criterion] = points
    return out


def _values(row: UnitCriteria) -> Values:
    found = {"5": row.c5, "8": row.c8, "9": row.c9}
    return {c: int(v) for c, v in found.items() if v is not None}


def _legacy(raw: Mapping[str, object] | None) -> Values:
    out: Values = {}
    for criterion, points in (raw or {}).items():
        if str(criterion) in AGENCY_CRITERIA and isinstance(points, int | float | str):
            out[str(criterion)] = int(points)
    return out


def _lock_key(unit_id: str, quarter: Quarter) -> int:
    digest = hashlib.sha256(f"unit-criteria:{unit_id}:{quarter.label}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def _lock(session: AsyncSession, unit_id: str, quarter: Quarter, *, shared: bool) -> None:
    if session.get_bind().dialect.name == "postgresql":
        function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        await session.execute(
            text(f"SELECT {function}(:key)"), {"key": _lock_key(unit_id, quarter)}
        )


async def _read(session: AsyncSession, unit_id: str, quarter: Quarter) -> Criteria:
    row = await session.get(UnitCriteria, (unit_id, quarter.starts_on))
    legacy = await session.scalar(select(Agency.agency_criteria).where(Agency.id == unit_id))
    return Criteria(unit_id, quarter, _values(row) if row else None, _legacy(legacy))


# ------------------------------------------------------------------------------ reading
async def in_force_on(session: AsyncSession, unit_id: str, day: dt.date) -> Values:
    """The values a survey of ``unit_id`` answered on ``day`` is scored with, read inside the
    caller's (closing) transaction under the (unit, quarter)'s shared lock (see above)."""
    quarter = Quarter.of(day)
    await _lock(session, unit_id, quarter, shared=True)
    return (await _read(session, unit_id, quarter)).in_force


async def read(sessions: Sessions, unit_id: str, day: dt.date) -> Criteria:
    """The unit's criteria for the quarter of ``day``."""
    async with sessions() as session:
        return await _read(session, unit_id, Quarter.of(day))


async def list_for(
    sessions: Sessions, unit_ids: Iterable[str] | None, quarter: Quarter
) -> dict[str, Criteria]:
    """Each unit's criteria for ``quarter`` (a subtree's units; None: every unit), two queries."""
    wanted = None if unit_ids is None else list(unit_ids)
    agencies = select(Agency.id, Agency.agency_criteria)
    rows = select(UnitCriteria).where(UnitCriteria.quarter_start == quarter.starts_on)
    if wanted is not None:
        agencies = agencies.where(Agency.id.in_(wanted))
        rows = rows.where(UnitCriteria.agency_id.in_(wanted))
    async with sessions() as session:
        legacy = {aid: _legacy(raw) for aid, raw in await session.execute(agencies)}
        own = {r.agency_id: _values(r) for r in (await session.execute(rows)).scalars()}
    return {aid: Criteria(aid, quarter, own.get(aid), fb) for aid, fb in legacy.items()}


async def frozen_by(sessions: Sessions, quarter: Quarter) -> list[str]:
    """The releases covering a day of ``quarter`` (empty: its criteria may still change)."""
    async with sessions() as session:
        return await releases.covering(session, quarter.starts_on, quarter.ends_on)


# ------------------------------------------------------------------------------ changing
async def set_criteria(
    sessions: Sessions,
    unit_id: str,
    quarter: Quarter,
    values: Mapping[str, int | None],
    rescore: Rescore,
    *,
    merge: bool = False,
) -> Change:
    """Set the quarter's values (``merge``: only those given, the others kept), re-scoring the
    unit's responses of the quarter; no value left clears the quarter (back to the fallback).

    LookupError for an unknown unit, ValueError for bad values, ``Frozen`` once released.
    """
    given = check(values)
    return await _change(sessions, unit_id, quarter, rescore, given, merge=merge)


async def clear(sessions: Sessions, unit_id: str, quarter: Quarter, rescore: Rescore) -> Change:
    """Forget the quarter's own values (its surveys then use the fallback), re-scoring them."""
    return await _change(sessions, unit_id, quarter, rescore, {}, merge=False)


async def _change(
    sessions: Sessions,
    unit_id: str,
    quarter: Quarter,
    rescore: Rescore,
    given: Values,
    *,
    merge: bool,
) -> Change:
    async with sessions() as session:
        await releases.hold_off_publication(session)
        await _lock(session, unit_id, quarter, shared=False)
        if await session.get(Agency, unit_id) is None:
            raise LookupError(unit_id)
        labels = await releases.covering(session, quarter.starts_on, quarter.ends_on)
        if labels:
            raise Frozen(quarter, labels)
        current = await _read(session, unit_id, quarter)
        wanted = {**(current.own or {}), **given} if merge else dict(given)
        row = await session.get(UnitCriteria, (unit_id, quarter.starts_on))
        if not wanted:
            await session.execute(
                delete(UnitCriteria).where(
                    UnitCriteria.agency_id == unit_id,
                    UnitCriteria.quarter_start == quarter.starts_on,
                )
            )
            after = dict(current.fallback)
        else:
            if row is None:
                row = UnitCriteria(agency_id=unit_id, quarter_start=quarter.starts_on)
                session.add(row)
            row.c5, row.c8, row.c9 = (wanted.get(c) for c in AGENCY_CRITERIA)
            row.updated_at = utcnow()
            after = wanted
        await session.flush()
        rescored, changed = await _rescore(session, unit_id, quarter, after, rescore)
        await session.commit()
    return Change(current.in_force, after, rescored, changed)


async def _rescore(
    session: AsyncSession, unit_id: str, quarter: Quarter, agency: Values, rescore: Rescore
) -> tuple[int, int]:
    """Put ``agency`` into the inputs of the unit's scored responses of the quarter and score
    them again, ``BATCH`` at a time (keyset on the random id), in the caller's transaction."""
    rescored = changed = 0
    last = ""
    while True:
        batch = (
            (
                await session.execute(
                    select(Response)
                    .where(
                        Response.agency_id == unit_id,
                        *quarter_days(quarter),
                        Response.score_inputs.is_not(None),
                        Response.id > last,
                    )
                    .order_by(Response.id)
                    .limit(BATCH)
                )
            )
            .scalars()
            .all()
        )
        if not batch:
            return rescored, changed
        for response in batch:
            inputs = dict(response.score_inputs or {})
            if inputs.get("agency") == agency:
                continue
            response.score_inputs = {**inputs, "agency": dict(agency)}
            rescored += 1
            changed += rescore(response)
        last = batch[-1].id
        await session.flush()
        for response in batch:
            session.expunge(response)


def quarter_days(quarter: Quarter) -> list[ColumnElement[bool]]:
    """The conditions that a response's day falls in ``quarter``."""
    return [Response.answered_on >= quarter.starts_on, Response.answered_on <= quarter.ends_on]
