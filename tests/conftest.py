"""Shared fixtures: real SQLite and PostgreSQL databases, real Redis, a running app.

Each pytest session gets its own PostgreSQL database and its own Redis key prefix, so several
suites can run at once on one machine. Nothing skips when a service is missing: the fixture
fails with the command that starts it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from bot.app import create_app
from bot.runtime import Runtime
from settings import Settings, load_settings
from storage.migrate import upgrade_async
from storage.models import Agency, Base, Official, Procedure
from storage.pseudonym import KeyRing

PG_ADMIN_DSN = os.environ.get(
    "SURVEYBOT_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("SURVEYBOT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_HINT = "start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
REDIS_HINT = "start it: redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save ''"

# Quiet hours (21:00-07:00 in Vietnam by default) would hold every invitation a test sends in
# the evening, and the invitation cap (one per 7 days) every second survey a test gives one
# chat: both follow the wall clock and the order tests run in. They are off for the suite,
# here, where every ``load_settings`` and every ``surveybot`` child process reads them, and
# switched on by the tests of that behaviour (tests/test_scheduling.py).
os.environ.setdefault("SURVEYBOT_QUIET_HOURS_START", "")
os.environ.setdefault("SURVEYBOT_QUIET_HOURS_END", "")
os.environ.setdefault("SURVEYBOT_INVITE_CAP_DAYS", "0")

TEST_KEYS = KeyRing.generate_document()
AGENCY_CODE = "ubnd-test"


@pytest.fixture(scope="session")
def keyring() -> KeyRing:
    return KeyRing.from_json(TEST_KEYS)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this session, migrated, dropped at the end."""
    with scratch_pg_database("surveybot_test") as url:
        asyncio.run(upgrade_async(url))
        yield url


@contextmanager
def scratch_pg_database(prefix: str) -> Iterator[str]:
    """An empty PostgreSQL database of its own, dropped on exit: its URL for SQLAlchemy."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"

    async def admin(sql: str) -> None:
        try:
            conn = await asyncpg.connect(PG_ADMIN_DSN)
        except OSError as exc:
            raise RuntimeError(f"PostgreSQL is not reachable at {PG_ADMIN_DSN}; {PG_HINT}") from exc
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory for the ``surveybot`` command: embedded SQLite, the test keys."""
    monkeypatch.setenv("SURVEYBOT_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("SURVEYBOT_KEYS", TEST_KEYS)
    monkeypatch.delenv("SURVEYBOT_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def empty_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database with no schema yet, on each backend (for tests that migrate it themselves)."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    with scratch_pg_database("surveybot_empty") as url:
        yield url


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'surveybot.db'}"
    return str(request.getfixturevalue("pg_database"))


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A unique key prefix on the real Redis; its keys are deleted after the test."""
    prefix = f"surveybot-test-{secrets.token_hex(4)}:"
    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:
        raise RuntimeError(f"Redis is not reachable at {REDIS_URL}; {REDIS_HINT}") from exc
    yield prefix
    keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    # A webhook waits for the event it stored to be processed: long enough here that a slow
    # machine still sees the effect before the answer (the tests that want "queued" say so).
    overrides.setdefault("inbox_inline_seconds", 10.0)
    return load_settings(
        env="test",
        var_dir=tmp_path / "var",
        database_url=database_url,
        keys=TEST_KEYS,
        **overrides,
    )


async def _truncate(runtime: Runtime) -> None:
    """Empty the session's PostgreSQL database for the next test.

    TRUNCATE waits for every lock on every table, with no limit of its own: a connection an
    earlier test left open inside a transaction (a task cancelled mid-query at teardown) would
    stall the whole run here. It waits 60 s at most, then fails naming what holds the tables.
    """
    if runtime.engine.dialect.name != "postgresql":
        return
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    try:
        async with runtime.engine.begin() as conn:
            await conn.execute(text("SET LOCAL lock_timeout = '60s'"))
            await conn.execute(text(f"TRUNCATE {tables} CASCADE"))
    except DBAPIError as exc:
        if "lock timeout" not in str(exc):
            raise
        async with runtime.engine.connect() as conn:
            holders = (
                await conn.execute(
                    text(
                        "SELECT pid, state, xact_start, left(query, 200) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            ).all()
        raise RuntimeError(f"the test tables stay locked by {holders}") from exc


@pytest.fixture
async def runtime(
    tmp_path: Path, database_url: str, keyring: KeyRing, redis_prefix: str
) -> AsyncIterator[Runtime]:
    """The whole application on the chosen backend, with real Redis coordination."""
    settings = make_settings(tmp_path, database_url, redis_url=REDIS_URL, redis_prefix=redis_prefix)
    rt = await Runtime.create(settings, keyring=keyring)
    await _truncate(rt)
    yield rt
    await rt.close()


@pytest.fixture
async def agency(runtime: Runtime) -> Agency:
    return await add_test_agency(runtime)


async def add_test_agency(runtime: Runtime) -> Agency:
    """The test agency with officials CB01 and CB02 and procedure 1.001234."""
    async with runtime.sessions() as session:
        agency = Agency(code=AGENCY_CODE, name="UBND phường Thử nghiệm")
        session.add(agency)
        await session.flush()
        session.add(Official(agency_id=agency.id, code="CB01", name="Nguyễn Văn A"))
        session.add(Official(agency_id=agency.id, code="CB02", name="Trần Thị B"))
        session.add(Procedure(code="1.001234", name="Đăng ký khai sinh"))
        await session.commit()
        return agency


@pytest.fixture
async def api_key(runtime: Runtime, agency: Agency) -> str:
    return await runtime.service.create_api_key(agency.code, "tests")


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[TestClient[Any, Any]]:
    """A real HTTP client against the app; the dispatcher is driven by the tests."""
    app = create_app(runtime, background=False)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@pytest.fixture(autouse=True)
async def _no_task_outlives_its_test() -> AsyncIterator[None]:
    """A task left running after a test (a background loop nobody stopped) would be cancelled
    when the event loop closes, and one that does not end then hangs the whole run with no test
    named. So each test's leftovers are cancelled here, and any that will not end fails the test
    with its stack."""
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not current and t not in before]
    for task in left:
        task.cancel()
    if left:
        _, stuck = await asyncio.wait(left, timeout=10)
        if stuck:
            import io as _io

            report = _io.StringIO()
            for task in stuck:
                task.print_stack(file=report)
            raise AssertionError(f"{len(stuck)} task(s) would not end:\n{report.getvalue()}")


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A command run in a test configures logging for the process (``bot/logs.py`` puts its
    redaction filter on every root handler, pytest's capture included): undo that after each
    test, so the next one sees its logs as they are written."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    filters = {handler: list(handler.filters) for handler in handlers}
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler, kept in filters.items():
        handler.filters = kept
    root.setLevel(level)
