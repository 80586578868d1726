"""Set-based statements for batches. ``INSERT … ON CONFLICT DO NOTHING`` for the dialect of a session: the set-based way to let a
unique constraint decide a race (two reports of one dossier, two claims of one citizen) for a
whole batch in one statement, instead of one SAVEPOINT and one flush per row."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Column, Table, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import Insert

from storage.models import Base


def insert_ignoring(session: AsyncSession, entity: type[Base], conflict: Sequence[str]) -> Insert:
    """An INSERT into ``entity``'s table that skips rows conflicting on the unique ``conflict``
    columns; with ``.returning(…)`` the rows actually written say who won."""
    table = table_of(entity)
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=list(conflict))
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(conflict))


def table_of(entity: type[Base]) -> Table:
    """The Core table of a model: a multi-row INSERT into it skips the ORM's unit of work,
    which costs more per row than the row itself for a batch of thousands."""
    return cast(Table, entity.__table__)


#: Values per ``IN (…)`` list: a batch's lookups stay far below the drivers' limits on bound
#: parameters (PostgreSQL 32,767, SQLite 32,766) whatever the batch size and key count.
CHUNK = 5000


def chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    """``values`` in slices of at most ``CHUNK``: one IN-list query per slice."""
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


async def insert_rows(
    session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Write ``rows`` (each with the same keys) into ``table`` in the session's transaction.

    On PostgreSQL by ``COPY`` (asyncpg's ``copy_records_to_table``, binary): no statement to
    compile, no multi-row VALUES list of thousands of bound parameters to build and parse. The
    values are what SQLAlchemy would have bound (its type processors: aware UTC datetimes,
    JSON serialised as SQLAlchemy serialises it; the columns' Python defaults filled in), so a
    row reads back the same either way. Elsewhere, and whenever the connection has no
    transaction under way to COPY into, one multi-row ``INSERT``."""
    if not rows:
        return
    connection = await session.connection()
    dialect = connection.dialect
    if dialect.name == "postgresql":
        raw = await connection.get_raw_connection()
        adapter = raw.dbapi_connection
        if getattr(adapter, "_transaction", None) is not None:  # COPY must join the batch's
            columns = _copied_columns(table, rows[0])
            convert = [_converter(column, dialect) for column in columns]
            records = [
                tuple(to(_given(column, row)) for column, to in zip(columns, convert, strict=True))
                for row in rows
            ]
            await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
                table.name, records=records, columns=[c.name for c in columns]
            )
            return
    await session.execute(insert(table), list(rows))


def _copied_columns(table: Table, row: Mapping[str, Any]) -> list[Column[Any]]:
    """The columns a row gives, and those with a Python default (SQLAlchemy's INSERT fills
    them in; COPY would leave them NULL)."""
    return [c for c in table.columns if c.name in row or c.default is not None]


def _given(column: Column[Any], row: Mapping[str, Any]) -> Any:
    if column.name in row:
        return row[column.name]
    default = column.default
    assert default is not None
    arg = getattr(default, "arg", None)
    return arg(None) if callable(arg) else arg  # a callable default is wrapped to take a context


def _converter(column: Column[Any], dialect: Dialect) -> Any:
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return process if process is not None else _same


def _same(value: Any) -> Any:
    return value
