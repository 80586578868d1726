"""Anonymised exports: row-level responses and suppressed aggregates, as CSV, XLSX or JSON Lines.

Row level. Each export draws a fresh random key and replaces the response id with a keyed hash
of it, so two exports cannot be joined row by row; the rater pseudonym never leaves the
database. Rows come out in a fresh random order the database draws (``ORDER BY random()``), so
no export needs all rows in Python memory and two exports cannot be aligned by position. Dates are
coarsened to the export's period, and a text cell a spreadsheet would run as a formula is
neutralised. Rows stream from a server-side cursor in batches, so memory stays bounded at any
size.

Aggregate levels (agency, official, procedure, criterion, period) come from ``storage.stats``,
with small cells and their complements suppressed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from hashlib import blake2b
from typing import IO, Any, Literal

from sqlalchemy import Text, case, cast, func, select
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
async def question_ids(conn: AsyncConnection, agency_id: str | None) -> list[str]:
    stmt = select(Answer.question_id).distinct()
    if agency_id:
        stmt = stmt.join(Response, Response.id == Answer.response_id).where(
            Response.agency_id == agency_id
        )
    return sorted(q for (q,) in await conn.execute(stmt))


async def response_table(sessions: Sessions, spec: ExportSpec) -> AsyncIterator[list[Any]]:
    """Yield the header, then every anonymised row, in keyed-hash (shuffled) order."""
    async for batch in response_batches(sessions, spec):
        for row in batch:
            yield row


#: Distinct cell values one export remembers (codes, channels, option answers): enough for every
#: low-cardinality column, small enough that free-text answers cannot grow it without bound.
CELL_CACHE = 20_000


class _Cells:
    """Per-export memo of the cleaned form of a text cell (it repeats across a million rows)."""

    __slots__ = ("answers", "plain")

    def __init__(self) -> None:
        self.plain: dict[Any, Any] = {None: ""}
        self.answers: dict[Any, Any] = {None: ""}

    def plain_cell(self, value: Any) -> Any:
        cleaned = neutralise(value)
        if len(self.plain) < CELL_CACHE:
            self.plain[value] = cleaned
        return cleaned

    def answer_cell(self, value: Any) -> Any:
        cleaned = neutralise(_answer_text(value))
        if len(self.answers) < CELL_CACHE:
            self.answers[value] = cleaned
        return cleaned


async def response_batches(sessions: Sessions, spec: ExportSpec) -> AsyncIterator[list[list[Any]]]:
    """The header (a batch of one row), then anonymised rows, one batch per database fetch.

    At a million rows the per-row cost in Python, not the database, decides how long an export
    takes, so each batch is built by one tight loop over plain tuples, and text cells (codes,
    channels, option answers) are cleaned once per distinct value.
    """
    key = os.urandom(32)
    official = aliased(Official)
    procedure = aliased(Procedure)
    period: Period = spec.period  # type: ignore[assignment]
    async with sessions() as session:
        conn = await session.connection()
        questions = await question_ids(conn, spec.agency_id)
        yield [BASE_COLUMNS + [f"q_{q}" for q in questions]]
        answer_value = func.coalesce(Answer.text, cast(Answer.value, Text))
        # Answers pivoted by one grouped join (a sequential pass over the answer index), then
        # the whole row sorted by this export's keyed hash: measured at 1M rows, far cheaper
        # than one correlated lookup per question per row.
        pivoted = (
            select(
                Response.id.label("rid"),
                Agency.code.label("agency"),
                procedure.code.label("procedure"),
                official.code.label("official"),
                Response.survey_id,
                Response.channel,
                Response.language,
                Response.classification,
                Response.survey_version,
                Response.answered_on,
                Response.complete,
                Response.satisfaction,
                Response.score18,
                *[
                    func.max(case((Answer.question_id == q, answer_value))).label(f"q{i}")
                    for i, q in enumerate(questions)
                ],
            )
            .select_from(Response)
            .join(Agency, Agency.id == Response.agency_id)
            .outerjoin(procedure, procedure.id == Response.procedure_id)
            .outerjoin(official, official.id == Response.official_id)
            .outerjoin(Answer, Answer.response_id == Response.id)
            .group_by(Response.id, Agency.code, procedure.code, official.code)
        )
        if spec.agency_id:
            pivoted = pivoted.where(Response.agency_id == spec.agency_id)
        # A fresh random order per export (the database's own random(), no per-row callback):
        # two exports cannot be aligned by row position, and no order follows answering time.
        stmt = pivoted.order_by(func.random())
        result = await conn.stream(stmt.execution_options(yield_per=BATCH))
        labels: dict[Any, str] = {}
        cells = _Cells()
        plain, plain_cell = cells.plain, cells.plain_cell
        answers, answer_cell = cells.answers, cells.answer_cell
        missing = object()
        async for batch in result.partitions(BATCH):
            rows: list[list[Any]] = []
            for r in batch:
                # r: pseudonym, 7 text columns, version, day, complete, satisfaction, score, answers
                text = [plain.get(v, missing) for v in r[1:8]]
                if missing in text:
                    text = [
                        plain_cell(v) if t is missing else t
                        for v, t in zip(r[1:8], text, strict=True)
                    ]
                agency, proc, off, survey, channel, language, classification = text
                label = labels.get(r[9])
                if label is None:
                    label = labels[r[9]] = period_label(r[9], period)
                row = [
                    blake2b(r[0].encode(), key=key, digest_size=8).hexdigest(),
                    agency,
                    proc,
                    off,
                    survey,
                    r[8],
                    label,
                    channel,
                    language,
                    int(r[10]),
                    "" if r[11] is None else r[11],
                    "" if r[12] is None else r[12],
                    classification,
                ]
                for v in r[13:]:
                    a = answers.get(v, missing)
                    row.append(answer_cell(v) if a is missing else a)
                rows.append(row)
            yield rows


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
        buffer.write("\ufeff")
        writer.writerow(header)
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
