"""The ratings pass: every response read once, in a fresh random order, through the plan.

Each row costs one dict lookup: its true quasi-identifiers give its cell number, the cell its
released cells (or nothing: a dropped cell); rows are counted per cell so that the plan can be
checked on what was actually written. Each export draws a fresh random key and replaces the
response id with a keyed hash of it, so two exports cannot be joined row by row; the rater
pseudonym never leaves the database. The order is the database's own ``ORDER BY random()``:
two exports cannot be aligned by row position, and no order follows answering time.

A CSV of 200,000 responses or more is written by one worker process per core, each over a
fresh random part of the responses (``draw_parts``), because at that size the Python work per
row, not the database, sets the time. This module is what a worker imports, so it imports
little (no survey definitions, no scrubber): each worker is a few tens of MB lighter.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import gc
import json
import multiprocessing
import os
import pickle
import random
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from hashlib import blake2b
from typing import Any, TypeVar

from sqlalchemy import Integer, Select, String, Text, cast, func, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from storage import stats
from storage.cells import clean
from storage.db import Sessions, make_engine, make_sessions
from storage.models import Agency, Official, Procedure, Response

SelectT = TypeVar("SelectT", bound=Select)
#: A response's true quasi-identifiers but the period, in the order of a plan key: the plan's
#: GROUP BY and the ratings pass select them alike, so a row finds its cell.
KEY_COLUMNS = (
    Response.agency_id,
    Response.survey_id,
    Response.survey_version,
    Response.official_id,
    Response.procedure_id,
    Response.channel,
    Response.language,
)
BATCH = 5000
#: Distinct values one memo keeps (days, answer sets): enough for every low-cardinality
#: column, small enough that varied answers cannot grow it without bound.
CELL_CACHE = 20_000
#: A row's released cells from agency to language, in ``RATING_COLUMNS`` order.
Head = tuple[Any, ...]


def scoped(stmt: SelectT, agency_id: str | None, until: dt.date | None) -> SelectT:
    """One agency's responses, or all; and only those answered by ``until`` (the end of the
    last released period: two row-level exports of an open month would differ by the ratings
    given in between)."""
    if agency_id:
        stmt = stmt.where(Response.agency_id == agency_id)
    if until is not None:
        stmt = stmt.where(Response.answered_on <= until)
    return stmt


class _Memo(dict[Any, Any]):
    """A bounded per-export memo of a cleaning function: a hit costs one dict lookup, and at a
    million rows the per-row cost in Python decides how long an export takes."""

    def __init__(self, make: Callable[[Any], Any]) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, raw: Any) -> Any:
        made = self.make(raw)
        if len(self) < CELL_CACHE:
            self[raw] = made
        return made


def month_of(raw: Any) -> str:
    """The month key of a stored day, as the plan's GROUP BY computes it in SQL."""
    day = raw if isinstance(raw, dt.date) else dt.date.fromisoformat(raw)
    return f"{day.year:04d}-{day.month:02d}"


# ------------------------------------------------------------------------------ codes
async def codes(
    conn: AsyncConnection, model: type[Agency | Official | Procedure]
) -> dict[Any, str]:
    """Id → cleaned code of a reference table (small: one entry per unit, not per row)."""
    found: dict[Any, str] = {None: ""}
    for key, code in await conn.execute(select(model.id, model.code)):
        found[key] = clean(code)
    return found


async def procedure_fields(conn: AsyncConnection) -> dict[Any, str]:
    """Procedure id → its field's code ('' for none)."""
    found: dict[Any, str] = {None: ""}
    for key, field_code in await conn.execute(select(Procedure.id, Procedure.field)):
        found[key] = clean(field_code or "")
    return found


@dataclass(slots=True)
class Codes:
    agencies: dict[Any, str]
    officials: dict[Any, str]
    procedures: dict[Any, str]
    #: procedure id → field code
    fields: dict[Any, str]

    @classmethod
    async def read(cls, conn: AsyncConnection) -> Codes:
        return cls(
            await codes(conn, Agency),
            await codes(conn, Official),
            await codes(conn, Procedure),
            await procedure_fields(conn),
        )

    def head(self, key: tuple[Any, ...]) -> Head:
        """A key shown as it is: the unprotected pass (``anonymise=False``, tests only)."""
        agency, survey, version, official, procedure, channel, language, period = key
        return (
            self.agencies.get(agency, ""),
            self.procedures.get(procedure, ""),
            self.fields.get(procedure, ""),
            self.officials.get(official, ""),
            clean(survey),
            version,
            period,
            clean(channel),
            clean(language),
        )


# ------------------------------------------------------------------------------ the source
@dataclass(slots=True)
class RowCounts:
    """What one pass saw: rows per cell, rows in no planned cell, rows written."""

    counts: list[int]
    unplanned: int = 0
    written: int = 0

    def add(self, other: RowCounts) -> None:
        if len(other.counts) > len(self.counts):
            self.counts += [0] * (len(other.counts) - len(self.counts))
        for i, rows in enumerate(other.counts):
            self.counts[i] += rows
        self.unplanned += other.unplanned
        self.written += other.written


class _Cells(dict[Any, int]):
    """Planned key → cell number; a key the plan never saw (a response stored after the plan's
    count) is -1: its row is dropped."""

    def __missing__(self, key: Any) -> int:
        return -1


class _Shown(dict[Any, int]):
    """The unprotected pass: every distinct key becomes a cell of its own, shown as it is."""

    def __init__(self, names: Codes, heads: list[Head | None], seen: RowCounts) -> None:
        super().__init__()
        self.names, self.heads, self.seen = names, heads, seen

    def __missing__(self, key: Any) -> int:
        self.heads.append(self.names.head(key))
        self.seen.counts.append(0)
        self[key] = len(self.heads) - 1
        return self[key]


@dataclass(slots=True)
class RatingSource:
    """Everything a pass needs, small enough to send to a worker process: the plan as two
    parallel lists (the dict is built where the rows are read), or the codes for the
    unprotected pass (``names`` set: nothing generalised, the period as requested)."""

    agency_id: str | None
    period: str
    questions: list[str]
    key: bytes
    keys: list[Any] | None
    heads: list[Head | None]
    names: Codes | None = None
    #: Only responses answered by this day (the end of the last released period).
    until: dt.date | None = None
    #: In a worker: where the parent writes questions, keys, heads and names once the plan is
    #: made (once, not pickled per worker: pickling 100,000 cells holds a memo of them all).
    plan_file: str | None = None
    seen: RowCounts = field(init=False)

    def __post_init__(self) -> None:
        self.seen = RowCounts([0] * len(self.heads))

    def index(self) -> dict[Any, int]:
        """Key → cell, built where the rows are read; the list of keys is let go then."""
        if self.plan_file is not None:
            self._receive()
        if self.names is not None:
            return _Shown(self.names, self.heads, self.seen)
        cells = _Cells()
        for i, key in enumerate(self.keys or ()):
            cells[key] = i
        self.keys = []
        if self.plan_file is not None:
            # A worker holds the plan to its end: frozen, the collector stops walking its
            # 100,000 entries again and again (about a second a million rows).
            gc.freeze()
        return cells

    def _receive(self) -> None:
        """In a worker: wait for the parent's plan (its query is open and sorted meanwhile)."""
        assert self.plan_file is not None and _PLAN_READY is not None
        _PLAN_READY.wait()
        if not os.path.exists(self.plan_file):
            raise Abandoned("the export stopped before its plan was made")
        with open(self.plan_file, "rb") as handle:
            found = pickle.load(handle)  # noqa: S301 (our own temporary file)
        self.questions, self.keys, self.heads, self.names = found
        self.seen = RowCounts([0] * len(self.heads))


class Abandoned(RuntimeError):
    """A worker whose export stopped (an error) before the plan was written."""


def _answer_cells(questions: list[str]) -> Callable[[Any], tuple[str, ...]]:
    def cells(raw: Any) -> tuple[str, ...]:
        """A response's stored answers (JSON text of {question: cell}) in header order."""
        found = json.loads(raw) if isinstance(raw, str | bytes) else raw or {}
        return tuple(clean(found.get(q, "")) for q in questions)

    return cells


def _period_keys(source: RatingSource) -> _Memo:
    if source.names is None:
        return _Memo(month_of)
    level: stats.Period = source.period  # type: ignore[assignment]

    def label(raw: Any) -> str:
        return stats.period_label(
            raw if isinstance(raw, dt.date) else dt.date.fromisoformat(raw), level
        )

    return _Memo(label)


# ------------------------------------------------------------------------------ the pass
@dataclass(frozen=True, slots=True)
class Part:
    """A share of the responses drawn afresh for each export: those whose id has (or, for the
    last part, has none of) the given hex digits at one position. Ids are random, so a part
    says nothing about when or what its raters answered."""

    position: int
    digits: tuple[str, ...]
    rest: bool = False

    def where(self) -> ColumnElement[bool]:
        digit = func.substr(Response.id, self.position, 1)
        return digit.not_in(self.digits) if self.rest else digit.in_(self.digits)


async def rating_batches(
    sessions: Sessions, source: RatingSource, part: Part | None = None
) -> AsyncIterator[list[list[Any]]]:
    """The ratings rows, one batch per database fetch, counting into ``source.seen``.

    The rows come from the response table alone: its answers are kept there as export cells,
    and everything else a row shows comes from the plan, so the database does one scan and
    the random sort.
    """
    keyed = blake2b(key=source.key, digest_size=8)  # each row hashes a copy of the keyed state
    stmt = select(
        Response.id,
        *KEY_COLUMNS,
        type_coerce(Response.answered_on, String),
        cast(Response.complete, Integer),
        Response.satisfaction,
        cast(Response.answers, Text),
    )
    stmt = scoped(stmt, source.agency_id, source.until)
    if part is not None:
        stmt = stmt.where(part.where())
    stmt = stmt.order_by(func.random())
    async with sessions() as session:
        conn = await session.connection()
        result = await conn.stream(stmt.execution_options(yield_per=BATCH))
        # The database has sorted by now; only then is the plan needed (a worker may still be
        # waiting for it: its sort ran while the plan was made).
        index = source.index()
        periods = _period_keys(source)
        answers = _Memo(_answer_cells(source.questions))
        heads = source.heads
        seen = source.seen
        counts = seen.counts
        async for batch in result.partitions(BATCH):
            rows: list[list[Any]] = []
            append = rows.append
            for (
                rid,
                agency,
                survey,
                version,
                official,
                procedure,
                channel,
                language,
                day,
                complete,
                level,
                cells,
            ) in batch:
                cell = index[
                    (agency, survey, version, official, procedure, channel, language, periods[day])
                ]
                if cell < 0:
                    seen.unplanned += 1
                    continue
                counts[cell] += 1
                head = heads[cell]
                if head is None:
                    continue
                hashed = keyed.copy()
                hashed.update(rid.encode())
                append(
                    [
                        hashed.hexdigest(),
                        *head,
                        int(complete),
                        "" if level is None else level,
                        *answers[cells],
                    ]
                )
            seen.written += len(rows)
            if rows:
                yield rows


# ------------------------------------------------------------------------------ in parallel parts
#: A row-level CSV export of at least this many responses runs in parts, one process each: at a
#: million rows the Python work per row, not the database, sets the time, and one process uses
#: one core.
PARTS_FROM_ROWS = 200_000
#: Id positions (1-based) a part may be drawn on: not a uuid4's fixed version and variant digits.
PART_POSITIONS = tuple(p for p in range(1, 33) if p not in (13, 17))
HEX = "0123456789abcdef"


def export_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


async def in_parts(sessions: Sessions, fmt: str, agency_id: str | None) -> bool:
    if fmt != "csv" or export_workers() < 2:
        return False
    return await stats.response_count(sessions, agency_id) >= PARTS_FROM_ROWS


def draw_parts(count: int) -> list[Part]:
    """``count`` parts that cover every response once, drawn afresh (position and digits).

    Each response falls in a part by a digit of its random id, independently of every other
    response; each part is shuffled on its own. Then every order of the whole export is
    equally likely, so writing the parts one after the other still leaks no order.
    """
    rng = random.SystemRandom()
    position = rng.choice(PART_POSITIONS)
    digits = rng.sample(HEX, len(HEX))
    share = len(HEX) // count
    parts = [Part(position, tuple(digits[i * share : (i + 1) * share])) for i in range(count - 1)]
    parts.append(Part(position, tuple(digits[: (count - 1) * share]), rest=True))
    return parts


def _write_part(url: str, source: RatingSource, part: Part, path: str) -> RowCounts:
    """In a worker process: one part's rows as CSV lines (no header) into ``path``."""

    async def run() -> RowCounts:
        engine = make_engine(url, read_only=True)
        try:
            # blocking is fine: a worker process whose event loop runs nothing else
            with open(path, "w", encoding="utf-8", newline="") as handle:  # noqa: ASYNC230
                writer = csv.writer(handle)
                async for batch in rating_batches(make_sessions(engine), source, part):
                    writer.writerows(batch)
        finally:
            await engine.dispose()
        return source.seen

    return asyncio.run(run())


def _dump(value: Any, path: str) -> None:
    with open(path + ".tmp", "wb") as handle:
        pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(path + ".tmp", path)


#: In a worker process: set by the parent once the plan file is written (or the export gave up).
_PLAN_READY: Any = None


def _init_worker(ready: Any) -> None:
    global _PLAN_READY
    _PLAN_READY = ready


class Parts:
    """The worker processes of one export, one per part, started before the plan exists:
    each opens its part's query at once, so the database sorts the part while the parent makes
    the plan, then waits for the plan file. ``close`` releases any worker still waiting."""

    def __init__(self, url: str, source: RatingSource, folder: str) -> None:
        context = multiprocessing.get_context("spawn")
        workers = export_workers()
        self.ready = context.Event()
        self.plan_file = os.path.join(folder, "plan.pickle")
        self.paths = [os.path.join(folder, f"part{i}.csv") for i in range(workers)]
        self.pool = ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker, initargs=(self.ready,)
        )
        waiting = replace(source, questions=[], keys=None, heads=[], plan_file=self.plan_file)
        self.futures = [
            self.pool.submit(_write_part, url, waiting, part, path)
            for part, path in zip(draw_parts(workers), self.paths, strict=True)
        ]

    async def run(self, source: RatingSource) -> list[str]:
        """Hand the plan to the workers and wait for their parts: the part files, in order;
        what they saw is added to ``source.seen``."""
        plan = (source.questions, source.keys, source.heads, source.names)
        await asyncio.to_thread(_dump, plan, self.plan_file)
        self.ready.set()
        for seen in await asyncio.gather(*(asyncio.wrap_future(f) for f in self.futures)):
            source.seen.add(seen)
        return self.paths

    def close(self) -> None:
        self.ready.set()
        self.pool.shutdown(wait=True, cancel_futures=True)


def start_parts(sessions: Sessions, source: RatingSource, folder: str) -> Parts:
    """Workers for the ratings CSV, each reading its part through a read-only engine (no write
    lock on SQLite) with the source's key."""
    url = sessions.kw["bind"].url.render_as_string(hide_password=False)
    return Parts(url, source, folder)
