"""Zalo's redelivery ladder, run on the emulator's virtual clock, against the whole service.

Why: Zalo resends a failed webhook with the same body and its ORIGINAL ``timestamp`` after 30 s,
5 min, 15 min, 30 min and 1 h (../shared/reference/zalo.md §2.1). A freshness check shorter than
that ladder refuses the late retries and loses the citizen's answer; a redelivery inside it must
be taken once. Which failures Zalo retries is ambiguous (a connection failure only, or any
non-200), so every test here passes under both readings: our service is really DOWN (the
connection is refused), which both readings retry.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import func, select

from bot.app import create_app
from bot.emulators.zalo import REAL_RETRY_LADDER_S, ZaloEmulator, sign_event
from bot.runtime import Runtime
from settings import Settings
from storage.models import Response
from storage.pseudonym import KeyRing
from tests.children import free_port
from tests.conftest import REDIS_URL, _truncate, add_test_agency, make_settings
from tests.test_zalo_channels import START_MS, Zalo

TRIGGERS = ["connect", "non_200"]


class Service:
    """Our service on a fixed port that can be taken down (connection refused) and back up."""

    def __init__(self, app: web.Application, port: int) -> None:
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        self.port = port
        self.site: web.TCPSite | None = None

    async def up(self) -> None:
        assert self.site is None
        self.site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await self.site.start()

    async def down(self) -> None:
        assert self.site is not None
        await self.site.stop()
        self.site = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


class Client:
    """The few TestClient methods :class:`tests.test_zalo_channels.Zalo` uses, over a session."""

    def __init__(self, service: Service, session: aiohttp.ClientSession) -> None:
        self.service, self.session = service, session

    async def post(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        response = await self.session.post(self.service.url(path), **kwargs)
        await response.read()
        return response

    def make_url(self, path: str) -> str:
        return self.service.url(path)


@pytest.fixture(params=TRIGGERS)
async def setup(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    database_url: str,
    keyring: KeyRing,
    redis_prefix: str,
) -> AsyncIterator[tuple[Zalo, Service]]:
    emu = ZaloEmulator(
        start_time_ms=START_MS, clock_runs=False, seed=11, retry_on=str(request.param)
    )
    await emu.start()
    settings = make_settings(
        tmp_path,
        database_url,
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
        zalo_app_id=emu.app_id,
        zalo_app_secret=emu.app_secret_key,
        zalo_oa_secret=emu.oa_secret,
        zalo_refresh_token="emulator-refresh-token-0",
        zalo_oauth_base_url=emu.oauth_url,
        zalo_openapi_base_url=emu.openapi_url,
        zalo_business_base_url=emu.business_url,
        zalo_http_timeout_seconds=3.0,
    )
    rt = await Runtime.create(settings, keyring=keyring)
    await _truncate(rt)
    assert rt.zalo is not None
    rt.zalo.clock = lambda: emu.now_ms() / 1000
    await add_test_agency(rt)
    key = await rt.service.create_api_key("ubnd-test", "tests")
    service = Service(create_app(rt, background=False), free_port())
    await service.runner.setup()
    await service.up()
    emu.set_oa_webhook(service.url("/webhooks/zalo/oa"))
    async with aiohttp.ClientSession() as session:
        yield Zalo(emu, rt, Client(service, session), key), service  # type: ignore[arg-type]
    if service.site is None:
        await service.up()
    await emu.wait_idle()
    await emu.stop()
    await service.runner.cleanup()
    await rt.close()


async def responses(rt: Runtime) -> int:
    async with rt.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Response)) or 0)


async def first_question(zalo: Zalo, code: str) -> tuple[str, str]:
    """A citizen bound through the OA gets the survey's first question: (user, tap payload)."""
    token = await zalo.register(code)
    uid = await zalo.oa_citizen(token)
    await zalo.report({"dossier_code": code})
    await zalo.settle()
    return uid, zalo.emu.last_oa_message(uid).button_payloads()[0]


async def test_an_answer_sent_while_we_are_down_arrives_once_on_the_ladder(
    setup: tuple[Zalo, Service],
) -> None:
    """Done when (issue 15): down for the first three deliveries, up for the fourth (20.5 min
    after the answer, far past any 10-minute freshness rule), the answer is stored once."""
    zalo, service = setup
    emu = zalo.emu
    uid, tap = await first_question(zalo, "000.00.12.H29-261124-0601")
    before = await responses(zalo.rt)

    await service.down()
    await emu.user_send_text(uid, tap)
    await emu.wait_idle()

    [record] = emu.pending_redeliveries
    for rung in REAL_RETRY_LADDER_S[:2]:  # the 30 s and 5 min retries find us down too
        emu.advance(rung)
        await emu.wait_idle()
    assert record.attempts == 3 and not record.delivered
    assert all(isinstance(status, str) for status in record.statuses)  # connection refused
    assert await responses(zalo.rt) == before

    await service.up()
    emu.advance(REAL_RETRY_LADDER_S[2])  # 15 min later: the fourth delivery
    await zalo.settle()
    assert record.delivered and record.statuses[-1] == 200
    assert json.loads(record.body)["timestamp"] == str(record.event["timestamp"])
    assert emu.now_ms() - int(record.event["timestamp"]) == 1_230_000  # 30 s + 5 min + 15 min
    assert await responses(zalo.rt) == before + 1

    sent = len(emu.transcript(uid))
    await emu.redeliver(record)  # Zalo resends once more inside the window
    await zalo.settle()
    assert record.statuses[-1] == 200 and record.replies[-1]["duplicate"] is True  # by event id
    assert await responses(zalo.rt) == before + 1  # taken once
    assert len(emu.transcript(uid)) == sent  # and not answered twice either
    await emu.run_ladder()
    assert not emu.pending_redeliveries


async def test_an_event_older_than_the_whole_ladder_is_refused_as_stale(
    setup: tuple[Zalo, Service],
) -> None:
    zalo, _ = setup
    emu = zalo.emu
    uid, tap = await first_question(zalo, "000.00.12.H29-261124-0602")
    before = await responses(zalo.rt)
    settings: Settings = zalo.rt.settings
    window_ms = settings.zalo_webhook_max_age_seconds * 1000
    assert window_ms >= sum(REAL_RETRY_LADDER_S) * 1000  # the whole ladder fits in the window
    stamp = emu.now_ms() - window_ms - 60_000
    raw = json.dumps(
        {
            "app_id": emu.app_id,
            "event_name": "user_send_text",
            "timestamp": str(stamp),
            "sender": {"id": uid},
            "recipient": {"id": emu.oa_id},
            "message": {"msg_id": emu.new_id(), "text": tap},
        }
    ).encode()
    headers = {
        "Content-Type": "application/json",
        "X-ZEvent-Signature": sign_event(emu.app_id, raw, str(stamp), emu.oa_secret),
    }
    response = await zalo.client.post("/webhooks/zalo/oa", data=raw, headers=headers)
    assert response.status == 401
    assert (await response.json())["error"] == "stale_timestamp"
    assert await responses(zalo.rt) == before
