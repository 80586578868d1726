"""The channel plug-in seam (bot/adapters/base.py): a fourth channel is one package and one
registration line, and a survey runs through it end to end like through any other channel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from bot.adapters import REGISTRY
from bot.app import create_app
from bot.runtime import Runtime
from settings import Settings
from storage.models import Response
from storage.pseudonym import KeyRing
from tests import fake_channel
from tests.conftest import REDIS_URL, _truncate, add_test_agency, make_settings, today

CHAT = "chat-4711"


async def test_a_fourth_channel_is_one_package_and_one_registration_line(
    tmp_path: Path, database_url: str, keyring: KeyRing, redis_prefix: str
) -> None:
    settings = make_settings(
        tmp_path,
        database_url,
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
        channel_order=f"{fake_channel.NAME},telegram,zalo_oa,zalo_bot,web,zns",
    )
    rt = await Runtime.create(settings, keyring=keyring, packages=(*REGISTRY, fake_channel.PACKAGE))
    try:
        await _truncate(rt)
        await drive_a_survey(rt)
    finally:
        await rt.close()


async def drive_a_survey(rt: Runtime) -> None:
    plugin = rt.plugins[fake_channel.NAME]
    assert isinstance(plugin, fake_channel.FakePlugin)
    sent = plugin.channel.sent
    agency = await add_test_agency(rt)
    key = await rt.service.create_api_key(agency.code, "tests")
    auth = {"Authorization": f"Bearer {key}"}
    events = iter(range(1, 1000))

    async with TestClient(TestServer(create_app(rt, background=False))) as client:

        async def say(text: str, event_id: str | None = None) -> dict[str, Any]:
            response = await client.post(
                "/webhooks/fakechat",
                json={"id": event_id or f"e{next(events)}", "chat": CHAT, "text": text},
                headers={fake_channel.SECRET_HEADER: fake_channel.SECRET},
            )
            assert response.status == 200, await response.text()
            await rt.dispatcher.drain()
            return dict(await response.json())

        # The shared door: a wrong secret is refused before anything is read.
        refused = await client.post("/webhooks/fakechat", json={"id": "x"})
        assert refused.status == 401

        registered = await client.post(
            "/api/v1/dossiers", json={"dossier_code": "HS-SEAM-1"}, headers=auth
        )
        token = (await registered.json())["rating_token"]
        assert (await say(f"/start {token}", "bind-1"))["outcome"] == "bound"
        # The platform redelivers the same event: acknowledged, not processed again.
        assert (await say(f"/start {token}", "bind-1"))["duplicate"] is True
        assert plugin.processed == 1

        reported = await client.post(
            "/api/v1/results",
            json={"results": [{"dossier_code": "HS-SEAM-1", "returned_at": today().isoformat()}]},
            headers=auth,
        )
        body = await reported.json()
        assert body["items"][0]["survey_status"] == "sent", body
        await rt.dispatcher.drain()

        # No buttons on this channel: every question comes as a numbered list to reply to.
        answered: set[str] = set()
        for _ in range(40):
            last = sent[CHAT][-1]
            if await completed(rt):
                break
            qid = last.question_id or ""
            if "reply 0" in last.text.lower() and (qid in answered or "skip" in last.text):
                await say("0")
            else:
                answered.add(qid)
                await say("1")
        assert await completed(rt), [m.text for m in sent[CHAT]][-3:]
        assert not any(m.buttons for m in sent[CHAT])


async def completed(rt: Runtime) -> bool:
    async with rt.sessions() as session:
        rows = list((await session.execute(select(Response))).scalars())
    return any(r.complete and r.channel == fake_channel.NAME for r in rows)


def test_every_package_declares_settings_that_exist() -> None:
    for package in (*REGISTRY, fake_channel.PACKAGE):
        missing = [name for name in package.settings if name not in Settings.model_fields]
        assert not missing, (package.name, missing)
