"""Anonymised exports: row-level responses and suppressed aggregates, as CSV, XLSX or JSON Lines.

Row level (``level="responses"``): one ZIP (``storage.export_package``) holding
``ratings.<fmt>``, ``comments.<fmt>`` and ``report.json``.

* ``ratings`` is k-anonymous on its quasi-identifiers (agency, official, procedure, channel,
  language, period): values are generalised, then rows suppressed, until every combination in
  the file holds at least k rows: k_official (10) when the combination's rows all rate one
  official, k_group (5) otherwise. The period is never a day (month, or coarser when asked).
  The rule, step by step, with why, is ``storage.anonymise``'s docstring; report.json carries
  it with its counts (values generalised per column, rows suppressed and dropped, the k, the
  coarsest period). It is planned on one GROUP BY of the combination counts, then the rows
  stream through in-memory recoding dicts, in parallel parts for a large CSV.
* ``ratings`` has no free-text column, no score and no band (criteria 1-2
  come from the dossier's dates, which the agency knows). Pseudonyms are keyed hashes under a
  fresh key per export, rows come in a fresh random order: two exports cannot be joined.
* ``comments`` holds the free-text answers with agency and quarter only, shuffled, for the
  agency x quarter groups of at least k_official responses.

``anonymise=False`` switches the k-anonymity off (the same files, nothing generalised or
suppressed, the period as asked): for tests and the re-identification test only, to show
what the protection stops. No command or page passes it.

Aggregate levels (agency, official, procedure, field, criterion, field_criterion, period) come
from the releases
(``storage.aggregates``). Every cell of every format goes through ``storage.cells.clean``:
illegal characters stripped, then formulas neutralised, in that order.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from hashlib import blake2b
from typing import IO, Any, Literal

from sqlalchemy import Integer, Text, cast, select

from storage import aggregates, export_package
from storage.cells import clean
from storage.db import Sessions
from storage.export_formats import (
    CONTENT_TYPES,
    XLSX_SHEET_ROWS,
    csv_header,
    text_chunks,
    write_file,
    write_xlsx,
)
from storage.export_package import ChangedDuringExport
from storage.export_pass import export_workers, read_codes
from storage.export_rows import RATING_COLUMNS, questions
from storage.models import Response
from storage.stats import Period, Thresholds, period_label

__all__ = [
    "CONTENT_TYPES",
    "XLSX_SHEET_ROWS",
    "ChangedDuringExport",
    "ExportError",
    "ExportSpec",
    "export_workers",
]

Format = Literal["csv", "xlsx", "jsonl"]
Level = Literal[
    "responses",
    "agency",
    "official",
    "procedure",
    "field",
    "criterion",
    "field_criterion",
    "period",
]
FORMATS: tuple[str, ...] = ("csv", "xlsx", "jsonl")
LEVELS: tuple[str, ...] = ("responses", *aggregates.LEVELS)
PERIODS: tuple[str, ...] = ("day", "week", "month", "quarter", "year")
#: The columns of the unprotected one-table dump (``response_rows``, tests only).
BASE_COLUMNS = [*RATING_COLUMNS, "score_total", "score_maximum", "score_band"]
BATCH = 5000
#: Every cell's last step (illegal characters, then formulas); the aggregates call it by this name.
neutralise = clean


class ExportError(ValueError):
    """A request for an export that cannot be made (unknown level, format or period)."""


@dataclass(frozen=True, slots=True)
class ExportSpec:
    level: str = "responses"
    fmt: str = "csv"
    period: str = "month"
    #: Restrict to one agency (an agency viewer's exports always are).
    agency_id: str | None = None
    #: Row level: only responses answered by this day. The dashboard and the CLI pass the end
    #: of the last released period, so an open month never reaches a file (two exports of it
    #: would differ by the ratings given in between).
    until: dt.date | None = None

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("level", self.level, LEVELS),
            ("format", self.fmt, FORMATS),
            ("period", self.period, PERIODS),
        ):
            if value not in allowed:
                raise ExportError(f"unknown {name} {value!r}; use one of {', '.join(allowed)}")

    @property
    def packaged(self) -> bool:
        """Row level comes as a ZIP of ratings, comments and report; aggregates as one file."""
        return self.level == "responses"

    @property
    def filename(self) -> str:
        if self.packaged:
            return export_package.filename(self)
        return f"surveybot-{self.level}-{self.period}.{self.fmt}"

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES["zip" if self.packaged else self.fmt]


# ------------------------------------------------------------------------------ aggregates
async def aggregate_rows(
    sessions: Sessions, spec: ExportSpec, thresholds: Thresholds
) -> tuple[list[str], list[list[Any]]]:
    """Aggregates from the latest release (``storage.aggregates``), every cell neutralised."""
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
    """An aggregate level's header as a batch of one row, then its rows in batches."""
    if spec.packaged:
        raise ExportError("the row level is a package: use write_export or stream_export")
    header, rows = await aggregate_rows(sessions, spec, thresholds)
    yield [[clean(v) for v in header]]
    for first in range(0, len(rows), BATCH):
        yield [[clean(v) for v in row] for row in rows[first : first + BATCH]]


# ------------------------------------------------------------------------------ writers
async def write_export(
    sessions: Sessions,
    spec: ExportSpec,
    thresholds: Thresholds,
    out: IO[bytes],
    *,
    anonymise: bool = True,
) -> int:
    """Write the export to a binary stream; returns the number of data rows (for the row
    level, the rows of ratings). ``anonymise=False``: tests only (module docstring)."""
    if spec.packaged:
        package = await export_package.write(
            sessions, spec, thresholds, out, anonymise_rows=anonymise
        )
        return package.rows
    counted = 0

    async def counting() -> AsyncIterator[list[list[Any]]]:
        nonlocal counted
        async for batch in table_batches(sessions, spec, thresholds):
            counted += len(batch)
            yield batch

    if spec.fmt == "xlsx":
        await write_xlsx(counting(), out)
    else:
        async for chunk in text_chunks(counting(), spec.fmt):
            out.write(chunk)
    return max(counted - 1, 0)


async def stream_export(
    sessions: Sessions, spec: ExportSpec, thresholds: Thresholds, *, anonymise: bool = True
) -> AsyncIterator[bytes]:
    """Chunks for an HTTP response, with ``spec.content_type`` and ``spec.filename``.

    For the row level the files are written and checked before the first chunk: take it before
    sending headers, and a ``ChangedDuringExport`` can still become an error page."""
    if spec.packaged:
        async for chunk in export_package.stream(
            sessions, spec, thresholds, anonymise_rows=anonymise
        ):
            yield chunk
        return
    buffer = io.BytesIO()
    await write_file(table_batches(sessions, spec, thresholds), spec.fmt, buffer)
    yield buffer.getvalue()


async def write_package(
    sessions: Sessions, spec: ExportSpec, thresholds: Thresholds, out: IO[bytes]
) -> export_package.Package:
    """The row-level ZIP into ``out``; the package's ``report`` is report.json's content."""
    if not spec.packaged:
        raise ExportError(f"level {spec.level!r} is one file, not a package")
    return await export_package.write(sessions, spec, thresholds, out)


# ------------------------------------------------------------------------------ unprotected dump
async def response_rows(
    sessions: Sessions, period: Period = "month"
) -> tuple[list[str], list[list[Any]]]:
    """Every response as one row with every answer, free text included, nothing generalised or
    suppressed: the superset every protected file is cut from, for tests that check what the
    store holds (scrubbed comments, no raw identifier). Unprotected: no command or page calls
    it. Pseudonyms are re-keyed and the rows shuffled all the same."""
    keyed = blake2b(key=os.urandom(32), digest_size=8)
    stmt = select(
        Response.id,
        Response.agency_id,
        Response.procedure_id,
        Response.official_id,
        Response.survey_id,
        Response.survey_version,
        Response.answered_on,
        Response.channel,
        Response.language,
        cast(Response.complete, Integer),  # PostgreSQL's driver gives a bool for a coerced one
        Response.satisfaction,
        Response.score_total,
        Response.score_maximum,
        Response.score_band,
        cast(Response.answers, Text),
    )
    async with sessions() as session:
        conn = await session.connection()
        every, _, _ = await questions(conn, None)
        names = await read_codes(conn)
        found = (await conn.execute(stmt)).all()
    rows: list[list[Any]] = []
    for rid, agency, proc, off, survey, version, day, *rest, cells in found:
        hashed = keyed.copy()
        hashed.update(rid.encode())
        answers = _json(cells)
        rows.append(
            [
                hashed.hexdigest(),
                names.agencies.get(agency, ""),
                names.procedures.get(proc, ""),
                names.fields.get(proc, ""),
                names.officials.get(off, ""),
                clean(survey),
                version,
                period_label(day, period),
                *("" if v is None else clean(v) for v in rest),
                *(clean(answers.get(q, "")) for q in every),
            ]
        )
    random.SystemRandom().shuffle(rows)
    return BASE_COLUMNS + [f"q_{q}" for q in every], rows


def _json(raw: Any) -> dict[str, Any]:
    found = json.loads(raw) if isinstance(raw, str | bytes) else raw
    return found or {}


def write_csv(out: IO[str], header: list[str], rows: Any) -> None:
    """UTF-8 with BOM so Excel shows Vietnamese correctly."""
    out.write(csv_header(header))
    csv.writer(out).writerows(rows)


async def export_csv(sessions: Sessions, period: Period = "month") -> str:
    """``response_rows`` as CSV text (unprotected, tests only)."""
    header, rows = await response_rows(sessions, period)
    buffer = io.StringIO()
    write_csv(buffer, header, rows)
    return buffer.getvalue()
