"""Anonymised exports: row-level responses and suppressed aggregates, as CSV, XLSX or JSON Lines.

Row level. Each export draws a fresh random key and replaces the response id with a keyed hash
of it, so two exports cannot be joined row by row; the rater pseudonym never leaves the
database. Rows come out in a fresh random order the database draws (``ORDER BY random()``), so
no export needs all rows in Python memory and two exports cannot be aligned by position. Dates are
coarsened to the export's period, and a text cell a spreadsheet would run as a formula is
neutralised. Rows stream from a server-side cursor in batches, so memory stays bounded at any
size. A CSV of 200,000 responses or more is written by one worker process per core, each over
a fresh random part of the responses (``draw_parts``), because at that size the Python work per
row, not the database, sets the time.

Aggregate levels (agency, official, procedure, criterion, period) come from ``storage.stats``,
with small cells and their complements suppressed.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import multiprocessing
import os
import random
import re
import tempfile
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from hashlib import blake2b
from typing import IO, Any, Literal

from sqlalchemy import Integer, String, Text, cast, func, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from storage import stats
from storage.db import Sessions, make_engine, make_sessions
from storage.models import Agency, Answer, Official, Procedure, Response
from storage.stats import Period, Thresholds, period_label

Format = Literal["csv", "xlsx", "jsonl"]
Level = Literal["responses", "agency", "official", "procedure", "criterion", "period"]
FORMATS: tuple[str, ...] = ("csv", "xlsx", "jsonl")
LEVELS: tuple[str, ...] = ("responses", "agency", "official", "procedure", "criterion", "period")
PERIODS: tuple[str, ...] = ("day", "week", "month", "quarter", "year")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
BASE_COLUMNS = [
    "response",
    "agency",
    "procedure",
    "official",
    "survey",
    "survey_version",
    "period",
    "channel",
    "language",
    "complete",
    "satisfaction",
    "score18",
    "classification",
]
AGGREGATE_COLUMNS = [
    "agency",
    "unit",
    "name",
    "responses",
    "rated",
    "satisfied",
    "rate_pct",
    "wilson_low_pct",
    "wilson_high_pct",
    "band",
    "rank",
    "avg_score18",
    "status",
]
CRITERION_COLUMNS = [
    "agency",
    "criterion",
    "scored",
    "mean_points",
    "zero_pct",
    "zero_pct_dissatisfied",
    "dissatisfied",
    "status",
]
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
BATCH = 5000
XLSX_SHEET_ROWS = 1_000_000  # Excel's hard limit is 1,048,576 rows a sheet
_ILLEGAL_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


class ExportError(ValueError):
    """A request for an export that cannot be made (unknown level, format or period)."""


@dataclass(frozen=True, slots=True)
class ExportSpec:
    level: str = "responses"
    fmt: str = "csv"
    period: str = "month"
    #: Restrict to one agency (an agency viewer's exports always are).
    agency_id: str | None = None

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("level", self.level, LEVELS),
            ("format", self.fmt, FORMATS),
            ("period", self.period, PERIODS),
        ):
            if value not in allowed:
                raise ExportError(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")

    @property
    def filename(self) -> str:
        return f"surveybot-{self.level}-{self.period}.{self.fmt}"


def neutralise(value: Any) -> Any:
    """Prefix a quote to text that a spreadsheet would evaluate (formula injection)."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


# ------------------------------------------------------------------------------ row level
def row_header(questions: list[str]) -> list[str]:
    return BASE_COLUMNS + [f"q_{q}" for q in questions]


async def question_ids(conn: AsyncConnection, agency_id: str | None) -> list[str]:
    stmt = select(Answer.question_id).distinct()
    if agency_id:
        stmt = stmt.join(Response, Response.id == Answer.response_id).where(
            Response.agency_id == agency_id
        )
    return sorted(q for (q,) in await conn.execute(stmt))


async def _codes(
    conn: AsyncConnection, model: type[Agency | Official | Procedure]
) -> dict[Any, str]:
    """Id → neutralised code of a reference table (small: one entry per unit, not per row)."""
    codes: dict[Any, str] = {None: ""}
    for key, code in await conn.execute(select(model.id, model.code)):
        codes[key] = neutralise(code)
    return codes


async def response_table(sessions: Sessions, spec: ExportSpec) -> AsyncIterator[list[Any]]:
    """Yield the header, then every anonymised row, in a fresh random order."""
    async for batch in response_batches(sessions, spec):
        for row in batch:
            yield row


#: Distinct values one memo keeps (survey ids, channels, days, answer sets): enough for every
#: low-cardinality column, small enough that free-text answers cannot grow it without bound.
CELL_CACHE = 20_000


class _Memo(dict[Any, Any]):
    """A bounded per-export memo of a cleaning function: a hit costs one dict lookup, and at a
    million rows the per-row cost in Python decides how long an export takes."""

    def __init__(self, clean: Callable[[Any], Any]) -> None:
        super().__init__()
        self.clean = clean

    def __missing__(self, raw: Any) -> Any:
        cleaned = self.clean(raw)
        if len(self) < CELL_CACHE:
            self[raw] = cleaned
        return cleaned


def _text_cell(raw: Any) -> Any:
    return "" if raw is None else neutralise(raw)


def _day_cells(period: Period) -> Callable[[Any], str]:
    def label(raw: Any) -> str:
        return period_label(raw if isinstance(raw, dt.date) else dt.date.fromisoformat(raw), period)

    return label


def _answer_cells(questions: list[str]) -> Callable[[Any], tuple[str, ...]]:
    def cells(raw: Any) -> tuple[str, ...]:
        """A response's stored answers (JSON text of {question: cell}) in header order."""
        found = json.loads(raw) if isinstance(raw, str | bytes) else raw or {}
        return tuple(neutralise(found.get(q, "")) for q in questions)

    return cells


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


async def response_batches(
    sessions: Sessions,
    spec: ExportSpec,
    *,
    questions: list[str] | None = None,
    key: bytes | None = None,
    part: Part | None = None,
) -> AsyncIterator[list[list[Any]]]:
    """The header (a batch of one row), then anonymised rows, one batch per database fetch.

    ``questions``, ``key`` and ``part`` let the workers of a parallel export share one header
    and one pseudonym key, each reading its own part.

    The rows come from the response table alone: its answers are kept there as export cells and
    the codes of agencies, officials and procedures are looked up in memory, so the database does
    one scan and the random sort.
    """
    period: Period = spec.period  # type: ignore[assignment]
    # Keyed once; each row hashes a copy (the key block is not compressed again per row).
    keyed = blake2b(key=key or os.urandom(32), digest_size=8)
    async with sessions() as session:
        conn = await session.connection()
        if questions is None:
            questions = await question_ids(conn, spec.agency_id)
        agencies = await _codes(conn, Agency)
        officials = await _codes(conn, Official)
        procedures = await _codes(conn, Procedure)
        yield [row_header(questions)]
        # Raw column values, with no per-row type conversion: they are only ever memo keys
        # (the answers as JSON text: the PostgreSQL driver would otherwise decode every row).
        stmt = select(
            Response.id,
            Response.agency_id,
            Response.procedure_id,
            Response.official_id,
            Response.survey_id,
            Response.survey_version,
            type_coerce(Response.answered_on, String),
            Response.channel,
            Response.language,
            type_coerce(Response.complete, Integer),
            Response.satisfaction,
            Response.score18,
            Response.classification,
            cast(Response.answers, Text),
        )
        if spec.agency_id:
            stmt = stmt.where(Response.agency_id == spec.agency_id)
        if part is not None:
            stmt = stmt.where(part.where())
        # A fresh random order per export (the database's own random(), no per-row callback):
        # two exports cannot be aligned by row position, and no order follows answering time.
        stmt = stmt.order_by(func.random())
        result = await conn.stream(stmt.execution_options(yield_per=BATCH))
        text = _Memo(_text_cell)
        days = _Memo(_day_cells(period))
        answers = _Memo(_answer_cells(questions))
        async for batch in result.partitions(BATCH):
            rows: list[list[Any]] = []
            append = rows.append
            for (
                rid,
                agency,
                proc,
                off,
                survey,
                version,
                day,
                channel,
                language,
                complete,
                level,
                score,
                grade,
                cells,
            ) in batch:
                hashed = keyed.copy()
                hashed.update(rid.encode())
                append(
                    [
                        hashed.hexdigest(),
                        agencies.get(agency, ""),
                        procedures.get(proc, ""),
                        officials.get(off, ""),
                        text[survey],
                        version,
                        days[day],
                        text[channel],
                        text[language],
                        int(complete),
                        "" if level is None else level,
                        "" if score is None else score,
                        text[grade],
                        *answers[cells],
                    ]
                )
            yield rows


# ------------------------------------------------------------------------------ aggregates
async def aggregate_rows(
    sessions: Sessions, spec: ExportSpec, thresholds: Thresholds
) -> tuple[list[str], list[list[Any]]]:
    """Aggregates from the latest release (``storage.aggregates``), every cell neutralised."""
    from storage import aggregates

    wanted = aggregates.AggregateSpec(spec.level, None, spec.agency_id)
    header, rows = await aggregates.aggregate_table(sessions, wanted, thresholds)
    return header, [[neutralise(v) for v in row] for row in rows]


def _pct(value: float | None) -> Any:
    return "" if value is None else round(value, 1)


def _blank(value: Any) -> Any:
    return "" if value is None else value


async def table_batches(
    sessions: Sessions, spec: ExportSpec, thresholds: Thresholds
) -> AsyncIterator[list[list[Any]]]:
    """The header as a batch of one row, then the rows in batches, for any level."""
    if spec.level == "responses":
        async for batch in response_batches(sessions, spec):
            yield batch
        return
    header, rows = await aggregate_rows(sessions, spec, thresholds)
    yield [header]
    for first in range(0, len(rows), BATCH):
        yield rows[first : first + BATCH]


async def table(
    sessions: Sessions, spec: ExportSpec, thresholds: Thresholds
) -> AsyncIterator[list[Any]]:
    """Header first, then rows, for any level."""
    async for batch in table_batches(sessions, spec, thresholds):
        for row in batch:
            yield row


# ------------------------------------------------------------------------------ writers
async def write_export(
    sessions: Sessions, spec: ExportSpec, thresholds: Thresholds, out: IO[bytes]
) -> int:
    """Write the export to a binary stream; returns the number of data rows."""
    counted = 0

    async def counting() -> AsyncIterator[list[list[Any]]]:
        nonlocal counted
        async for batch in table_batches(sessions, spec, thresholds):
            counted += len(batch)
            yield batch

    if await _in_parts(sessions, spec):
        async for chunk, rows in _csv_in_parts(sessions, spec):
            out.write(chunk)
            counted += rows
        return counted
    if spec.fmt == "xlsx":
        await _write_xlsx(counting(), out)
    else:
        async for chunk in _text_chunks(counting(), spec.fmt):
            out.write(chunk)
    return max(counted - 1, 0)


async def _header(batches: AsyncIterator[list[list[Any]]]) -> list[Any]:
    first = await anext(batches)
    return first[0]


async def _text_chunks(batches: AsyncIterator[list[list[Any]]], fmt: str) -> AsyncIterator[bytes]:
    """CSV (with BOM, so Excel reads UTF-8 Vietnamese) or JSON Lines, one chunk a batch."""
    header = await _header(batches)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if fmt == "csv":
        buffer.write(csv_header(header))
    async for batch in batches:
        if fmt == "csv":
            writer.writerows(batch)
        else:
            for row in batch:
                buffer.write(json.dumps(dict(zip(header, row, strict=True)), ensure_ascii=False))
                buffer.write("\n")
        yield buffer.getvalue().encode("utf-8")
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue().encode("utf-8")


async def stream_export(
    sessions: Sessions, spec: ExportSpec, thresholds: Thresholds
) -> AsyncIterator[bytes]:
    """Chunks for an HTTP response; XLSX goes through a temporary file (a zip needs seeking)."""
    if await _in_parts(sessions, spec):
        async for chunk, _ in _csv_in_parts(sessions, spec):
            yield chunk
        return
    if spec.fmt != "xlsx":
        async for chunk in _text_chunks(table_batches(sessions, spec, thresholds), spec.fmt):
            yield chunk
        return
    with tempfile.TemporaryFile() as handle:
        await _write_xlsx(table_batches(sessions, spec, thresholds), handle)
        handle.seek(0)
        while chunk := handle.read(1 << 16):
            yield chunk


async def _write_xlsx(batches: AsyncIterator[list[list[Any]]], out: IO[bytes]) -> int:
    """openpyxl's write-only mode streams rows to disk; a new sheet every million rows."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    header = await _header(batches)
    sheet: Any = None
    count = 0
    async for batch in batches:
        for row in batch:
            if count % XLSX_SHEET_ROWS == 0:
                sheet = workbook.create_sheet(f"data{count // XLSX_SHEET_ROWS + 1}")
                sheet.append(header)
            sheet.append([_ILLEGAL_XML.sub("", v) if isinstance(v, str) else v for v in row])
            count += 1
    if sheet is None:
        workbook.create_sheet("data1").append(header)
    workbook.save(out)
    return count


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


async def _in_parts(sessions: Sessions, spec: ExportSpec) -> bool:
    if spec.level != "responses" or spec.fmt != "csv" or export_workers() < 2:
        return False
    return await stats.response_count(sessions, spec.agency_id) >= PARTS_FROM_ROWS


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


def _write_part(
    url: str, spec: ExportSpec, questions: list[str], key: bytes, part: Part, path: str
) -> int:
    """In a worker process: one part's rows as CSV lines (no header) into ``path``."""

    async def run() -> int:
        engine = make_engine(url, read_only=True)
        count = 0
        try:
            batches = response_batches(
                make_sessions(engine), spec, questions=questions, key=key, part=part
            )
            await anext(batches)  # the header: the parent writes it once
            # blocking is fine: a worker process whose event loop runs nothing else
            with open(path, "w", encoding="utf-8", newline="") as handle:  # noqa: ASYNC230
                writer = csv.writer(handle)
                async for batch in batches:
                    writer.writerows(batch)
                    count += len(batch)
        finally:
            await engine.dispose()
        return count

    return asyncio.run(run())


async def _csv_in_parts(sessions: Sessions, spec: ExportSpec) -> AsyncIterator[tuple[bytes, int]]:
    """A row-level CSV written by one process per part, then streamed part after part.

    Each worker reads its part through a read-only engine (no write lock on SQLite) and
    writes it to a temporary file; the parts share the export's header and pseudonym key.
    Yields (chunk, rows in it).
    """
    engine = sessions.kw["bind"]
    url = engine.url.render_as_string(hide_password=False)
    async with sessions() as session:
        questions = await question_ids(await session.connection(), spec.agency_id)
    yield csv_header(row_header(questions)).encode("utf-8"), 0
    key = os.urandom(32)
    workers = export_workers()
    loop = asyncio.get_running_loop()
    with (
        tempfile.TemporaryDirectory(prefix="surveybot-export-") as folder,
        ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool,
    ):
        paths = [os.path.join(folder, f"part{i}.csv") for i in range(workers)]
        counts = await asyncio.gather(
            *(
                loop.run_in_executor(pool, _write_part, url, spec, questions, key, part, path)
                for part, path in zip(draw_parts(workers), paths, strict=True)
            )
        )
        for path, count in zip(paths, counts, strict=True):
            with open(path, "rb") as handle:  # noqa: ASYNC230 (a local temporary file)
                while chunk := await asyncio.to_thread(handle.read, 1 << 20):
                    yield chunk, 0
            yield b"", count


# ------------------------------------------------------------------------------ compatibility
async def response_rows(
    sessions: Sessions, period: Period = "month"
) -> tuple[list[str], list[list[Any]]]:
    """Header and all shuffled rows in memory: for tests and small exports only."""
    rows = response_table(sessions, ExportSpec(period=period))
    header = await anext(rows)
    return header, [row async for row in rows]


def write_csv(out: IO[str], header: list[str], rows: Any) -> None:
    """UTF-8 with BOM so Excel shows Vietnamese correctly."""
    out.write(csv_header(header))
    csv.writer(out).writerows(rows)


def csv_header(header: list[Any]) -> str:
    """The BOM (so Excel reads UTF-8 Vietnamese) and the header line every CSV starts with."""
    line = io.StringIO()
    line.write("\ufeff")
    csv.writer(line).writerow(header)
    return line.getvalue()


async def export_csv(sessions: Sessions, period: Period = "month") -> str:
    header, rows = await response_rows(sessions, period)
    buffer = io.StringIO()
    write_csv(buffer, header, rows)
    return buffer.getvalue()
