"""The migrations build exactly the schema the models declare, on SQLite and PostgreSQL.

A column or index added to ``storage/models.py`` without its migration (or the reverse) would
work in tests that create tables from the models and fail on a deployed database."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from storage.db import make_engine
from storage.migrate import alembic_config, upgrade_async
from storage.models import Base


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_the_migrations_build_exactly_the_models_schema(empty_database: str) -> None:
    await upgrade_async(empty_database)
    engine = make_engine(empty_database)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_differences) == []
    finally:
        await engine.dispose()


MIGRATING_CHILD = """
import pathlib, sys, time
go = pathlib.Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
from storage.migrate import upgrade
upgrade(sys.argv[1])
"""


async def test_three_processes_starting_at_once_migrate_once(
    empty_database: str, tmp_path: Path
) -> None:
    """Three processes start together on an empty database: each one's upgrade succeeds, the
    schema is built once (each head recorded once, no difference from the models)."""
    go = tmp_path / "go"
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            MIGRATING_CHILD,
            empty_database,
            str(go),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(3)
    ]
    go.touch()  # all three are waiting: release them together
    outputs = [await child.communicate() for child in children]
    failures = [out.decode()[-600:] for (out, _), c in zip(outputs, children, strict=True)
                if c.returncode != 0]  # fmt: skip
    assert not failures, failures
    engine = make_engine(empty_database)
    try:
        async with engine.connect() as conn:
            versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
            heads = ScriptDirectory.from_config(alembic_config(empty_database)).get_heads()
            assert sorted(v for (v,) in versions) == sorted(heads)
            assert await conn.run_sync(_differences) == []
    finally:
        await engine.dispose()


def test_the_migrations_have_one_head() -> None:
    """Two migrations written at once on the same parent would fork the history again."""
    heads = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://")).get_heads()
    assert len(heads) == 1, heads
