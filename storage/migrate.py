"""Alembic, driven from code so `surveybot db upgrade` needs no alembic.ini in the working dir.

Every process may call ``upgrade`` at start: it runs once. On PostgreSQL the migration
transaction takes an advisory lock first (``migrations/env.py``); on SQLite the migration's
own write transaction already makes the others wait (tests/test_schema.py runs three at once on
both).
"""

from __future__ import annotations

import asyncio
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
    command.upgrade(alembic_config(database_url), revision)


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
