"""The ratings pass's queries: every response read once, in a fresh random order, through the plan.

The order is the database's own ``ORDER BY random()``: two exports cannot be aligned by row
position, and no order follows answering time. What a row becomes (the plan's lookup, the keyed
hash, the cells) is ``storage.export_worker``'s, shared by both ways of reading:

* one process: ``rating_batches``, through the application's SQLAlchemy sessions (any format,
  any size);
* a CSV of 200,000 responses or more: one worker process per core, each over a fresh random
  part of the responses (``draw_parts``), because at that size the Python work per row, not
  the database, sets the time. The parent compiles each part's query (``part_query``) and a
  worker runs it on its driver alone (``export_worker.write_part``), importing no SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import multiprocessing
import os
import pickle
import random
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from sqlalchemy import Date, Integer, Select, String, Text, cast, func, select, type_coerce
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from storage import stats
from storage.cells import clean
from storage.db import Sessions
from storage.export_worker import (
    Codes,
    Head,
    PartQuery,
    RatingPass,
    RatingSource,
    RowCounts,
    _Memo,
    init_worker,
    month_of,
    write_part,
)
from storage.models import Agency, Official, Procedure, Response

__all__ = [
    "BATCH",
    "KEY_COLUMNS",
    "Codes",
    "Head",
    "Part",
    "Parts",
    "RatingSource",
    "RowCounts",
    "_Memo",
    "draw_parts",
    "export_workers",
    "in_parts",
    "month_of",
    "rating_batches",
    "read_codes",
    "scoped",
    "start_parts",
]

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


def scoped(stmt: SelectT, agency_id: str | None, until: dt.date | None) -> SelectT:
    """One agency's responses, or all; and only those answered by ``until`` (the end of the
    last released period: two row-level exports of an open month would differ by the ratings
    given in between)."""
    if agency_id:
        stmt = stmt.where(Response.agency_id == agency_id)
    if until is not None:
        stmt = stmt.where(Response.answered_on <= until)
    return stmt


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


async def read_codes(conn: AsyncConnection) -> Codes:
    return Codes(
        await codes(conn, Agency),
        await codes(conn, Official),
        await codes(conn, Procedure),
        await procedure_fields(conn),
    )


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


def rating_statement(source: RatingSource, part: Part | None = None) -> Select:
    """The pass's query: the response table alone (its answers are kept there as export
    cells, everything else a row shows comes from the plan), so the database does one scan
    and the random sort. Its columns are ``export_worker.Row``'s."""
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
    return stmt.order_by(func.random())


async def rating_batches(
    sessions: Sessions, source: RatingSource, part: Part | None = None
) -> AsyncIterator[list[list[Any]]]:
    """The ratings rows in one process, one batch per database fetch, counting into
    ``source.seen``."""
    stmt = rating_statement(source, part)
    async with sessions() as session:
        conn = await session.connection()
        result = await conn.stream(stmt.execution_options(yield_per=BATCH))
        ratings: RatingPass | None = None
        async for batch in result.partitions(BATCH):
            if ratings is None:
                ratings = RatingPass(source)
            if rows := ratings.rows(batch):
                yield rows
        if ratings is None:
            RatingPass(source)  # no rows: the plan is still taken, nothing counted


# ------------------------------------------------------------------------------ in parallel parts
#: A row-level CSV export of at least this many responses runs in parts, one process each: at a
#: million rows the Python work per row, not the database, sets the time, and one process uses
#: one core.
PARTS_FROM_ROWS = 200_000
#: Id positions (1-based) a part may be drawn on: not a uuid4's fixed version and variant digits.
PART_POSITIONS = tuple(p for p in range(1, 33) if p not in (13, 17))
HEX = "0123456789abcdef"
#: SQLAlchemy's own arguments of the asyncpg dialect, which ``asyncpg.connect`` does not take.
_SQLALCHEMY_ONLY = (
    "prepared_statement_cache_size",
    "prepared_statement_name_func",
    "async_fallback",
)


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


def part_query(engine: AsyncEngine, source: RatingSource, part: Part) -> PartQuery:
    """One part's query compiled for the engine's driver, with its parameters in order and how
    a worker connects: the statement stays defined once (``rating_statement``), and a worker
    runs it without SQLAlchemy."""
    dialect = engine.dialect
    compiled = rating_statement(source, part).compile(
        dialect=dialect, compile_kwargs={"render_postcompile": True}
    )
    params = tuple(_bound(compiled.params[name], dialect) for name in compiled.positiontup or ())
    if dialect.name == "sqlite":
        connect: dict[str, Any] = {"database": engine.url.database}
    elif dialect.name == "postgresql" and dialect.driver == "asyncpg":
        args, kwargs = dialect.create_connect_args(engine.url)
        connect = {k: v for k, v in kwargs.items() if k not in _SQLALCHEMY_ONLY}
        if args:
            connect["dsn"] = args[0]
    else:
        raise ValueError(f"no export worker for the {dialect.name}+{dialect.driver} driver")
    return PartQuery(dialect.name, compiled.string, params, connect)


def _bound(value: Any, dialect: Dialect) -> Any:
    """A parameter as the driver takes it: a day as SQLite stores it (text), else unchanged."""
    if isinstance(value, dt.date):
        process = Date().bind_processor(dialect)
        return process(value) if process else value
    return value


def _dump(value: Any, path: str) -> None:
    with open(path + ".tmp", "wb") as handle:
        pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(path + ".tmp", path)


class Parts:
    """The worker processes of one export, one per part, started before the plan exists:
    each opens its part's query at once, so the database sorts the part while the parent makes
    the plan, then waits for the plan file. ``close`` releases any worker still waiting."""

    def __init__(self, engine: AsyncEngine, source: RatingSource, folder: str) -> None:
        context = multiprocessing.get_context("spawn")
        workers = export_workers()
        self.ready = context.Event()
        self.plan_file = os.path.join(folder, "plan.pickle")
        self.paths = [os.path.join(folder, f"part{i}.csv") for i in range(workers)]
        queries = [part_query(engine, source, part) for part in draw_parts(workers)]
        self.pool = ProcessPoolExecutor(
            workers, mp_context=context, initializer=init_worker, initargs=(self.ready,)
        )
        waiting = replace(source, questions=[], keys=None, heads=[], plan_file=self.plan_file)
        self.futures = [
            self.pool.submit(write_part, query, waiting, path)
            for query, path in zip(queries, self.paths, strict=True)
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
    """Workers for the ratings CSV, each reading its part in a read-only transaction (no write
    lock on SQLite) with the source's key."""
    return Parts(sessions.kw["bind"], source, folder)
