"""``/readyz``: the database, Redis, the schema at head and each channel's registration and
token state, as an operator (or a load balancer) reads them; ``/healthz`` stays "alive"."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import update

from bot.adapters.telegram import TelegramPlugin
from bot.app import create_app
from bot.emulators.telegram import TelegramEmulator
from bot.runtime import Runtime
from storage.models import ZaloToken
from storage.pseudonym import KeyRing
from tests.conftest import REDIS_URL, _truncate, make_settings

TOKEN = "123456789:READY-test-token"


async def started(runtime: Runtime) -> TestClient[Any, Any]:
    client = TestClient(TestServer(create_app(runtime, background=False)))
    await client.start_server()
    return client


@pytest.fixture
async def telegram_emulator() -> AsyncIterator[TelegramEmulator]:
    async with TelegramEmulator(TOKEN) as emu:  # the public server's webhook rule
        yield emu


async def make_runtime(
    tmp_path: Path, database_url: str, keyring: KeyRing, **overrides: Any
) -> Runtime:
    settings = make_settings(tmp_path, database_url, **overrides)
    runtime = await Runtime.create(settings, keyring=keyring)
    await _truncate(runtime)
    return runtime


async def test_a_healthy_process_is_ready_and_says_what_it_checked(
    tmp_path: Path, database_url: str, keyring: KeyRing, redis_prefix: str
) -> None:
    runtime = await make_runtime(
        tmp_path, database_url, keyring, redis_url=REDIS_URL, redis_prefix=redis_prefix
    )
    client = await started(runtime)
    try:
        response = await client.get("/readyz")
        body = await response.json()
        assert response.status == 200, body
        assert body["status"] == "ready"
        assert (body["database"], body["migrations"], body["redis"]) == ("ok", "at head", "ok")
        assert body["inbox"] == {"pending": 0, "dead_letters": 0}
        assert body["channels"]["web"] == {"ok": True}
        assert (await client.get("/healthz")).status == 200
    finally:
        await client.close()
        await runtime.close()


async def test_redis_gone_makes_the_process_not_ready_but_still_alive(
    tmp_path: Path, database_url: str, keyring: KeyRing
) -> None:
    runtime = await make_runtime(tmp_path, database_url, keyring, redis_url="redis://127.0.0.1:1/0")
    client = await started(runtime)
    try:
        response = await client.get("/readyz")
        body = await response.json()
        assert response.status == 503 and body["status"] == "not_ready"
        assert body["redis"].startswith("unreachable") and body["database"] == "ok"
        assert (await client.get("/healthz")).status == 200
    finally:
        await client.close()
        await runtime.close()


async def test_a_telegram_webhook_the_bot_api_refused_is_reported_with_its_reason(
    tmp_path: Path, database_url: str, keyring: KeyRing, telegram_emulator: TelegramEmulator
) -> None:
    runtime = await make_runtime(
        tmp_path,
        database_url,
        keyring,
        telegram_token=TOKEN,
        telegram_api_base_url=telegram_emulator.base_url,
        telegram_webhook_secret="ready-secret",
        public_base_url="http://127.0.0.1:8080",  # what the Bot API refuses
    )
    client = await started(runtime)
    try:
        body = await (await client.get("/readyz")).json()
        assert body["channels"]["telegram"] == {
            "ok": False, "mode": "webhook", "webhook": "not registered"
        }  # fmt: skip
        plugin = runtime.plugins["telegram"]
        assert isinstance(plugin, TelegramPlugin)
        [register] = plugin.loops()
        await register(asyncio.Event())  # what start-up does
        response = await client.get("/readyz")
        telegram = (await response.json())["channels"]["telegram"]
        assert response.status == 503
        assert telegram["ok"] is False and telegram["webhook"].startswith("refused: ")
        assert "https" in telegram["webhook"].lower()
        assert TOKEN not in str(telegram) and "ready-secret" not in str(telegram)
    finally:
        await client.close()
        await runtime.close()


async def test_the_zalo_grant_state_is_reported_per_channel(
    tmp_path: Path, database_url: str, keyring: KeyRing
) -> None:
    """A refused refresh (the grant is gone until a person consents again) is not ready."""
    runtime = await make_runtime(
        tmp_path,
        database_url,
        keyring,
        zalo_app_id="4321",
        zalo_app_secret="app-secret",
        zalo_oa_secret="oa-secret",
        zalo_refresh_token="bootstrap-refresh",
        zalo_zns_rating_template_id="55",
    )
    client = await started(runtime)
    try:
        suite = runtime.zalo
        assert suite is not None and suite.tokens is not None
        await suite.tokens.install("a-refresh-token")
        body = await (await client.get("/readyz")).json()
        assert body["channels"]["zalo_oa"]["ok"] is True
        assert body["channels"]["zalo_oa"]["grant"] == "ok"
        async with runtime.sessions() as session:
            await session.execute(update(ZaloToken).values(status="failed"))
            await session.commit()
        response = await client.get("/readyz")
        channels = (await response.json())["channels"]
        assert response.status == 503
        assert channels["zalo_oa"] == channels["zns"]  # one grant behind both
        assert channels["zalo_oa"]["ok"] is False and channels["zalo_oa"]["grant"] == "failed"
        assert "a-refresh-token" not in str(channels)
    finally:
        await client.close()
        await runtime.close()
