"""Structured logs: every line one JSON object, and no identifier in any of them.

The handler ``configure_logging`` installs is the one read here: a survey runs through the HTTP
API and the web simulator behind aiohttp's *default* access log (which writes the raw request
line, rating token and simulator session included), and the loggers of the code are also called
directly with chat ids, phones, e-mails and keys as arguments. Every line must parse as JSON and
carry none of them, while the words around them survive.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.app import create_app
from bot.logs import Redact, configure_logging, redact
from bot.runtime import Runtime
from settings import Settings
from tests.conftest import today
from tests.helpers import answer_with_first_buttons, assert_absent

DOSSIER_CODE = "000.00.12.H29-261120-0077"
PHONE = "0912345678"
CHAT_ID = "5123456789"
ZALO_ID = "8412345678901234567"
EMAIL = "tran.thi.b@example.vn"


@contextmanager
def root_restored() -> Iterator[None]:
    """The root logger's handlers, their filters and its level as they were before (pytest's
    own capture handlers live for the whole session)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        for handler in handlers:
            handler.filters = [f for f in handler.filters if not isinstance(f, Redact)]
        root.setLevel(level)


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The root logger configured as ``surveybot serve`` does in production (JSON), writing
    into a buffer."""
    stream = io.StringIO()
    with root_restored():
        configure_logging("DEBUG", "json", stream)
        yield stream


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = stream.getvalue().splitlines()
    assert lines, "nothing was logged: the check would mean nothing"
    return [json.loads(line) for line in lines]  # every line is one JSON object


async def test_a_survey_and_direct_log_calls_leave_no_identifier_in_the_json_lines(
    runtime: Runtime, api_key: str, json_logs: io.StringIO
) -> None:
    app = create_app(runtime, background=False)
    server = TestServer(app)
    await server.start_server()  # aiohttp's default access log: the raw request line
    async with TestClient(server) as client:
        headers = {"Authorization": f"Bearer {api_key}"}
        registration = await client.post(
            "/api/v1/dossiers",
            headers=headers,
            json={"dossier_code": DOSSIER_CODE, "official_code": "CB01", "phone": PHONE},
        )
        assert registration.status == 201, await registration.text()
        token = (await registration.json())["rating_token"]
        assert (await client.get(f"/r/{token}")).status == 200
        assert (await client.get(f"/r/{token}/qr.svg")).status == 200
        opened = await client.post("/simulator/api/session", json={"token": token})
        session = (await opened.json())["session"]
        await client.post(
            "/api/v1/results",
            headers=headers,
            json={"dossier_code": DOSSIER_CODE, "returned_at": today().isoformat()},
        )
        comment = f"Gọi {PHONE} hoặc {EMAIL}"
        seen = await answer_with_first_buttons(client, runtime, session, texts={"comment": comment})
        assert seen[-1]["text"].startswith("Cảm ơn")

    log = logging.getLogger("bot.dispatch")
    log.warning("chat %s phone %s", CHAT_ID, PHONE)
    logging.getLogger("bot.adapters.zalo.webhooks").info(
        "zalo user %s wrote from +84 912 345 678, mail %s", ZALO_ID, EMAIL
    )
    logging.getLogger("storage.inbox_worker").error(
        "key %s token %s session=%s", api_key, f"https://x.vn/r/{token}", session,
        extra={"chat_id": int(CHAT_ID), "channel": "telegram", "note": f"84{PHONE[1:]}"},
    )  # fmt: skip
    try:
        raise RuntimeError(f"send to {CHAT_ID} failed")
    except RuntimeError:
        logging.getLogger("bot.runtime").exception("maintenance round failed for %s", EMAIL)

    entries = parsed(json_logs)
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    loggers = {e["logger"] for e in entries}
    assert "aiohttp.access" in loggers  # the raw request lines were logged, and scrubbed
    access = " ".join(e["message"] for e in entries if e["logger"] == "aiohttp.access")
    assert "/r/[token]" in access and "GET /simulator/api/messages?session=[token]" in access

    by_message = {e["message"]: e for e in entries}
    assert "chat [id] phone [phone]" in by_message
    zalo = next(e for e in entries if e["logger"] == "bot.adapters.zalo.webhooks")
    assert (
        zalo["message"].startswith("zalo user [id] wrote from ")
        and "mail [email]" in zalo["message"]
    )
    extra = next(
        e for e in entries if e["logger"] == "storage.inbox_worker" and "key" in e["message"]
    )
    assert extra["message"] == "key [api key] token https://x.vn/r/[token] session=[token]"
    assert extra["chat_id"] == "[id]" and extra["channel"] == "telegram"
    assert extra["level"] == "ERROR"
    failure = next(e for e in entries if e["logger"] == "bot.runtime")
    assert failure["message"] == "maintenance round failed for [email]"
    assert "RuntimeError: send to [id] failed" in failure["exception"]

    identifiers = {
        "phone": PHONE,
        "phone (84)": "84" + PHONE[1:],
        "phone (bare)": PHONE[1:],
        "phone (spaced)": "912 345 678",
        "telegram chat id": CHAT_ID,
        "zalo user id": ZALO_ID,
        "email": EMAIL,
        "api key": api_key,
        "api key (body)": api_key.removeprefix("sbk_"),
        "rating token": token,
        "simulator session": session,
        "dossier code": DOSSIER_CODE,
    }
    assert_absent(identifiers, {"logs": json_logs.getvalue()})


def test_the_text_format_is_redacted_too_and_every_root_handler_gets_the_filter() -> None:
    other = logging.StreamHandler(io.StringIO())
    ours = io.StringIO()
    with root_restored():
        logging.getLogger().addHandler(other)
        configure_logging("INFO", "text", ours)
        logging.getLogger("bot.x").warning("chat %s mail %s", CHAT_ID, EMAIL)
    line = ours.getvalue().strip()
    assert line.endswith("WARNING bot.x: chat [id] mail [email]")
    assert other.stream.getvalue().strip() == "chat [id] mail [email]"


def test_an_embedding_programs_handlers_are_kept_and_redacted() -> None:
    """As ``logging.basicConfig``: a root logger that already has handlers gets no second one
    (``surveybot`` commands run under pytest or inside another program), only the filter."""
    other = logging.StreamHandler(io.StringIO())
    with root_restored():
        root = logging.getLogger()
        root.addHandler(other)
        before = list(root.handlers)
        assert configure_logging("INFO", "json") is None
        assert root.handlers == before
        logging.getLogger("bot.x").warning("phone %s", PHONE)
    assert other.stream.getvalue().strip() == "phone [phone]"


def test_redact_keeps_what_identifies_nobody() -> None:
    kept = [
        "POST /api/v1/results 200 12.3ms",
        "inbox event of zalo_oa failed (attempt 3): ServerDisconnectedError",
        "forgot 12 outbox, 3 ZNS tracking and 0 inbox row(s)",
        "released the figures of 2026-11",
        "audit head 1234 " + "ab12" * 16,
        "invitation 0f3c9a2b4d5e6f708192a3b4c5d6e7f8 closed",
        "delivery on telegram failed (telegram: flood control)",
    ]
    for text in kept:
        assert redact(text) == text
    assert redact(redact(f"chat {CHAT_ID} {EMAIL}")) == "chat [id] [email]"  # idempotent
    assert (
        redact("POST https://api.telegram.org/bot123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/getMe")
        == "POST https://api.telegram.org/[bot token]/getMe"
    )


def test_json_is_the_default_in_production_text_elsewhere() -> None:
    assert Settings(env="development").effective_log_format == "text"
    assert Settings(env="production", redis_url="redis://x").effective_log_format == "json"
    assert (
        Settings(env="production", redis_url="redis://x", log_format="text").effective_log_format
        == "text"
    )
