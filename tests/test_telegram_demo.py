"""`surveybot demo`'s Telegram path: the in-process emulator, the demo phone page, a full survey.

It runs as the demo does, on the embedded default (SQLite, in-process coordination), so the
process-memory flavour of the Telegram state is exercised end to end here.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from bot.adapters.telegram.channel import TelegramChannel
from bot.adapters.telegram.demo import DEMO_USER, TelegramDemo
from bot.app import create_app
from bot.cli import seed_demo
from bot.runtime import Runtime
from storage.coordination import LocalCoordinator
from tests.children import free_port
from tests.conftest import make_settings, today


async def test_demo_citizen_answers_on_the_local_telegram(tmp_path: Path) -> None:
    port = free_port()
    settings = make_settings(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}", port=port,
        dispatcher_interval_seconds=0.05, telegram_per_chat_limit=30,
    )  # fmt: skip
    demo = await TelegramDemo.start(settings)
    assert demo is not None
    demo.emulator.per_chat_limit = None  # Telegram's 1 message/s per chat is for real phones
    runtime = await Runtime.create(demo.settings)
    assert isinstance(runtime.coordinator, LocalCoordinator)
    assert isinstance(runtime.channels["telegram"], TelegramChannel)
    key = await seed_demo(runtime, history=0)
    app = create_app(runtime)  # with the background: dispatcher, webhook registration
    demo.setup(app)
    server = TestServer(app, port=port)
    async with TestClient(server) as client:
        await demo.emulator.wait_until(lambda: demo.emulator.webhook_url is not None)
        page = await client.get("/demo/telegram")
        assert page.status == 200 and "/demo/telegram/api/" in await page.text()

        headers = {"Authorization": f"Bearer {key}"}
        registration = await client.post(
            "/api/v1/dossiers",
            headers=headers,
            json={"dossier_code": "HS-DEMO-T1", "received_at": (today() - dt.timedelta(days=2)).isoformat()},
        )  # fmt: skip
        token = (await registration.json())["rating_token"]
        assert (await registration.json())["telegram_url"].endswith(f"?start={token}")
        opened = await client.post("/demo/telegram/api/open", json={"token": token})
        assert opened.status == 202
        await client.post(
            "/api/v1/results",
            headers=headers,
            json={"dossier_code": "HS-DEMO-T1", "returned_at": today().isoformat()},
        )

        async def chat() -> list[dict[str, Any]]:
            return list((await (await client.get("/demo/telegram/api/chat")).json())["messages"])

        def transcript() -> list[tuple[int, str | None, Any]]:
            """What the demo phone shows; a change is the event the next step waits for."""
            return [
                (m.message_id, m.text, m.keyboard) for m in demo.emulator.messages_for(DEMO_USER)
            ]

        tapped: set[int] = set()
        for _ in range(100):
            before = transcript()
            messages = await chat()
            if any(m["text"].startswith("Cảm ơn Ông/Bà đã đánh giá") for m in messages):
                break
            live = [m for m in messages if m["buttons"] and m["id"] not in tapped]
            if live:
                tapped.add(live[-1]["id"])
                _, data = live[-1]["buttons"][0]
                if data.endswith(":-skip"):
                    await client.post("/demo/telegram/api/send", json={"text": "Rất tốt"})
                else:
                    response = await client.post(
                        "/demo/telegram/api/tap", json={"message_id": live[-1]["id"], "data": data}
                    )
                    assert response.status == 202
            await demo.emulator.wait_until(lambda: transcript() != before, timeout=10)  # noqa: B023
        texts = [m["text"] for m in await chat()]
        assert texts[-1].startswith("Cảm ơn Ông/Bà đã đánh giá")
        bad = await client.post("/demo/telegram/api/tap", json={"message_id": 999, "data": "x"})
        assert bad.status == 422
    await runtime.close()


def test_serve_with_polling_needs_a_token(monkeypatch: Any) -> None:
    from click.testing import CliRunner

    from bot.cli import main

    monkeypatch.delenv("SURVEYBOT_TELEGRAM_TOKEN", raising=False)
    result = CliRunner().invoke(main, ["serve", "--telegram-polling"])
    assert result.exit_code != 0 and "SURVEYBOT_TELEGRAM_TOKEN" in result.output
    assert "--telegram-polling" in CliRunner().invoke(main, ["serve", "--help"]).output
