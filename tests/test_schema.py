"""The migrations build exactly the schema the models declare, on SQLite and PostgreSQL.

A column or index added to ``storage/models.py`` without its migration (or the reverse) would
work in tests that create tables from the models and fail on a deployed database."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from storage.db import make_engine
from storage.migrate import upgrade_async
from storage.models import Base


async def test_the_migrations_build_exactly_the_models_schema(empty_database: str) -> None:
    await upgrade_async(empty_database)
    engine = make_engine(empty_database)

    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(differences) == []
    finally:
        await engine.dispose()
