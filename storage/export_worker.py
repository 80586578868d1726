"""The ratings pass over plain rows, and the worker process that writes one part of it as CSV.

Each row costs one dict lookup: its true quasi-identifiers give its cell number, the cell its
released cells (or nothing: a dropped cell); rows are counted per cell so that the plan can be
checked on what was actually written. Each export draws a fresh random key and replaces the
response id with a keyed hash of it, so two exports cannot be joined row by row; the rater
pseudonym never leaves the database.

Why a module of its own, importing only the standard library and ``storage.cells``: a worker
process (``storage.export_pass.Parts``) imports this and its database driver and nothing else.
The parent compiles the part's query (``export_pass.part_query``), so a worker needs no
SQLAlchemy: on a million rows that is about 22 MB less per worker (the memory target counts
the parent and every worker) and a second or more less start-up before its query runs. It
reads plain tuples straight from the driver (asyncpg's records on PostgreSQL, sqlite3's on a
SQLite file) and writes each row as one CSV line from pieces rendered once per cell and per
answer set, so the per-row work is a lookup, a keyed hash and one string.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import gc
import io
import json
import os
import pickle
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any

from storage.cells import clean

#: Rows a worker fetches at a time: small batches keep a worker's memory flat (a batch of
#: records and its CSV text), large enough that a fetch's round trip is a small share.
FETCH = 2000
#: Distinct values one memo keeps (days, answer sets): enough for every low-cardinality
#: column, small enough that varied answers cannot grow it without bound.
CELL_CACHE = 20_000
#: A row's released cells from agency to language, in ``RATING_COLUMNS`` order.
Head = tuple[Any, ...]
#: A response as the pass reads it: id, the seven key columns (``export_pass.KEY_COLUMNS``),
#: the day, complete (0/1), satisfaction, the answer cells as JSON text.
Row = Sequence[Any]


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


@dataclass(slots=True)
class Codes:
    """Id → cleaned code of the reference tables (``export_pass.read_codes`` reads them)."""

    agencies: dict[Any, str]
    officials: dict[Any, str]
    procedures: dict[Any, str]
    #: procedure id → field code
    fields: dict[Any, str]

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


class Abandoned(RuntimeError):
    """A worker whose export stopped (an error) before the plan was written."""


#: In a worker process: set by the parent once the plan file is written (or the export gave up).
_PLAN_READY: Any = None


def init_worker(ready: Any) -> None:
    global _PLAN_READY
    _PLAN_READY = ready


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


def _answer_cells(questions: list[str]) -> Callable[[Any], tuple[str, ...]]:
    def cells(raw: Any) -> tuple[str, ...]:
        """A response's stored answers (JSON text of {question: cell}) in header order."""
        found = json.loads(raw) if isinstance(raw, str | bytes) else raw or {}
        return tuple(clean(found.get(q, "")) for q in questions)

    return cells


def _period_keys(source: RatingSource) -> _Memo:
    if source.names is None:
        return _Memo(month_of)
    # The unprotected pass (tests only) shows the period as asked, a day or a week too.
    from storage import stats

    level: stats.Period = source.period  # type: ignore[assignment]

    def label(raw: Any) -> str:
        return stats.period_label(
            raw if isinstance(raw, dt.date) else dt.date.fromisoformat(raw), level
        )

    return _Memo(label)


# ------------------------------------------------------------------------------ the pass
def csv_text(cells: Sequence[Any]) -> str:
    """Cells as csv.writer writes them in a row, without the line's end: the pieces a CSV line
    is joined from are rendered by the writer itself, so quoting is the writer's own."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow(cells)
    return buffer.getvalue()[:-2]


class _HeadTexts(dict[int, str | None]):
    """Cell number → its released cells as CSV text (None: a dropped cell), rendered once per
    released combination: the cells of one combination share its head, and its text."""

    def __init__(self, heads: list[Head | None]) -> None:
        super().__init__()
        self.heads = heads
        self.texts: dict[int, str] = {}  # by the shared head's id (the heads list keeps it)

    def __missing__(self, cell: int) -> str | None:
        head = self.heads[cell]
        if head is None:
            text = None
        elif (text := self.texts.get(id(head))) is None:
            text = self.texts[id(head)] = csv_text(head)
        self[cell] = text
        return text


class RatingPass:
    """One pass through the plan: rows in, ratings rows (or CSV text) out, every row counted
    into ``source.seen``. Built when the first rows have arrived: a worker's query has been
    sorted by then, and only then is the plan needed (its sort ran while the plan was made)."""

    def __init__(self, source: RatingSource) -> None:
        self.index = source.index()
        self.seen = source.seen
        self.heads = source.heads
        self.keyed = blake2b(key=source.key, digest_size=8)  # each row hashes a copy
        self.periods = _period_keys(source)
        cells = _answer_cells(source.questions)
        self.answers = _Memo(cells)
        # The answers as the end of a CSV line: "" without questions, else ",a,b,…" (a leading
        # empty cell keeps a lone empty answer from being written as '""').
        has_questions = bool(source.questions)
        self.answer_texts = _Memo(lambda raw: csv_text(("", *cells(raw))) if has_questions else "")
        self.head_texts = _HeadTexts(self.heads)

    def rows(self, batch: Sequence[Row]) -> list[list[Any]]:
        """The ratings rows of a batch, as lists of cells (any format)."""
        index, periods, heads, answers = self.index, self.periods, self.heads, self.answers
        seen, counts, keyed = self.seen, self.seen.counts, self.keyed
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
        return rows

    def csv_lines(self, batch: Sequence[Row]) -> str:
        """The same rows as CSV lines (what ``rows`` gives, written by csv.writer), joined."""
        index, periods, texts, answers = (
            self.index,
            self.periods,
            self.head_texts,
            self.answer_texts,
        )
        seen, counts, keyed = self.seen, self.seen.counts, self.keyed
        lines: list[str] = []
        append = lines.append
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
            head = texts[cell]
            if head is None:
                continue
            hashed = keyed.copy()
            hashed.update(rid.encode())
            append(
                f"{hashed.hexdigest()},{head},{complete:d},"
                f"{'' if level is None else level}{answers[cells]}\r\n"
            )
        seen.written += len(lines)
        return "".join(lines)


# ------------------------------------------------------------------------------ one part
@dataclass(frozen=True, slots=True)
class PartQuery:
    """One part's query as its driver takes it, compiled by the parent: the dialect's SQL text,
    its positional parameters, and how to connect (a SQLite file's path, or asyncpg's
    ``connect`` arguments)."""

    dialect: str
    sql: str
    params: tuple[Any, ...]
    connect: dict[str, Any]


def write_part(query: PartQuery, source: RatingSource, path: str) -> RowCounts:
    """In a worker process: one part's rows as CSV lines (no header) into ``path``."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        if query.dialect == "sqlite":
            batches = _sqlite_batches(query)
            first = next(batches, [])
            ratings = RatingPass(source)
            handle.write(ratings.csv_lines(first))
            for batch in batches:
                handle.write(ratings.csv_lines(batch))
        else:
            asyncio.run(_write_pg(query, source, handle))
    return source.seen


def _sqlite_batches(query: PartQuery) -> Iterator[list[Any]]:
    """A deferred read transaction on the file: it takes no write lock, so the bot keeps
    writing, and the part reads one snapshot (WAL)."""
    conn = sqlite3.connect(query.connect["database"], timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN")
        cursor = conn.execute(query.sql, query.params)
        while batch := cursor.fetchmany(FETCH):
            yield batch
        conn.execute("COMMIT")
    finally:
        conn.close()


async def _write_pg(query: PartQuery, source: RatingSource, handle: io.TextIOBase) -> None:
    ratings: RatingPass | None = None
    async for batch in _pg_batches(query):
        if ratings is None:
            ratings = RatingPass(source)
        handle.write(ratings.csv_lines(batch))
    if ratings is None:  # no rows in this part: the plan is still received and counted
        RatingPass(source)


async def _pg_batches(query: PartQuery) -> AsyncIterator[list[Any]]:
    """A server-side cursor in a read-only transaction, fetched in batches of plain records."""
    import asyncpg  # the driver alone: no SQLAlchemy in a worker

    conn = await asyncpg.connect(**query.connect)
    try:
        async with conn.transaction(readonly=True):
            cursor = await conn.cursor(query.sql, *query.params)
            while batch := await cursor.fetch(FETCH):
                yield batch
    finally:
        await conn.close()
