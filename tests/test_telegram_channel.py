"""The Telegram channel end to end: PTB over real HTTP against the strict Bot API emulator.

The application runs in an aiohttp test server; the emulator delivers updates to its webhook
(with the secret header, redelivering on non-2xx) or serves them to our long-polling loop, and
the outbox dispatcher sends through PTB to the emulator, which enforces what Telegram enforces.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import segno
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from bot.adapters.telegram.channel import TelegramChannel
from bot.app import create_app
from bot.emulators.telegram import ChatMessage, TelegramEmulator
from bot.http_errors import RouteAccessLogger
from bot.runtime import Runtime
from storage import export
from storage.models import Answer, Base, OptOut, OutboxMessage, Response, SurveyLedger
from storage.pseudonym import KeyRing
from tests.conftest import REDIS_URL, _truncate, make_settings, today
from tests.helpers import assert_absent, dump_database, dump_redis, eventually

os.environ.setdefault("PTB_TIMEDELTA", "true")

TOKEN = "7654321098:AAtelegram-channel-tests"
SECRET = "webhook_Secret-42"
OUTRO_VI = "Cảm ơn Ông/Bà đã đánh giá"
OUTROS = (OUTRO_VI, "Thank you for your rating")
Client = TestClient[Any, Any]


# ============================================================================ fixtures
@pytest.fixture
def emulator_options() -> dict[str, Any]:
    """Overridden with ``@pytest.mark.parametrize("emulator_options", ...)`` by some tests."""
    return {}


@pytest.fixture
def telegram_overrides() -> dict[str, Any]:
    """Settings overrides, parametrised the same way."""
    return {}


def emulator_with(**options: Any) -> Any:
    return pytest.mark.parametrize("emulator_options", [options], ids=["emulator"])


def settings_with(**overrides: Any) -> Any:
    return pytest.mark.parametrize("telegram_overrides", [overrides], ids=["settings"])


@pytest.fixture
async def emulator(emulator_options: dict[str, Any]) -> AsyncIterator[TelegramEmulator]:
    """Loose limits unless a test asks for Telegram's own."""
    options: dict[str, Any] = {
        "per_chat_limit": None,
        "global_limit": None,
        "webhook_backoff": (0.05, 0.1, 0.2),
        "timeout_delay": 1.0,
        **emulator_options,
    }
    emu = TelegramEmulator(TOKEN, local_mode=True, **options)
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture
async def runtime(
    telegram_overrides: dict[str, Any],
    tmp_path: Path,
    database_url: str,
    keyring: KeyRing,
    redis_prefix: str,
    emulator: TelegramEmulator,
) -> AsyncIterator[Runtime]:
    """The application with the Telegram channel pointed at the emulator (overrides conftest)."""
    overrides: dict[str, Any] = {
        "telegram_token": TOKEN,
        "telegram_api_base_url": emulator.base_url,
        "telegram_bot_username": emulator.bot_username,
        "telegram_webhook_secret": SECRET,
        "telegram_register_webhook": False,
        "telegram_per_chat_limit": 50,
        "telegram_per_chat_window_seconds": 1.0,
        "dispatcher_interval_seconds": 0.05,
        "telegram_poll_timeout_seconds": 1,
        **telegram_overrides,
    }
    settings = make_settings(
        tmp_path, database_url, redis_url=REDIS_URL, redis_prefix=redis_prefix, **overrides
    )
    rt = await Runtime.create(settings, keyring=keyring)
    await _truncate(rt)
    yield rt
    await rt.close()


@pytest.fixture
async def telegram_channel(runtime: Runtime) -> TelegramChannel:
    channel = runtime.channels["telegram"]
    assert isinstance(channel, TelegramChannel)
    return channel


@pytest.fixture
async def dispatching(runtime: Runtime) -> AsyncIterator[None]:
    """The outbox dispatcher running in the background, as in `surveybot serve`."""
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.dispatcher.run_forever(stop))
    yield
    stop.set()  # a graceful stop: cancelling it mid-query would strand a database connection
    await asyncio.wait_for(task, 30)


@pytest.fixture
async def hooked(
    client: Client, telegram_channel: TelegramChannel, dispatching: None
) -> TelegramChannel:
    """Webhook mode: the emulator delivers to the test server's /telegram/webhook."""
    assert await telegram_channel.register_webhook(str(client.make_url("/telegram/webhook")))
    return telegram_channel


# ============================================================================ helpers
class Agency:
    """The agency's side, through the real HTTP API."""

    def __init__(self, client: Client, api_key: str, runtime: Runtime) -> None:
        self.client = client
        self.runtime = runtime
        self.headers = {"Authorization": f"Bearer {api_key}"}

    async def register(self, code: str, **extra: Any) -> dict[str, Any]:
        body = {
            "dossier_code": code,
            "procedure_code": "1.001234",
            "official_code": "CB01",
            "received_at": (today() - dt.timedelta(days=6)).isoformat(),
            "due_at": (today() + dt.timedelta(days=1)).isoformat(),
            **extra,
        }
        response = await self.client.post("/api/v1/dossiers", headers=self.headers, json=body)
        assert response.status in (200, 201), await response.text()
        return dict(await response.json())

    async def report(self, *codes: str) -> dict[str, Any]:
        await settled(self.runtime)
        results = [{"dossier_code": c, "returned_at": today().isoformat()} for c in codes]
        response = await self.client.post(
            "/api/v1/results", headers=self.headers, json={"results": results}
        )
        assert response.status == 200, await response.text()
        return dict(await response.json())


@pytest.fixture
def agency_api(client: Client, api_key: str, runtime: Runtime) -> Agency:
    return Agency(client, api_key, runtime)


async def settled(runtime: Runtime, timeout: float = 10.0) -> None:
    """Wait until the outbox is idle.

    On the embedded SQLite backend a batch report that overlaps a dispatcher commit can fail
    with "database is locked" (a deferred transaction cannot upgrade to a writer once another
    connection committed); that is a storage-layer matter outside the Telegram channel, so the
    agency here reports only once the replies of the previous step are out.
    """
    async with asyncio.timeout(timeout):
        while True:
            async with runtime.sessions() as session:
                busy = (
                    await session.execute(
                        select(func.count())
                        .select_from(OutboxMessage)
                        .where(OutboxMessage.status.in_(("pending", "sending")))
                    )
                ).scalar_one()
            if not busy:
                return
            await asyncio.sleep(0.05)


def texts(emulator: TelegramEmulator, uid: int) -> list[str]:
    return [m.text or "" for m in emulator.bot_messages_for(uid)]


def live_question(emulator: TelegramEmulator, uid: int, done: set[int]) -> ChatMessage | None:
    """The newest bot message with survey buttons, newer than every answered one."""
    after = max(done, default=0)
    for message in reversed(emulator.bot_messages_for(uid)):
        if message.message_id <= after:
            break
        if any((data or "").startswith("a:") for _, data in message.buttons):
            return message
    return None


def finished(emulator: TelegramEmulator, uid: int) -> bool:
    return any(t.startswith(OUTROS) for t in texts(emulator, uid))


async def answer_survey(
    emulator: TelegramEmulator,
    uid: int,
    *,
    labels: dict[str, str] | None = None,
    typed: dict[str, str] | None = None,
    timeout: float = 20.0,
) -> list[str]:
    """Tap the first button (or ``labels[question]``; or type ``typed[question]``) of every
    question until the thank-you arrives; each answered question must lose its buttons."""
    labels, typed = labels or {}, typed or {}
    done: set[int] = set()
    answered: list[str] = []
    for _ in range(20):
        await emulator.wait_until(
            lambda: finished(emulator, uid) or live_question(emulator, uid, done) is not None,
            timeout,
        )
        question = live_question(emulator, uid, done)
        if question is None:
            break
        data = next(d for _, d in question.buttons if d and d.startswith("a:"))
        qid = data.split(":")[2]
        if qid in typed:
            await emulator.send_text(uid, typed[qid])
        elif qid in labels:
            await emulator.tap_button(uid, question.message_id, question.button_data(labels[qid]))
        else:
            await emulator.tap_button(uid, question.message_id, data)
        done.add(question.message_id)
        answered.append(qid)
        # The question is edited in place: the chosen answer shows, no button is left.
        await emulator.wait_until(lambda q=question: not q.buttons and q.edited, timeout)  # type: ignore[misc]
    await emulator.wait_until(lambda: finished(emulator, uid), timeout)
    return answered


async def export_rows(runtime: Runtime) -> list[dict[str, str]]:
    text = await export.export_csv(runtime.sessions)
    return list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))


async def count(runtime: Runtime, model: Any) -> int:
    async with runtime.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def start_citizen(
    emulator: TelegramEmulator, uid: int, token: str, expect: int = 1, **who: Any
) -> list[ChatMessage]:
    await emulator.open_deep_link(uid, token, **who)
    return await emulator.wait_for_bot_messages(uid, expect, timeout=10)


# ============================================================================ the survey
async def test_citizen_answers_the_survey_by_taps_and_the_export_has_it(
    emulator: TelegramEmulator, hooked: TelegramChannel, agency_api: Agency, runtime: Runtime
) -> None:
    code = "000.00.12.H29-261120-0001"
    registration = await agency_api.register(code)
    token = registration["rating_token"]
    assert registration["telegram_url"] == f"https://t.me/{emulator.bot_username}?start={token}"

    uid = emulator.new_user_id()
    [thanks] = await start_citizen(emulator, uid, token)
    assert (thanks.text or "").startswith("Cảm ơn Ông/Bà. Ông/Bà sẽ nhận")  # Vietnamese by default

    outcome = await agency_api.report(code)
    assert outcome["items"][0]["survey_status"] == "sent"
    await emulator.wait_for_bot_messages(uid, 3, timeout=10)
    assert texts(emulator, uid)[1].startswith("Kính chào")

    answered = await answer_survey(
        emulator, uid, typed={"comment": "Cán bộ tốt, gọi 0912 345 678 nếu cần"}
    )
    assert answered == ["c3", "c4", "c6", "c7", "overall", "comment"]

    # Every question now shows its answer and has no live button; the thank-you came last.
    questions = [m for m in emulator.bot_messages_for(uid) if m.edited]
    assert len(questions) == 6
    assert all("✅ Đã chọn:" in (m.text or "") and not m.buttons for m in questions)
    assert "✅ Đã chọn: Không lần nào" in (questions[0].text or "")
    assert texts(emulator, uid)[-1].startswith(OUTRO_VI)
    # Each tap was answered at once with the label of the button tapped.
    answers = [emulator.callback_answer(q) for q in emulator.callback_queries]
    assert len(answers) == 5 and all(a.answered for a in answers)
    assert answers[0].answer_text == "Không lần nào"

    [row] = await export_rows(runtime)
    assert row["channel"] == "telegram" and row["official"] == "CB01"
    assert row["q_c3"] == "0" and row["q_overall"] == "rat_hai_long"
    assert row["score_band"] == "Xuất sắc" and float(row["score_total"]) == 18.0
    assert "0912" not in row["q_comment"] and "[số]" in row["q_comment"]
    # Nothing was refused by the strict emulator on the way.
    assert [c for c in emulator.calls if not c.ok] == []


async def test_deep_link_and_qr_codes(
    client: Client, agency_api: Agency, emulator: TelegramEmulator, runtime: Runtime
) -> None:
    registration = await agency_api.register("HS-QR-1")
    token = registration["rating_token"]
    link = f"https://t.me/{emulator.bot_username}?start={token}"
    assert registration["telegram_url"] == link and len(token) <= 64
    for kind in ("svg", "png"):
        response = await client.get(f"/r/{token}/qr.{kind}", params={"target": "telegram"})
        assert response.status == 200
        body = await response.read()
        expected = io.BytesIO()
        segno.make(link, error="m").save(
            expected, kind=kind, **({"scale": 6} if kind == "svg" else {"scale": 8}), border=2
        )
        assert body == expected.getvalue()
        assert body.startswith(b"\x89PNG" if kind == "png" else b"<?xml")
    page = await client.get(f"/r/{token}")
    assert link in await page.text()


async def test_opening_the_link_after_the_result_starts_the_survey_at_once(
    emulator: TelegramEmulator, hooked: TelegramChannel, agency_api: Agency, runtime: Runtime
) -> None:
    token = (await agency_api.register("HS-LATE-1"))["rating_token"]
    assert (await agency_api.report("HS-LATE-1"))["items"][0][
        "survey_status"
    ] == "waiting_for_binding"
    uid = emulator.new_user_id()
    messages = await start_citizen(emulator, uid, token, expect=2)
    assert (messages[0].text or "").startswith("Kính chào") and messages[1].buttons
    # Opening the same link again is harmless: the token was single-use.
    await emulator.open_deep_link(uid, token)
    await emulator.wait_for_bot_messages(uid, 3)
    assert await count(runtime, SurveyLedger) == 1


async def test_typing_the_token_never_binds(
    emulator: TelegramEmulator, hooked: TelegramChannel, agency_api: Agency, runtime: Runtime
) -> None:
    token = (await agency_api.register("HS-TYPED-1"))["rating_token"]
    uid = emulator.new_user_id()
    await start_citizen(emulator, uid, "", expect=1)  # /start with no payload
    await emulator.send_text(uid, token)
    await emulator.wait_for_bot_messages(uid, 2)
    outcome = await agency_api.report("HS-TYPED-1")
    assert outcome["items"][0]["survey_status"] == "waiting_for_binding"


# ============================================================================ webhook security
@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"X-Telegram-Bot-Api-Secret-Token": "wrong"}, 403),
     ({"X-Telegram-Bot-Api-Secret-Token": SECRET + "x"}, 403),
     ({"X-Telegram-Bot-Api-Secret-Token": ""}, 403)],
)  # fmt: skip
async def test_forged_webhooks_are_refused_and_store_nothing(
    client: Client,
    runtime: Runtime,
    agency_api: Agency,
    headers: dict[str, str],
    status: int,
) -> None:
    token = (await agency_api.register("HS-FORGED-1"))["rating_token"]
    before = await dump_database(runtime)
    forged = {
        "update_id": 1,
        "message": {
            "message_id": 1,
            "date": 0,
            "chat": {"id": 4242, "type": "private"},
            "from": {"id": 4242, "is_bot": False, "first_name": "Mallory"},
            "text": f"/start {token}",
        },
    }
    response = await client.post("/telegram/webhook", json=forged, headers=headers)
    assert response.status == status
    assert (await response.json())["error"] in ("missing_secret_token", "invalid_secret_token")
    assert await dump_database(runtime) == before
    assert await count(runtime, OutboxMessage) == 0
    # The link still works for the real citizen: nothing was consumed.
    good = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    response = await client.post("/telegram/webhook", json=forged, headers=good)
    assert response.status == 200 and (await response.json())["outcome"] == "message"
    assert await count(runtime, OutboxMessage) == 1


async def test_bad_bodies_with_the_right_secret_get_clear_answers(
    client: Client, runtime: Runtime
) -> None:
    good = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    response = await client.post("/telegram/webhook", data=b"{not json", headers=good)
    assert response.status == 400
    response = await client.post("/telegram/webhook", json=[1, 2], headers=good)
    assert response.status == 400
    # A well-formed update of a kind we do not handle is acknowledged, not retried forever.
    edited = {
        "update_id": 5,
        "edited_message": {
            "message_id": 1,
            "date": 0,
            "edit_date": 1,
            "chat": {"id": 1, "type": "private"},
            "text": "x",
        },
    }
    response = await client.post("/telegram/webhook", json=edited, headers=good)
    assert response.status == 200 and (await response.json())["outcome"] == "ignored"
    group = {
        "update_id": 6,
        "message": {"message_id": 1, "date": 0, "chat": {"id": -100, "type": "group"}, "text": "/stop"},
    }  # fmt: skip
    response = await client.post("/telegram/webhook", json=group, headers=good)
    assert response.status == 200 and (await response.json())["outcome"] == "ignored"
    assert await count(runtime, OutboxMessage) == 0 and await count(runtime, OptOut) == 0


# ============================================================================ reliability
@emulator_with(per_chat_limit=3, per_chat_window=3.0, global_limit=30)
@settings_with(telegram_per_chat_limit=30, telegram_per_chat_window_seconds=1.0)
async def test_a_storm_of_429_and_5xx_ends_with_every_message_seen_once(
    emulator: TelegramEmulator, hooked: TelegramChannel, agency_api: Agency, runtime: Runtime
) -> None:
    """Our own limiter is loosened here so that Telegram's 429s really happen."""
    citizens = []
    for n in range(3):
        code = f"HS-STORM-{n}"
        token = (await agency_api.register(code))["rating_token"]
        uid = emulator.new_user_id()
        await start_citizen(emulator, uid, token)
        citizens.append((code, uid))
    emulator.inject("sendMessage", "429", count=4, retry_after=1)
    emulator.inject("sendMessage", "500", count=3)
    emulator.inject("editMessageText", "502", count=3)
    emulator.inject("editMessageText", "429", count=2, retry_after=1)
    await agency_api.report(*(code for code, _ in citizens))
    await asyncio.gather(*(answer_survey(emulator, uid, timeout=40) for _, uid in citizens))

    faults = [c for c in emulator.calls if c.fault or c.status == 429]
    assert len([c for c in faults if c.status == 429]) >= 6 and len(faults) >= 12
    for _, uid in citizens:
        shown = texts(emulator, uid)
        assert len(shown) == len(set(shown)), "a message was delivered twice"
        assert len(shown) == 1 + 1 + 6 + 1  # thanks, intro, six questions, thank-you
    assert len(await export_rows(runtime)) == 3
    async with runtime.sessions() as session:
        dead = (
            await session.execute(select(OutboxMessage).where(OutboxMessage.status == "dead"))
        ).all()
    assert dead == []


@emulator_with(per_chat_limit=1, per_chat_window=1.0, global_limit=30)
@settings_with(telegram_per_chat_limit=1, telegram_per_chat_window_seconds=1.0)
async def test_at_one_message_a_second_per_chat_an_answers_two_replies_go_out_in_one_attempt(
    emulator: TelegramEmulator, hooked: TelegramChannel, agency_api: Agency, runtime: Runtime
) -> None:
    """At Telegram's 1/s per chat, a tap's acknowledgement (the answer edited in) and the next
    question are a second apart: the dispatcher waits for the chat's slot instead of handing the
    question back to the outbox as a failed attempt, and Telegram never answers 429."""
    token = (await agency_api.register("HS-1PS"))["rating_token"]
    uid = emulator.new_user_id()
    await start_citizen(emulator, uid, token)
    await agency_api.report("HS-1PS")
    assert await answer_survey(emulator, uid, timeout=40) == [
        "c3", "c4", "c6", "c7", "overall", "comment"
    ]  # fmt: skip
    assert [c for c in emulator.calls if c.status == 429] == []

    async def outbox_rows() -> list[OutboxMessage]:
        async with runtime.sessions() as session:
            return list((await session.execute(select(OutboxMessage))).scalars().all())

    async def all_marked() -> bool:  # the thank-you is marked sent just after it arrived
        return {r.status for r in await outbox_rows()} == {"sent"}

    await eventually(all_marked)
    rows = await outbox_rows()
    assert max(r.attempts for r in rows) == 1, "a send was handed back for the chat's slot"


async def test_a_redelivered_update_never_counts_an_answer_twice(
    emulator: TelegramEmulator,
    hooked: TelegramChannel,
    agency_api: Agency,
    runtime: Runtime,
    client: Client,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = (await agency_api.register("HS-REDO-1"))["rating_token"]
    uid = emulator.new_user_id()
    await start_citizen(emulator, uid, token)
    await agency_api.report("HS-REDO-1")
    await emulator.wait_until(lambda: live_question(emulator, uid, set()) is not None)
    question = live_question(emulator, uid, set())
    assert question is not None

    # The first processing fails inside the service: the update is already stored, so
    # Telegram gets its 200 once and our inbox retries it (Telegram is never asked to).
    service = runtime.service
    real_handle = service.handle
    failures = [1]

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures:
            failures.pop()
            raise ConnectionError("database went away")
        return await real_handle(*args, **kwargs)

    monkeypatch.setattr(service, "handle", flaky)
    update = await emulator.tap_button(uid, question.message_id, question.buttons[0][1] or "")
    await emulator.wait_idle(timeout=5)
    attempts = [a for a in emulator.webhook_attempts if a.update_id == update["update_id"]]
    assert [a.status for a in attempts] == [200]
    assert not failures  # the first try did fail
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)  # past the retry's backoff
    monkeypatch.setattr(runtime.inbox, "clock", lambda: later)
    await runtime.inbox.run_once()
    await emulator.wait_until(lambda: not question.buttons)

    # The same update again (a lost 200, a second worker): acknowledged, not processed, even
    # with every key of ours in Redis gone (the marks are the inbox's rows).
    good = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    from redis.asyncio import Redis

    redis = Redis.from_url(REDIS_URL)
    keys = [k async for k in redis.scan_iter(match=f"{redis_prefix}*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()
    again = await client.post("/telegram/webhook", json=update, headers=good)
    assert again.status == 200 and (await again.json())["outcome"] == "duplicate"
    # The same tap again (within SURVEYBOT_TAP_DEDUP_SECONDS) is the same tap: no second answer
    # and no "earlier question" note either (tests/test_flood.py).
    await settled(runtime)
    assert "Nút này thuộc câu hỏi trước" not in " ".join(texts(emulator, uid))
    async with runtime.sessions() as session:
        answers = (await session.execute(select(Answer.question_id))).scalars().all()
    assert answers == ["c3"]


async def test_stale_and_forged_buttons_get_a_polite_reply_and_change_nothing(
    emulator: TelegramEmulator, hooked: TelegramChannel, agency_api: Agency, runtime: Runtime
) -> None:
    token = (await agency_api.register("HS-STALE-1"))["rating_token"]
    uid = emulator.new_user_id()
    await start_citizen(emulator, uid, token)
    await agency_api.report("HS-STALE-1")
    await emulator.wait_until(lambda: live_question(emulator, uid, set()) is not None)
    first = live_question(emulator, uid, set())
    assert first is not None
    stale_data = first.buttons[2][1] or ""
    await emulator.tap_button(uid, first.message_id, first.buttons[0][1] or "")
    await emulator.wait_until(lambda: live_question(emulator, uid, {first.message_id}) is not None)
    shown = len(emulator.bot_messages_for(uid))

    tag = stale_data.split(":")[1]
    forged = [
        stale_data,  # the first question again, after it was answered
        f"a:{tag}:c4:not-an-option",  # the right question, an option that does not exist
        "a:zzzzzz:c4:none",  # another conversation's tag
        "garbage",
        "cmd:frobnicate",
        "a:" + "x" * 62,  # 64 bytes
    ]
    for data in forged:
        update = await emulator.tap_button(uid, first.message_id, data, force=True)
        query = emulator.callback_answer(update["callback_query"]["id"])
        await emulator.wait_until(lambda q=query: q.answered)  # type: ignore[misc]
        await emulator.wait_idle()
    # A tap on a message that no longer exists (Telegram sends an inaccessible message).
    update = await emulator.tap_button(uid, 9999, stale_data, force=True)
    await emulator.wait_idle()
    assert emulator.callback_answer(update["callback_query"]["id"]).answered
    await settled(runtime)
    replies = texts(emulator, uid)[shown:]
    assert any("Nút này thuộc câu hỏi trước" in t for t in replies)
    async with runtime.sessions() as session:
        answers = (await session.execute(select(Answer.question_id, Answer.value))).all()
    assert answers == [("c3", "0")]
    # The answered question kept its answer and got no buttons back.
    assert not first.buttons and "Đã chọn" in (first.text or "")


async def test_free_text_where_a_choice_is_expected_re_asks_with_help(
    emulator: TelegramEmulator, hooked: TelegramChannel, agency_api: Agency, runtime: Runtime
) -> None:
    token = (await agency_api.register("HS-TEXT-1"))["rating_token"]
    uid = emulator.new_user_id()
    await start_citizen(emulator, uid, token)
    await agency_api.report("HS-TEXT-1")
    await emulator.wait_for_bot_messages(uid, 3)
    await emulator.send_text(uid, "hôm nay trời đẹp quá 🌞")
    await emulator.wait_for_bot_messages(uid, 5)
    help_text, again = emulator.bot_messages_for(uid)[3:5]
    assert "Xin lỗi, tôi chưa hiểu" in (help_text.text or "")
    assert again.text == emulator.bot_messages_for(uid)[2].text and again.buttons
    # A typed option number is understood, and the re-asked question is the one edited.
    await emulator.send_text(uid, "2")
    await emulator.wait_until(lambda: not again.buttons)
    assert "Đã chọn: Một lần" in (again.text or "")
    # The older copy of the same question lost its buttons too.
    await emulator.wait_until(lambda: not emulator.bot_messages_for(uid)[2].buttons)
    async with runtime.sessions() as session:
        answers = (await session.execute(select(Answer.question_id, Answer.value))).all()
    assert answers == [("c3", "1")]


async def test_multiple_choice_toggles_edit_the_question_in_place(
    emulator: TelegramEmulator, hooked: TelegramChannel, agency_api: Agency, runtime: Runtime
) -> None:
    token = (await agency_api.register("HS-MULTI-1", survey="hanoi-4"))["rating_token"]
    uid = emulator.new_user_id()
    await start_citizen(emulator, uid, token)
    await agency_api.report("HS-MULTI-1")
    await emulator.wait_for_bot_messages(uid, 3)
    await emulator.tap_button_text(uid, "Không hài lòng")
    await emulator.wait_for_bot_messages(uid, 4)
    reasons = emulator.bot_messages_for(uid)[-1]
    assert len(reasons.buttons) == 5  # four criteria and Done
    await emulator.tap_button_text(uid, "Thái độ của cán bộ", reasons.message_id)
    await emulator.wait_until(lambda: "✅ Thái độ của cán bộ" in [b for b, _ in reasons.buttons])
    await emulator.tap_button_text(uid, "Yêu cầu về hồ sơ", reasons.message_id)
    await emulator.wait_until(lambda: "✅ Yêu cầu về hồ sơ" in [b for b, _ in reasons.buttons])
    assert len(emulator.bot_messages_for(uid)) == 4  # toggles edit the question, never add
    done = next(d for label, d in reasons.buttons if label in ("Xong", "Done"))
    await emulator.tap_button(uid, reasons.message_id, done or "")
    await emulator.wait_until(lambda: not reasons.buttons)
    assert "Yêu cầu về hồ sơ, Thái độ của cán bộ" in (reasons.text or "")
    await answer_survey(emulator, uid)
    async with runtime.sessions() as session:
        rows = (await session.execute(select(Answer.question_id, Answer.value))).all()
    values: dict[str, Any] = {qid: value for qid, value in rows}
    assert values["reasons"] == ["dossier", "attitude"]


async def test_a_blocked_bot_makes_the_invitation_undeliverable_without_retries(
    emulator: TelegramEmulator, hooked: TelegramChannel, agency_api: Agency, runtime: Runtime
) -> None:
    token = (await agency_api.register("HS-BLOCK-1"))["rating_token"]
    uid = emulator.new_user_id()
    await start_citizen(emulator, uid, token)
    emulator.block_user(uid)
    await agency_api.report("HS-BLOCK-1")

    async def ledger_status() -> str:
        async with runtime.sessions() as session:
            return str((await session.execute(select(SurveyLedger.status))).scalar_one())

    async def undeliverable() -> bool:
        return await ledger_status() == "undeliverable"

    await eventually(undeliverable, timeout=10)
    assert await ledger_status() == "undeliverable"
    # Nothing is left to send (the refused message is dead, the rest cancelled): no retry can
    # come after this, so the count below is final.
    await settled(runtime)
    refused = [c for c in emulator.calls_to("sendMessage") if c.status == 403]
    assert len(refused) == 1  # no retry storm


# ============================================================================ commands
async def test_commands_on_telegram(
    emulator: TelegramEmulator, hooked: TelegramChannel, agency_api: Agency, runtime: Runtime
) -> None:
    token = (await agency_api.register("HS-CMD-1"))["rating_token"]
    uid = emulator.new_user_id()
    await start_citizen(emulator, uid, token)
    await agency_api.report("HS-CMD-1")
    await emulator.wait_for_bot_messages(uid, 3)

    await emulator.send_text(uid, "/help")
    await emulator.wait_for_bot_messages(uid, 4)
    assert "/privacy" in texts(emulator, uid)[-1]
    await emulator.send_text(uid, "/privacy@SurveyTestBot")
    await emulator.wait_for_bot_messages(uid, 5)
    privacy = texts(emulator, uid)[-1]
    assert "/delete" in privacy and privacy != texts(emulator, uid)[-2]

    await emulator.send_text(uid, "/lang")
    await emulator.wait_for_bot_messages(uid, 6)
    picker = emulator.bot_messages_for(uid)[-1]
    assert [label for label, _ in picker.buttons] == ["Tiếng Việt", "English"]
    await emulator.tap_button_text(uid, "English", picker.message_id)
    await emulator.wait_for_bot_messages(uid, 8)
    assert texts(emulator, uid)[-2] == "Language set to English."
    english = emulator.bot_messages_for(uid)[-1]
    assert english.text and english.text.startswith("How many times")
    assert english.buttons[0][0] == "Not at all"
    await emulator.wait_until(lambda: not picker.buttons)  # the picker is spent

    await answer_survey(emulator, uid, labels={"c3": "Once"})
    # The Vietnamese copy of the first question lost its buttons when it was answered.
    await emulator.wait_until(lambda: not emulator.bot_messages_for(uid)[2].buttons)
    async with runtime.sessions() as session:
        assert (await session.execute(select(Response.language))).scalar_one() == "en"


async def test_stop_then_a_new_result_is_not_surveyed(
    emulator: TelegramEmulator, hooked: TelegramChannel, agency_api: Agency, runtime: Runtime
) -> None:
    token = (await agency_api.register("HS-STOP-1"))["rating_token"]
    uid = emulator.new_user_id()
    await start_citizen(emulator, uid, token)
    await emulator.send_text(uid, "/stop")
    await emulator.wait_for_bot_messages(uid, 2)
    assert "không nhận" in texts(emulator, uid)[-1] or "not receive" in texts(emulator, uid)[-1]
    outcome = await agency_api.report("HS-STOP-1")
    assert outcome["items"][0]["survey_status"] != "sent"
    await settled(runtime)  # whatever the result queued has gone out by now
    assert len(emulator.bot_messages_for(uid)) == 2
    assert await count(runtime, OptOut) == 1


async def test_delete_erases_my_answers_after_confirmation(
    emulator: TelegramEmulator, hooked: TelegramChannel, agency_api: Agency, runtime: Runtime
) -> None:
    token = (await agency_api.register("HS-DEL-1"))["rating_token"]
    uid = emulator.new_user_id()
    await start_citizen(emulator, uid, token)
    await agency_api.report("HS-DEL-1")
    await answer_survey(emulator, uid)
    assert len(await export_rows(runtime)) == 1

    shown = len(emulator.bot_messages_for(uid))
    await emulator.send_text(uid, "/delete")
    await emulator.wait_for_bot_messages(uid, shown + 1)
    confirm = emulator.bot_messages_for(uid)[-1]
    assert len(confirm.buttons) == 2
    await emulator.tap_button(uid, confirm.message_id, confirm.buttons[1][1] or "")  # No, keep
    await emulator.wait_for_bot_messages(uid, shown + 2)
    assert await count(runtime, Response) == 1 and not confirm.buttons

    await emulator.send_text(uid, "/delete")
    await emulator.wait_for_bot_messages(uid, shown + 3)
    confirm = emulator.bot_messages_for(uid)[-1]
    await emulator.tap_button(uid, confirm.message_id, confirm.buttons[0][1] or "")  # Yes
    await emulator.wait_for_bot_messages(uid, shown + 4)
    assert texts(emulator, uid)[-1] == "Đã xoá 1 phiếu trả lời."
    assert await count(runtime, Response) == 0 and await count(runtime, Answer) == 0
    assert await export_rows(runtime) == []


# ============================================================================ rate limits
@emulator_with(per_chat_limit=3, per_chat_window=3.0, global_limit=30, global_window=1.0)
@settings_with(
    telegram_per_chat_limit=3, telegram_per_chat_window_seconds=3.0, telegram_per_bot_limit=25
)
async def test_outbound_stays_within_telegrams_limits_and_replies_jump_the_queue(
    emulator: TelegramEmulator, hooked: TelegramChannel, agency_api: Agency, runtime: Runtime
) -> None:
    # A backlog bigger than one dispatcher round, as a day's batch of hundreds would be.
    runtime.dispatcher.batch_size = 10
    # One citizen is in the middle of a survey.
    token = (await agency_api.register("HS-RATE-X"))["rating_token"]
    busy = emulator.new_user_id()
    await start_citizen(emulator, busy, token)
    await agency_api.report("HS-RATE-X")
    await emulator.wait_until(lambda: live_question(emulator, busy, set()) is not None, 10)
    question = live_question(emulator, busy, set())
    assert question is not None

    # A day's batch of 40 results for citizens who opened their links at reception.
    crowd = []
    for n in range(40):
        token = (await agency_api.register(f"HS-RATE-{n}"))["rating_token"]
        uid = emulator.new_user_id()
        await emulator.open_deep_link(uid, token)
        crowd.append(uid)
    await emulator.wait_until(
        lambda: all(len(emulator.bot_messages_for(u)) == 1 for u in crowd), 30
    )
    await agency_api.report(*(f"HS-RATE-{n}" for n in range(40)))
    # The backlog of 80 invitation messages is draining: the first have gone out.
    await emulator.wait_until(
        lambda: sum(len(emulator.bot_messages_for(u)) - 1 for u in crowd) >= 5, 10
    )
    await emulator.tap_button(busy, question.message_id, question.buttons[0][1] or "")
    await emulator.wait_until(
        lambda: live_question(emulator, busy, {question.message_id}) is not None, 10
    )
    reply_at = emulator.bot_messages_for(busy)[-1].history[0].at
    await emulator.wait_until(
        lambda: all(len(emulator.bot_messages_for(u)) == 3 for u in crowd), 60
    )
    last_invitation = max(emulator.bot_messages_for(u)[-1].history[0].at for u in crowd)
    assert reply_at < last_invitation, "the reply waited behind the invitations"

    refused = [c for c in emulator.calls if c.status == 429]
    assert len(refused) <= 2, f"{len(refused)} flood errors"
    sends = sorted(
        s.at for u in [busy, *crowd] for m in emulator.bot_messages_for(u) for s in m.history
    )
    for i in range(len(sends) - 30):
        assert sends[i + 30] - sends[i] >= 0.95, "more than 30 messages in one second"


# ============================================================================ polling
@settings_with(telegram_polling=True)
async def test_long_polling_mode_runs_the_whole_survey(
    emulator: TelegramEmulator, client: Client, agency_api: Agency, runtime: Runtime
) -> None:
    channel = runtime.channels["telegram"]
    assert isinstance(channel, TelegramChannel)
    assert await channel.register_webhook("http://127.0.0.1:9/unused")  # polling must remove it
    runtime.start_background()
    token = (await agency_api.register("HS-POLL-1"))["rating_token"]
    await agency_api.report("HS-POLL-1")
    uid = emulator.new_user_id()
    await start_citizen(emulator, uid, token, expect=2)
    assert emulator.webhook_url is None
    await answer_survey(emulator, uid)
    await emulator.wait_idle()
    [row] = await export_rows(runtime)
    assert row["channel"] == "telegram" and row["complete"] == "1"
    # The poller's offset confirmed every update; nothing is left to redeliver.
    assert emulator.pending_update_count == 0


# ============================================================================ confidentiality
async def test_no_raw_telegram_identifier_is_stored_logged_or_exported(
    emulator: TelegramEmulator,
    telegram_channel: TelegramChannel,
    dispatching: None,
    runtime: Runtime,
    api_key: str,
    redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    code = "000.00.12.H29-261120-0777"
    first_name, username = "Xuanmaiquynh", "xuanmai_secret_77"
    server = TestServer(create_app(runtime, background=False))
    await server.start_server(access_log_class=RouteAccessLogger)
    async with TestClient(server) as client:
        assert await telegram_channel.register_webhook(str(client.make_url("/telegram/webhook")))
        agency_api = Agency(client, api_key, runtime)
        token = (await agency_api.register(code))["rating_token"]
        uid = emulator.new_user_id()
        await start_citizen(emulator, uid, token, first_name=first_name, username=username)
        await agency_api.report(code)
        await answer_survey(emulator, uid, typed={"comment": f"Hồ sơ {code} xử lý nhanh"})
        await emulator.send_text(uid, "/privacy")
        await emulator.wait_until(lambda: "/delete" in texts(emulator, uid)[-1])
        await emulator.wait_idle()
        csv_text = await export.export_csv(runtime.sessions, "day")

    database = await dump_database(runtime)
    redis_dump = await dump_redis(redis_prefix)
    logs = caplog.text
    assert "POST /telegram/webhook 200" in logs  # the access log was captured
    assert f"{redis_prefix}tg:" in redis_dump  # Telegram state went through the real Redis
    assert "[mã hồ sơ]" in database or code not in database
    tables = {t.name for t in Base.metadata.sorted_tables}
    assert {"outbox", "response", "answer", "survey_ledger"} <= tables

    identifiers = {
        "chat id": str(uid),
        "first name": first_name,
        "username": username,
        "dossier code": code,
        "dossier code (folded)": code.casefold(),
        "rating token": token,
        "bot token": TOKEN.split(":", 1)[1],
        "webhook secret": SECRET,
    }
    assert_absent(
        identifiers, {"database": database, "redis": redis_dump, "logs": logs, "export": csv_text}
    )
    assert json.dumps(uid) not in redis_dump
