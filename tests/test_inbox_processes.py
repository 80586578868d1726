"""Issue 15's kill test: a worker killed after the acknowledgement and before processing loses
nothing, and the event is processed once after a restart.

Real parts throughout: two ``surveybot serve`` processes (one after the other, on one port) on
a PostgreSQL database of their own, python-telegram-bot inside them against the Telegram Bot API
emulator in this process, which delivers the citizen's message to the webhook. To hold the
first process between "stored and answered 200" and "processed", this test locks every table
but the inbox (ACCESS EXCLUSIVE, over its own connection): the webhook can store the update
and answer, its processing blocks on the first table it reads. Then the process is killed with
SIGKILL, the locks released, and a second process takes the event over once its lease lapses.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import telegram
from sqlalchemy import text

from bot.emulators.telegram import TelegramEmulator
from storage.db import make_engine
from storage.migrate import upgrade_async
from storage.models import Base
from tests.children import child_env, free_port
from tests.conftest import scratch_pg_database

SECRET = "kill-test-secret"
SURVEYBOT = Path(sys.executable).parent / "surveybot"


@pytest.fixture
def own_database() -> Iterator[str]:
    with scratch_pg_database("surveybot_kill") as url:
        yield url


@pytest.fixture
async def emulator() -> AsyncIterator[TelegramEmulator]:
    async with TelegramEmulator(webhook_backoff=(0.2,), webhook_timeout=20, local_mode=True) as emu:
        yield emu


def service_env(database_url: str, port: int, emulator: TelegramEmulator, tmp: Path) -> dict:
    return child_env(
        database_url, tmp, port=str(port),
        telegram_token=emulator.token, telegram_api_base_url=emulator.base_url,
        telegram_webhook_secret=SECRET, telegram_register_webhook="false",
        inbox_lease_seconds="2", tap_dedup_seconds="1", inbox_inline_seconds="1",
        # As for the whole suite (tests/conftest.py): no wall-clock quiet hours, no cap.
        quiet_hours_start="", quiet_hours_end="", invite_cap_days="0",
    )  # fmt: skip


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


async def serve(env: dict[str, str], port: int, log: Path) -> asyncio.subprocess.Process:
    """Start ``surveybot serve`` and wait until it answers /healthz (or fail with its log)."""
    process = await asyncio.create_subprocess_exec(
        str(SURVEYBOT), "serve", env=env, stdout=log.open("ab"), stderr=asyncio.subprocess.STDOUT
    )
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            if process.returncode is not None:
                raise AssertionError(f"serve exited: {tail(log)}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return process
            await asyncio.sleep(0.05)
    raise AssertionError(f"serve did not come up: {tail(log)}")


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def scalar(database_url: str, sql: str) -> Any:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(sql))).scalar()
    finally:
        await engine.dispose()


async def test_a_worker_killed_after_the_acknowledgement_loses_nothing(
    own_database: str, emulator: TelegramEmulator, tmp_path: Path
) -> None:
    await upgrade_async(own_database)
    port = free_port()
    env = service_env(own_database, port, emulator, tmp_path)
    log = tmp_path / "serve.log"
    first = await serve(env, port, log)
    second = None
    holder = await asyncpg.connect(asyncpg_dsn(own_database))
    try:
        bot = telegram.Bot(emulator.token, base_url=emulator.base_url)
        await bot.set_webhook(f"http://127.0.0.1:{port}/telegram/webhook", secret_token=SECRET)
        await bot.shutdown()

        # Every table but the inbox is locked: the update can be stored, not processed.
        tables = [t.name for t in Base.metadata.sorted_tables if t.name != "inbox_event"]
        locked = holder.transaction()
        await locked.start()
        await holder.execute(
            f"LOCK TABLE {', '.join(f'{chr(34)}{t}{chr(34)}' for t in tables)}"
            " IN ACCESS EXCLUSIVE MODE"
        )
        uid = emulator.new_user_id()
        update = await emulator.open_deep_link(uid, None)
        await emulator.wait_until(
            lambda: any(a.status == 200 for a in emulator.webhook_attempts), timeout=30
        )
        assert [a.status for a in emulator.webhook_attempts] == [200]  # acknowledged once
        assert await holder.fetchval("SELECT count(*) FROM inbox_event") == 1
        assert emulator.bot_messages_for(uid) == []  # and not processed

        first.send_signal(signal.SIGKILL)
        await first.wait()
        await locked.rollback()

        second = await serve(env, port, log)
        await emulator.wait_until(lambda: len(emulator.bot_messages_for(uid)) >= 1, timeout=60)

        async def settled() -> bool:
            pending = await scalar(
                own_database, "SELECT count(*) FROM inbox_event WHERE status = 'pending'"
            )
            unsent = await scalar(
                own_database,
                "SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')",
            )
            return pending == 0 and unsent == 0

        for _ in range(400):
            if await settled():
                break
            await asyncio.sleep(0.05)
        assert await settled(), "the event or its reply was never finished"
        assert len(emulator.bot_messages_for(uid)) == 1, "the event was processed twice"
        assert [a.status for a in emulator.webhook_attempts] == [200]  # Telegram never retried

        # Telegram redelivers it anyway (a lost 200): a duplicate, nothing sent again.
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{port}/telegram/webhook",
                json=update,
                headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
            ) as response:
                assert response.status == 200
                assert (await response.json())["outcome"] == "duplicate"
        assert len(emulator.bot_messages_for(uid)) == 1
    finally:
        with contextlib.suppress(Exception):
            await holder.close()
        for process in (first, second):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), 15)
                except TimeoutError:
                    process.kill()
                    await process.wait()
