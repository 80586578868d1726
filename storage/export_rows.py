"""The row level's reads beside the ratings pass: questions, codes, the plan's counts, comments.

1. ``plan_cells``: one GROUP BY of the responses by their true quasi-identifiers (agency,
   survey, version, official, procedure, channel, language, month): a few rows per unit and
   month, from which ``storage.anonymise`` decides every released combination.
2. The ratings pass (``storage.export_pass``): every response once, in a fresh random order,
   through the plan. Free-text questions have no column.
3. ``comment_batches``: the free-text answers alone (scrubbed again with today's scrubber,
   then cleaned), with agency and quarter only, shuffled, for the groups the plan allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, func, select, type_coerce
from sqlalchemy import text as sql_text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from bot.flows.definition import SurveyDefinitionError, builtin_catalog, parse_definition
from bot.flows.scrub import scrub
from storage.anonymise import ALL, MARKERS, Key, Plan, period_label
from storage.cells import clean
from storage.db import Sessions, make_engine, make_sessions
from storage.export_pass import (
    BATCH,
    KEY_COLUMNS,
    Codes,
    Head,
    _Memo,
    month_of,
    read_codes,
    scoped,
)
from storage.models import Answer, Response, SurveyVersion

RATING_COLUMNS = [
    "response",
    "agency",
    "procedure",
    "field",
    "official",
    "survey",
    "survey_version",
    "period",
    "channel",
    "language",
    "complete",
    "satisfaction",
]
COMMENT_COLUMNS = ["agency", "quarter", "text"]
#: PostgreSQL's memory for the plan's GROUP BY (its transaction only; the server default, 4 MB,
#: sorts a million responses on disk instead of hashing their groups).
PLAN_WORK_MEM = "64MB"
#: Kept in the store and in the aggregates, never in a ratings row: the score out of 18 and its
#: class include criteria 1 and 2, computed from the dossier's dates, which the agency knows;
#: with the answers beside them they give each row's dates back, a quasi-identifier.
WITHHELD_COLUMNS = ("score_total", "score_maximum", "score_band")


# ------------------------------------------------------------------------------ reference data
async def questions(
    conn: AsyncConnection, agency_id: str | None
) -> tuple[list[str], set[str], bool]:
    """Every question id answered in scope; those that are free text (a text question in a
    survey definition, or any answer stored with text); whether any answer has text at all.

    Two DISTINCTs rather than one GROUP BY: the first reads only the answers' unique index,
    the second only the rows that have text (on a million responses 0.3 s instead of 0.7 s).
    """
    every = select(Answer.question_id).distinct()
    texts = select(Answer.question_id).distinct().where(Answer.text.is_not(None))
    if agency_id:
        every, texts = (
            stmt.join(Response, Response.id == Answer.response_id).where(
                Response.agency_id == agency_id
            )
            for stmt in (every, texts)
        )
    found = {q for (q,) in await conn.execute(every)}
    with_text = {q for (q,) in await conn.execute(texts)}
    # The package's definitions and every version kept in the database (folder surveys, old
    # versions whose file is gone): a text question is free text whichever version asked it.
    definitions = builtin_catalog().all()
    for (text,) in await conn.execute(select(SurveyVersion.definition)):
        try:
            definitions.append(parse_definition(text))
        except SurveyDefinitionError:  # refused at start-up; nothing can have used it since
            continue
    defined = {q.id for d in definitions for q in d.questions if q.type == "text"}
    free = with_text | (defined & set(found))
    return sorted(found), free, bool(with_text)


# ------------------------------------------------------------------------------ the plan's counts
def _month(dialect: str) -> ColumnElement[str]:
    if dialect == "postgresql":
        return func.to_char(Response.answered_on, "YYYY-MM")
    return func.substr(type_coerce(Response.answered_on, String), 1, 7)


async def plan_cells(
    conn: AsyncConnection, agency_id: str | None, until: dt.date | None = None
) -> tuple[list[Key], list[int]]:
    """Responses counted by their true quasi-identifiers, the month as the finest period: the
    keys and their counts, as two lists (the plan keeps the keys, not the pairs)."""
    month = _month(conn.dialect.name).label("month")
    grouped = select(*KEY_COLUMNS, month, func.count()).group_by(*KEY_COLUMNS, month)
    stmt = scoped(grouped, agency_id, until)
    # One object per distinct value (ids repeat in every cell of their unit): the plan and the
    # lookup a worker process unpickles are a fraction of the size.
    # Streamed, so the driver's rows never all sit in memory beside the cells.
    if conn.dialect.name == "postgresql":
        # A hash of the ~100,000 groups in memory (about 30 MB for a million responses), not
        # an external sort of every response on eight text columns: 15 s down to 9 s on a
        # loaded machine. For this transaction only.
        await conn.execute(sql_text(f"SET LOCAL work_mem = '{PLAN_WORK_MEM}'"))
    same: dict[Any, Any] = {}
    keys: list[Key] = []
    counts: list[int] = []
    result = await conn.stream(stmt.execution_options(yield_per=BATCH))
    async for batch in result.partitions(BATCH):
        for row in batch:
            keys.append(tuple(same.setdefault(v, v) for v in row[:8]))  # type: ignore[arg-type]
            counts.append(int(row[8]))
    return keys, counts


def planned_heads(plan: Plan, names: Codes) -> list[Head | None]:
    """Per cell, the row's released cells in ``RATING_COLUMNS`` order from agency to
    language, or None for a dropped cell. Equal combinations share one tuple."""

    def label(value: Any, table: dict[Any, str]) -> str:
        return value if value in MARKERS else table.get(value, "")

    # The field a released combination shows is the one every true procedure merged into it
    # shares, else "*": a function of the released combination, so it splits none of them
    # and the plan's k holds for it as it stands.
    merged: dict[Any, set[str]] = {}
    for key, out in zip(plan.keys, plan.released, strict=True):
        if out is not None:
            merged.setdefault(out, set()).add(names.fields.get(key[4], ""))
    shared: dict[Any, Head] = {}
    heads: list[Head | None] = []
    for out in plan.released:
        if out is None:
            heads.append(None)
            continue
        head = shared.get(out)
        if head is None:
            agency, survey, version, official, procedure, channel, language, period = out
            common = merged[out]
            head = shared[out] = (
                names.agencies.get(agency, ""),
                label(procedure, names.procedures),
                next(iter(common)) if len(common) == 1 else ALL,
                label(official, names.officials),
                clean(survey),
                version,
                period,
                clean(channel),
                clean(language),
            )
        heads.append(head)
    return heads


def rating_header(questions: list[str]) -> list[str]:
    return RATING_COLUMNS + [f"q_{q}" for q in questions]


# ------------------------------------------------------------------------------ comments
async def comment_batches(
    sessions: Sessions,
    agency_id: str | None,
    agencies: dict[Any, str],
    allowed: set[tuple[str, str]] | None,
    withheld: list[int],
    *,
    scan: bool = True,
    until: dt.date | None = None,
) -> AsyncIterator[list[list[Any]]]:
    """The header, then the free-text answers of the allowed (agency id, quarter) groups in a
    fresh random order: agency, quarter and the text, nothing else. ``allowed`` None lets every
    group through (``anonymise=False``). Counts withheld comments into ``withheld[0]``.
    ``scan=False``: no answer has text (the questions' scan said so), the header alone."""
    yield [COMMENT_COLUMNS]
    if not scan:
        return
    stmt = (
        select(Response.agency_id, type_coerce(Response.answered_on, String), Answer.text)
        .join(Response, Response.id == Answer.response_id)
        .where(Answer.text.is_not(None), Answer.text != "")
        .order_by(func.random())
    )
    stmt = scoped(stmt, agency_id, until)
    quarters = _Memo(lambda raw: period_label(month_of(raw), "quarter"))
    async with sessions() as session:
        result = await (await session.connection()).stream(stmt.execution_options(yield_per=BATCH))
        async for batch in result.partitions(BATCH):
            rows: list[list[Any]] = []
            for agency, day, text in batch:
                quarter = quarters[day]
                if allowed is not None and (agency, quarter) not in allowed:
                    withheld[0] += 1
                    continue
                cleaned = clean(scrub(text or "").strip())
                if cleaned.strip():
                    rows.append([agencies.get(agency, ""), quarter, cleaned])
            if rows:
                yield rows


@dataclass(slots=True)
class Reference:
    """What a row-level export reads before its rows: questions, codes, the plan's counts."""

    questions: list[str]
    free_text: list[str]
    names: Codes
    #: The plan's counts: the true keys and, in the same order, their responses.
    cells: tuple[list[Key], list[int]]
    #: Whether any answer in scope has text (if none, the comments need no scan).
    texts: bool


async def reference(
    sessions: Sessions, agency_id: str | None, until: dt.date | None = None
) -> Reference:
    """The answers' scan (questions) and the responses' GROUP BY (the plan's counts) run at
    once, on two connections: on a large store each takes seconds."""

    async def read_questions() -> tuple[list[str], set[str], bool, Codes]:
        async with sessions() as session:
            conn = await session.connection()
            every, free, texts = await questions(conn, agency_id)
            return every, free, texts, await read_codes(conn)

    async def read_cells() -> tuple[list[Key], list[int]]:
        async with sessions() as session:
            return await plan_cells(await session.connection(), agency_id, until)

    (every, free, texts, names), cells = await asyncio.gather(read_questions(), read_cells())
    return Reference([q for q in every if q not in free], sorted(free), names, cells, texts)


@contextlib.asynccontextmanager
async def reader(sessions: Sessions) -> AsyncIterator[Sessions]:
    """Sessions for the export's own reads. On a SQLite file, a read-only engine of its own:
    its plain BEGIN takes no write lock (the application's engine begins IMMEDIATE), so the
    scans neither stop the bot from writing nor wait for each other."""
    engine = sessions.kw["bind"]
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        yield sessions
        return
    own = make_engine(engine.url.render_as_string(hide_password=False), read_only=True)
    try:
        yield make_sessions(own)
    finally:
        await own.dispose()


def fresh_key() -> bytes:
    return os.urandom(32)


def temporary_folder() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="surveybot-export-")
