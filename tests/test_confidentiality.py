"""Confidentiality, checked by looking, not by reading code.

A full scenario runs through the HTTP API and the simulator; then every table, every Redis key
and value, every log line and a CSV export are searched for the raw identifiers it used.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from bot.app import create_app
from bot.http_errors import RouteAccessLogger
from bot.runtime import Runtime
from storage import export
from storage.coordination import RedisCoordinator
from tests.conftest import today
from tests.helpers import answer_with_first_buttons, assert_absent, dump_database, dump_redis

DOSSIER_CODE = "000.00.12.H29-261120-0042"
PHONE = "0912345678"
CCCD = "001203004567"
EMAIL = "nguyen.van.a@example.vn"


async def test_no_raw_identifier_anywhere(
    runtime: Runtime, api_key: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(runtime, background=False)
    server = TestServer(app)
    await server.start_server(access_log_class=RouteAccessLogger)  # the production access log
    async with TestClient(server) as client:
        headers = {"Authorization": f"Bearer {api_key}"}
        registration = await client.post(
            "/api/v1/dossiers",
            headers=headers,
            json={
                "dossier_code": DOSSIER_CODE,
                "official_code": "CB01",
                "procedure_code": "1.001234",
            },
        )
        token = (await registration.json())["rating_token"]
        session = (
            await (await client.post("/simulator/api/session", json={"token": token})).json()
        )["session"]
        await client.post(
            "/api/v1/results",
            headers=headers,
            json={"dossier_code": DOSSIER_CODE, "returned_at": today().isoformat()},
        )
        comment = f"Gọi {PHONE}, CCCD {CCCD}, email {EMAIL}, hồ sơ {DOSSIER_CODE}"
        seen = await answer_with_first_buttons(client, runtime, session, texts={"comment": comment})
        assert seen[-1]["text"].startswith("Cảm ơn")
        await client.post("/simulator/api/send", json={"session": session, "text": "/privacy"})
        await runtime.dispatcher.drain()
        csv_text = await export.export_csv(runtime.sessions, "day")

    database = await dump_database(runtime)
    redis_dump = await dump_redis(redis_prefix)
    logs = caplog.text
    assert (
        "POST /api/v1/results 200" in logs
    )  # the access log was captured, so the check means something
    assert "[số]" in database and "[email]" in database  # the comment was kept, scrubbed
    assert isinstance(runtime.coordinator, RedisCoordinator)  # locks went through the real Redis

    identifiers = {
        "dossier code": DOSSIER_CODE,
        "dossier code (folded)": DOSSIER_CODE.casefold(),
        "chat address": session,
        "phone": PHONE,
        "phone (84)": "84" + PHONE[1:],
        "phone (bare)": PHONE[1:],
        "CCCD": CCCD,
        "email": EMAIL,
        "rating token": token,
    }
    assert_absent(
        identifiers, {"database": database, "redis": redis_dump, "logs": logs, "export": csv_text}
    )


async def test_operational_traces_are_deleted_when_the_survey_closes(
    client: TestClient[Any, Any], runtime: Runtime, api_key: str
) -> None:
    from storage.models import Dossier, Invitation, OutboxMessage

    headers = {"Authorization": f"Bearer {api_key}"}
    token = (
        await (
            await client.post("/api/v1/dossiers", headers=headers, json={"dossier_code": "HS-X"})
        ).json()
    )["rating_token"]
    session = (await (await client.post("/simulator/api/session", json={"token": token})).json())[
        "session"
    ]
    await client.post(
        "/api/v1/results",
        headers=headers,
        json={"dossier_code": "HS-X", "returned_at": today().isoformat()},
    )
    await answer_with_first_buttons(client, runtime, session)
    async with runtime.sessions() as db:
        assert (await db.execute(select(Dossier))).first() is None
        assert (await db.execute(select(Invitation))).first() is None
        sealed = (await db.execute(select(OutboxMessage.address_sealed))).scalars().all()
        assert sealed and all(value is None for value in sealed)  # addresses erased once sent
