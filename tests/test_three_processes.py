"""Three processes behave as one (issue 12): ``surveybot serve --workers 3`` on PostgreSQL and
Redis, python-telegram-bot inside each against the Telegram emulator holding Telegram's flood
limits. Nine citizens are registered, bound and surveyed at once; every question reaches each
of them exactly once, every answer is stored, and the emulator never had to answer 429, so the
limits held in total across the three dispatchers."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import telegram
from sqlalchemy import func, select

from bot.emulators.telegram import TelegramEmulator
from bot.runtime import Runtime
from settings import load_settings
from storage import export
from storage.migrate import upgrade_async
from storage.models import Answer
from tests.conftest import REDIS_URL, TEST_KEYS, add_test_agency, scratch_pg_database, today
from tests.test_telegram_channel import answer_survey, texts
from tests.test_workers import free_port, pids_answering

SECRET = "three-processes-secret"
SURVEYBOT = Path(sys.executable).parent / "surveybot"
CITIZENS = 9


@pytest.fixture
def own_database() -> Iterator[str]:
    with scratch_pg_database("surveybot_three") as url:
        yield url


@pytest.fixture
async def emulator() -> AsyncIterator[TelegramEmulator]:
    # Telegram's own limits (about 1 message/s per chat with short bursts, 30/s per bot).
    async with TelegramEmulator(local_mode=True, webhook_backoff=(0.2, 0.5)) as emu:
        yield emu


async def test_three_processes_survey_nine_citizens_once_each_within_telegrams_limits(
    own_database: str, emulator: TelegramEmulator, tmp_path: Path, redis_prefix: str
) -> None:
    await upgrade_async(own_database)
    settings = load_settings(
        env="test", database_url=own_database, keys=TEST_KEYS, var_dir=tmp_path / "local",
        redis_url=REDIS_URL, redis_prefix=redis_prefix,
    )  # fmt: skip
    local = await Runtime.create(settings)
    agency = await add_test_agency(local)
    key = await local.service.create_api_key(agency.code, "three-processes")

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURVEYBOT_")}
    env.update(
        SURVEYBOT_ENV="test",
        SURVEYBOT_DATABASE_URL=own_database,
        SURVEYBOT_REDIS_URL=REDIS_URL,
        SURVEYBOT_REDIS_PREFIX=redis_prefix,
        SURVEYBOT_KEYS=TEST_KEYS,
        SURVEYBOT_VAR_DIR=str(tmp_path / "var"),
        SURVEYBOT_PORT=str(port),
        SURVEYBOT_TELEGRAM_TOKEN=emulator.token,
        SURVEYBOT_TELEGRAM_API_BASE_URL=emulator.base_url,
        SURVEYBOT_TELEGRAM_BOT_USERNAME=emulator.bot_username,
        SURVEYBOT_TELEGRAM_WEBHOOK_SECRET=SECRET,
        SURVEYBOT_TELEGRAM_REGISTER_WEBHOOK="false",
        SURVEYBOT_QUIET_HOURS_START="",
        SURVEYBOT_QUIET_HOURS_END="",
        SURVEYBOT_INVITE_CAP_DAYS="0",
    )
    log = (tmp_path / "serve.log").open("wb")
    server = await asyncio.create_subprocess_exec(
        str(SURVEYBOT), "serve", "--workers", "3", env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        assert len(await pids_answering(port, 3)) == 3
        bot = telegram.Bot(emulator.token, base_url=emulator.base_url)
        await bot.set_webhook(f"{base}/telegram/webhook", secret_token=SECRET)
        await bot.shutdown()

        citizens: dict[str, int] = {}
        for n in range(CITIZENS):  # a fresh connection each: the kernel spreads them
            code = f"HS-3P-{n:02d}"
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as h:
                body = {"dossier_code": code, "procedure_code": "1.001234", "official_code": "CB01"}
                async with h.post(f"{base}/api/v1/dossiers", json=body, headers=headers) as r:
                    assert r.status in (200, 201), await r.text()
                    token = (await r.json())["rating_token"]
            uid = emulator.new_user_id()
            citizens[code] = uid
            await emulator.open_deep_link(uid, token)
        for uid in citizens.values():
            await emulator.wait_for_bot_messages(uid, 1, timeout=30)  # "you will get a survey"

        results = [{"dossier_code": c, "returned_at": today().isoformat()} for c in citizens]
        async with aiohttp.ClientSession() as h:
            async with h.post(
                f"{base}/api/v1/results", json={"results": results}, headers=headers
            ) as r:
                assert r.status == 200, await r.text()
                statuses = {item["survey_status"] for item in (await r.json())["items"]}
        assert statuses == {"sent"}

        answered = await asyncio.gather(
            *(answer_survey(emulator, uid, timeout=60) for uid in citizens.values())
        )
        assert all(a == ["c3", "c4", "c6", "c7", "overall", "comment"] for a in answered)
        for uid in citizens.values():
            shown = texts(emulator, uid)
            assert len(shown) == len(set(shown)), "a message reached a citizen twice"
        assert [c for c in emulator.calls if c.status == 429] == [], "a flood limit was broken"

        async with local.sessions() as session:
            stored = await session.scalar(select(func.count()).select_from(Answer))
        rows = list(csv.DictReader(io.StringIO((await export.export_csv(local.sessions))
                                               .lstrip("\ufeff"))))  # fmt: skip
        assert len(rows) == CITIZENS and stored == CITIZENS * 6  # no answer lost or doubled
    finally:
        if server.returncode is None:
            server.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(server.wait(), 60)
            except TimeoutError:
                server.kill()
                await server.wait()
        log.close()
        await local.close()
