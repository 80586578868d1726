"""Anonymised exports: row-level responses and suppressed aggregates, as CSV, XLSX or JSON Lines.

Row level. Each export draws a fresh random key and replaces the response id with a keyed hash
of it, so two exports cannot be joined row by row; the rater pseudonym never leaves the
database. Rows come out ordered by that keyed hash, which is a shuffle the database does for us
(no export needs all rows in Python memory) and which differs between exports. Dates are
coarsened to the export's period, and a text cell a spreadsheet would run as a formula is
neutralised. Rows stream from a server-side cursor in batches, so memory stays bounded at any
size.

Aggregate levels (agency, official, procedure, criterion, period) come from ``storage.stats``,
with small cells and their complements suppressed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import IO, Any, Literal

from sqlalchemy import Text, case, cast, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from storage import stats
from storage.db import Sessions
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


def _answer_text(raw: str | None) -> str:
    """A stored answer (free text, or the JSON text of an option value) as one cell."""
    if raw is None or raw == "null":
        return ""
    if raw.startswith('"') and raw.endswith('"') and "\\" not in raw:
        return raw[1:-1]
    if raw.startswith(('"', "[", "{")):
        try:
            value = json.loads(raw)
        except ValueError:
            return raw
        return "|".join(map(str, value)) if isinstance(value, list) else str(value)
    return raw


# ------------------------------------------------------------------------------ row level
def _keyed_hash_sql(conn: AsyncConnection, key: bytes) -> Callable[[Any], Any]:
    """SQL for the per-export keyed hash of a response id, on either database."""
    if conn.dialect.name == "postgresql":
        return lambda column: func.substr(func.md5(literal(key.hex()) + column), 1, 16)
    return lambda column: func.surveybot_export_hash(column)


async def _register_sqlite_hash(conn: AsyncConnection, key: bytes) -> None:
    """SQLite has no keyed hash: give this connection one, closed over this export's key."""

    def keyed(value: str) -> str:
        return hashlib.blake2b(value.encode(), key=key, digest_size=8).hexdigest()

    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    await driver.create_function("surveybot_export_hash", 1, keyed, deterministic=True)


async def question_ids(conn: AsyncConnection, agency_id: str | None) -> list[str]:
    stmt = select(Answer.question_id).distinct()
    if agency_id:
        stmt = stmt.join(Response, Response.id == Answer.response_id).where(
            Response.agency_id == agency_id
        )
    return sorted(q for (q,) in await conn.execute(stmt))


async def response_table(sessions: Sessions, spec: ExportSpec) -> AsyncIterator[list[Any]]:
    """Yield the header, then every anonymised row, in keyed-hash (shuffled) order."""
    key = os.urandom(32)
    official = aliased(Official)
    procedure = aliased(Procedure)
    period: Period = spec.period  # type: ignore[assignment]
    async with sessions() as session:
        conn = await session.connection()
        if conn.dialect.name == "sqlite":
            await _register_sqlite_hash(conn, key)
        questions = await question_ids(conn, spec.agency_id)
        yield BASE_COLUMNS + [f"q_{q}" for q in questions]
        pseudonym = _keyed_hash_sql(conn, key)(Response.id).label("pseudonym")
        answer_value = func.coalesce(Answer.text, cast(Answer.value, Text))
        pivot = [
            func.max(case((Answer.question_id == q, answer_value))).label(f"q{i}")
            for i, q in enumerate(questions)
        ]
        stmt = (
            select(
                pseudonym,
                Agency.code,
                procedure.code,
                official.code,
                Response.survey_id,
                Response.survey_version,
                Response.answered_on,
                Response.channel,
                Response.language,
                Response.complete,
                Response.satisfaction,
                Response.score18,
                Response.classification,
                *pivot,
            )
            .select_from(Response)
            .join(Agency, Agency.id == Response.agency_id)
            .outerjoin(procedure, procedure.id == Response.procedure_id)
            .outerjoin(official, official.id == Response.official_id)
            .outerjoin(Answer, Answer.response_id == Response.id)
            .group_by(Response.id, Agency.id, procedure.id, official.id)
            .order_by(pseudonym)
        )
        if spec.agency_id:
            stmt = stmt.where(Response.agency_id == spec.agency_id)
        result = await conn.stream(stmt.execution_options(yield_per=BATCH))
        labels: dict[Any, str] = {}
        n_base = len(BASE_COLUMNS)
        async for batch in result.partitions(BATCH):
            for r in batch:
                day = r[6]
                label = labels.get(day)
                if label is None:
                    label = labels[day] = period_label(day, period)
                row: list[Any] = [
                    r[0],
                    r[1],
                    r[2] or "",
                    r[3] or "",
                    r[4],
                    r[5],
                    label,
                    r[7],
                    r[8],
                    int(r[9]),
                    r[10] if r[10] is not None else "",
                    r[11] if r[11] is not None else "",
                    r[12] or "",
                ]
                row += [_answer_text(v) for v in r[n_base:]]
                yield [neutralise(v) for v in row]


# ------------------------------------------------------------------------------ aggregates
async def aggregate_rows(
    sessions: Sessions, spec: ExportSpec, thresholds: Thresholds
) -> tuple[list[str], list[list[Any]]]:
    """Suppressed aggregates: a cell under k shows its label and status only."""
    period: Period = spec.period  # type: ignore[assignment]
    if spec.level == "criterion":
        rows: list[list[Any]] = []
        for s in await stats.criteria_stats(sessions, thresholds, spec.agency_id):
            rows.append(
                [
                    s.agency,
                    s.criterion,
                    s.scored,
                    _blank(s.mean_points),
                    _pct(s.zero_share),
                    _pct(s.zero_share_dissatisfied),
                    s.dissatisfied if not s.suppressed else "",
                    stats.NOT_ENOUGH if s.suppressed else "",
                ]
            )
        return CRITERION_COLUMNS, rows
    cells = await stats.unit_cells(
        sessions,
        spec.level,  # type: ignore[arg-type]
        thresholds,
        spec.agency_id,
        period,
    )
    header = list(AGGREGATE_COLUMNS)
    if spec.level == "period":
        header[1] = "period"
    rows = []
    for c in cells:
        agency = c.key if spec.level == "agency" else c.parent
        rows.append(
            [
                agency,
                c.key,
                c.label,
                c.responses if c.shown else "",
                c.rated if c.shown else "",
                c.satisfied if c.shown else "",
                _pct(c.rate),
                _pct(c.low),
                _pct(c.high),
                c.band,
                c.rank or "",
                _blank(c.avg_score18),
                "" if c.shown else f"{stats.NOT_ENOUGH} ({c.suppressed})",
            ]
        )
    return header, [[neutralise(v) for v in row] for row in rows]


def _pct(value: float | None) -> Any:
    return "" if value is None else round(value, 1)


def _blank(value: Any) -> Any:
    return "" if value is None else value


async def table(
    sessions: Sessions, spec: ExportSpec, thresholds: Thresholds
) -> AsyncIterator[list[Any]]:
    """Header first, then rows, for any level."""
    if spec.level == "responses":
        async for row in response_table(sessions, spec):
            yield row
        return
    header, rows = await aggregate_rows(sessions, spec, thresholds)
    yield header
    for row in rows:
        yield row


# ------------------------------------------------------------------------------ writers
async def write_export(
    sessions: Sessions, spec: ExportSpec, thresholds: Thresholds, out: IO[bytes]
) -> int:
    """Write the export to a binary stream; returns the number of data rows."""
    counted = 0

    async def counting() -> AsyncIterator[list[Any]]:
        nonlocal counted
        async for row in table(sessions, spec, thresholds):
            counted += 1
            yield row

    if spec.fmt == "xlsx":
        await _write_xlsx(counting(), out)
    else:
        async for chunk in _text_chunks(counting(), spec.fmt):
            out.write(chunk)
    return max(counted - 1, 0)


async def _text_chunks(rows: AsyncIterator[list[Any]], fmt: str) -> AsyncIterator[bytes]:
    """CSV (with BOM, so Excel reads UTF-8 Vietnamese) or JSON Lines, a few thousand rows a chunk."""
    header = await anext(rows)
    buffer = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(buffer)
        buffer.write("\ufeff")
        writer.writerow(header)
    pending = 0
    async for row in rows:
        if fmt == "csv":
            writer.writerow(row)
        else:
            buffer.write(json.dumps(dict(zip(header, row, strict=True)), ensure_ascii=False))
            buffer.write("\n")
        pending += 1
        if pending >= BATCH:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue().encode("utf-8")


async def stream_export(
    sessions: Sessions, spec: ExportSpec, thresholds: Thresholds
) -> AsyncIterator[bytes]:
    """Chunks for an HTTP response; XLSX goes through a temporary file (a zip needs seeking)."""
    if spec.fmt != "xlsx":
        async for chunk in _text_chunks(table(sessions, spec, thresholds), spec.fmt):
            yield chunk
        return
    with tempfile.TemporaryFile() as handle:
        await _write_xlsx(table(sessions, spec, thresholds), handle)
        handle.seek(0)
        while chunk := handle.read(1 << 16):
            yield chunk


async def _write_xlsx(rows: AsyncIterator[list[Any]], out: IO[bytes]) -> int:
    """openpyxl's write-only mode streams rows to disk; a new sheet every million rows."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    header = await anext(rows)
    sheet: Any = None
    count = 0
    async for row in rows:
        if count % XLSX_SHEET_ROWS == 0:
            sheet = workbook.create_sheet(f"data{count // XLSX_SHEET_ROWS + 1}")
            sheet.append(header)
        sheet.append([_ILLEGAL_XML.sub("", v) if isinstance(v, str) else v for v in row])
        count += 1
    if sheet is None:
        workbook.create_sheet("data1").append(header)
    workbook.save(out)
    return count


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
    out.write("\ufeff")
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)


async def export_csv(sessions: Sessions, period: Period = "month") -> str:
    header, rows = await response_rows(sessions, period)
    buffer = io.StringIO()
    write_csv(buffer, header, rows)
    return buffer.getvalue()
