"""Engine and session factory shared by the HTTP app, the CLI, the dispatcher and the tests."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

Sessions = async_sessionmaker[AsyncSession]

#: A pooled PostgreSQL connection unused for this long is pinged before it is handed out. A busy
#: connection is not: a ping is three round trips with asyncpg (BEGIN, ``;``, ROLLBACK), which
#: was most of a registration's cost. A connection that died under load is found by the
#: statement that fails on it, and SQLAlchemy then drops every connection older than that
#: failure (the pool is invalidated), so the next checkouts connect afresh.
IDLE_PING_SECONDS = 2.0
#: Connections kept per process, and how many more a burst may open: 32 concurrent API
#: clients find a connection each instead of queueing behind 15. Three worker processes stay
#: under PostgreSQL's default of 100 connections.
POOL_SIZE = 10
MAX_OVERFLOW = 20


def make_engine(url: str, *, read_only: bool = False, **kwargs: Any) -> AsyncEngine:
    """An engine whose SQLite flavour enforces foreign keys and tolerates concurrent writers.

    ``read_only`` engines (a long export) start plain deferred transactions on SQLite: they
    never take the write lock, so the bot keeps writing while they read a snapshot.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()
            # SQLAlchemy emits BEGIN itself (below), not the driver: otherwise a SAVEPOINT
            # outside BEGIN commits on RELEASE and every item of a batch commits on its own.
            dbapi_connection.isolation_level = None

        @event.listens_for(engine.sync_engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            # Take the write lock up front: a deferred transaction that read first cannot become
            # a writer once another connection committed (SQLITE_BUSY_SNAPSHOT, "database is
            # locked" at once, busy timeout ignored), which broke batches racing the dispatcher.
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_size", POOL_SIZE)
    kwargs.setdefault("max_overflow", MAX_OVERFLOW)
    engine = create_async_engine(url, **kwargs)
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: AsyncEngine) -> None:
    """``pool_pre_ping`` for the connections that need it: only one that sat unused for
    ``IDLE_PING_SECONDS`` (PostgreSQL may have restarted meanwhile) is pinged on checkout; a
    dead one invalidates the pool, and the checkout is retried on a new connection."""
    dialect = engine.sync_engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                raise exc.InvalidatePoolError() from error
            raise


def autocommit(sessions: Sessions) -> Sessions:
    """Sessions whose statements each commit on their own, on PostgreSQL: no BEGIN, no COMMIT,
    no ROLLBACK at check-in, a round trip saved at each. For work that is one statement (or
    reads whose consistency with each other does not matter); anything writing two statements
    that must stand or fall together uses ``sessions``. On SQLite, ``sessions`` themselves
    (its transactions take the write lock up front, see ``make_engine``)."""
    bind = sessions.kw.get("bind")
    if not isinstance(bind, AsyncEngine) or bind.dialect.name != "postgresql":
        return sessions
    return async_sessionmaker(
        bind.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
    )


def make_sessions(engine: AsyncEngine) -> Sessions:
    return async_sessionmaker(engine, expire_on_commit=False)
