"""Set-based statements for batches. ``INSERT … ON CONFLICT DO NOTHING`` for the dialect of a session: the set-based way to let a
unique constraint decide a race (two reports of one dossier, two claims of one citizen) for a
whole batch in one statement, instead of one SAVEPOINT and one flush per row."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import cast

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
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
