"""Alembic, driven from code so `surveybot db upgrade` needs no alembic.ini in the working dir.

Every process may call ``upgrade`` at start: it runs once. On PostgreSQL the migration
transaction takes an advisory lock first (``migrations/env.py``); on SQLite an exclusive lock
on a file next to the database does the same (the version is read before SQLite's own write
lock is taken, so two processes could otherwise both run one step). tests/test_schema.py runs
three at once on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url)
    return config


def upgrade(database_url: str, revision: str = "heads") -> None:
    with _sqlite_file_lock(database_url):
        command.upgrade(alembic_config(database_url), revision)


@contextlib.contextmanager
def _sqlite_file_lock(database_url: str) -> Iterator[None]:
    """One migrating process at a time on a SQLite file; nothing for other databases."""
    path = database_url.split("///", 1)[-1] if database_url.startswith("sqlite") else ""
    if not path or path == ":memory:":
        yield
        return
    lock_path = Path(path).with_name(Path(path).name + ".migrate-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


async def upgrade_async(database_url: str, revision: str = "heads") -> None:
    """Alembic's async env runs its own event loop, so run it in a worker thread."""
    await asyncio.to_thread(upgrade, database_url, revision)


def heads(database_url: str) -> set[str]:
    """The revisions the code expects (one head; tests/test_schema.py keeps it so)."""
    return set(ScriptDirectory.from_config(alembic_config(database_url)).get_heads())


async def at_head(engine: AsyncEngine, database_url: str) -> bool:
    """True when the database's recorded revisions are exactly the code's heads."""
    async with engine.connect() as conn:
        recorded = {
            row[0] for row in await conn.execute(text("SELECT version_num FROM alembic_version"))
        }
    return recorded == heads(database_url)
