"""Tests of the Telegram Bot API emulator, driven by the real python-telegram-bot client.

Using PTB over real HTTP proves the emulator speaks the wire format our adapter will use
(form-encoded params with JSON-serialised nested fields, status-code based error mapping).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import telegram
from aiohttp import web
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import (
    BadRequest,
    Conflict,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)
from telegram.request import HTTPXRequest

from bot.emulators.telegram import ERR_NOT_MODIFIED, TelegramEmulator

# Opt into PTB's timedelta durations so RetryAfter.retry_after does not warn.
os.environ.setdefault("PTB_TIMEDELTA", "true")

TOKEN = "987654321:AAtest-token_ok"


def keyboard(*pairs: tuple[str, str]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(t, callback_data=d)] for t, d in pairs])


@pytest.fixture
async def emulator() -> AsyncIterator[TelegramEmulator]:
    emu = TelegramEmulator(
        TOKEN,
        per_chat_limit=None,
        global_limit=None,
        webhook_backoff=(0.02, 0.05),
        timeout_delay=0.6,
        local_mode=True,  # webhooks to this test's plain-HTTP receivers
    )
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture
async def bot(emulator: TelegramEmulator) -> AsyncIterator[telegram.Bot]:
    async with telegram.Bot(TOKEN, base_url=emulator.base_url) as b:
        yield b


async def started_user(emulator: TelegramEmulator) -> int:
    uid = emulator.new_user_id()
    await emulator.open_deep_link(uid, "tok_123-abc", first_name="Lan")
    return uid


class Receiver:
    """A tiny webhook endpoint that fails the first ``fail`` POSTs with 500."""

    def __init__(self, fail: int = 0, fail_chat: int | None = None) -> None:
        self.fail = fail
        self.fail_chat = fail_chat
        self.received: list[tuple[dict[str, Any], str | None]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        chat = body.get("message", {}).get("chat", {}).get("id")
        if self.fail > 0 and (self.fail_chat is None or chat == self.fail_chat):
            self.fail -= 1
            return web.Response(status=500)
        self.received.append((body, request.headers.get("X-Telegram-Bot-Api-Secret-Token")))
        return web.Response(text="ok")

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def test_get_me_and_auth(emulator: TelegramEmulator, bot: telegram.Bot) -> None:
    assert bot.username == "SurveyTestBot"
    assert emulator.calls_to("getMe")[0].status == 200
    with pytest.raises(InvalidToken):
        async with telegram.Bot("1:wrong", base_url=emulator.base_url):
            pass
    with pytest.raises(EndPointNotFound):
        await bot.do_api_request("frobnicate")


async def test_send_message_with_inline_keyboard(
    emulator: TelegramEmulator, bot: telegram.Bot
) -> None:
    uid = await started_user(emulator)
    assert uid > 2**32
    msg = await bot.send_message(
        uid,
        "<b>Bạn hài lòng?</b>",
        parse_mode="HTML",
        reply_markup=keyboard(("Có", "r:1:5"), ("Không", "r:1:1")),
    )
    assert msg.chat.id == uid
    assert msg.from_user is not None and msg.from_user.is_bot
    assert msg.reply_markup is not None
    last = emulator.last_message(uid)
    assert last is not None
    assert last.message_id == msg.message_id
    assert last.text == "Bạn hài lòng?"
    assert last.buttons == [("Có", "r:1:5"), ("Không", "r:1:1")]
    # The /start message is part of the transcript too.
    assert emulator.messages_for(uid)[0].text == "/start tok_123-abc"


async def test_callback_data_limit_is_in_bytes(
    emulator: TelegramEmulator, bot: telegram.Bot
) -> None:
    uid = await started_user(emulator)
    await bot.send_message(uid, "ok", reply_markup=keyboard(("x", "a" * 64)))
    too_long = "đ" * 33  # 33 characters but 66 UTF-8 bytes
    with pytest.raises(BadRequest, match=r"(?i)BUTTON_DATA_INVALID"):
        await bot.send_message(uid, "no", reply_markup=keyboard(("x", too_long)))
    assert len(emulator.bot_messages_for(uid)) == 1


async def test_text_limits_and_entities(emulator: TelegramEmulator, bot: telegram.Bot) -> None:
    uid = await started_user(emulator)
    await bot.send_message(uid, "<i>" + "a" * 4096 + "</i>", parse_mode="HTML")
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(uid, "a" * 4097)
    with pytest.raises(BadRequest, match=r"(?i)message text is empty"):
        await bot.send_message(uid, "   ")
    with pytest.raises(BadRequest, match=r"(?i)can't parse entities"):
        await bot.send_message(uid, "<b>unclosed", parse_mode="HTML")
    with pytest.raises(BadRequest, match=r"(?i)reserved"):
        await bot.send_message(uid, "Cảm ơn.", parse_mode="MarkdownV2")


async def test_who_can_be_messaged(emulator: TelegramEmulator, bot: telegram.Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)chat not found"):
        await bot.send_message(1234567890, "hi")
    stranger = emulator.new_user_id()
    emulator.register_user(stranger)
    with pytest.raises(Forbidden, match=r"(?i)initiate"):
        await bot.send_message(stranger, "hi")
    uid = await started_user(emulator)
    emulator.block_user(uid)
    with pytest.raises(Forbidden, match=r"(?i)bot was blocked by the user"):
        await bot.send_message(uid, "hi")
    # Reopening the deep link unblocks and re-sends /start.
    await emulator.open_deep_link(uid, "again")
    await bot.send_message(uid, "welcome back")
    with pytest.raises(ValueError):
        await emulator.open_deep_link(uid, "bad payload!")
    with pytest.raises(ValueError):
        await emulator.open_deep_link(uid, "a" * 65)


async def test_rate_limit_per_chat_raises_retry_after() -> None:
    emu = TelegramEmulator(TOKEN, per_chat_limit=1, per_chat_window=1.0, global_limit=2)
    await emu.start()
    try:
        async with telegram.Bot(TOKEN, base_url=emu.base_url) as bot:
            a, b, c = [await started_user(emu) for _ in range(3)]
            await bot.send_message(a, "one")
            with pytest.raises(RetryAfter) as info:
                await bot.send_message(a, "two")
            assert info.value.retry_after == dt.timedelta(seconds=1)
            await bot.send_message(b, "other chat is fine")
            with pytest.raises(RetryAfter):  # global limit of 2 per second
                await bot.send_message(c, "three")
            rejected = emu.calls_to("sendMessage")[1]
            assert rejected.status == 429
            assert rejected.response["parameters"] == {"retry_after": 1}  # type: ignore[index]
            assert len(emu.bot_messages_for(a)) == 1
    finally:
        await emu.stop()


async def test_rate_limit_with_fake_clock() -> None:
    now = [1000.0]
    emu = TelegramEmulator(TOKEN, per_chat_limit=3, per_chat_window=3.0, clock=lambda: now[0])
    await emu.start()
    try:
        async with telegram.Bot(TOKEN, base_url=emu.base_url) as bot:
            uid = await started_user(emu)
            for i in range(3):
                await bot.send_message(uid, f"burst {i}")
            with pytest.raises(RetryAfter) as info:
                await bot.send_message(uid, "too fast")
            assert info.value.retry_after == dt.timedelta(seconds=3)
            now[0] += 3.01
            await bot.send_message(uid, "later")
    finally:
        await emu.stop()


async def test_injected_faults(emulator: TelegramEmulator, bot: telegram.Bot) -> None:
    uid = await started_user(emulator)
    emulator.inject("sendMessage", "500")
    with pytest.raises(NetworkError):
        await bot.send_message(uid, "x")
    emulator.inject(None, "502")
    with pytest.raises(NetworkError):
        await bot.send_message(uid, "x")
    emulator.inject("sendMessage", "429", retry_after=7)
    with pytest.raises(RetryAfter) as info:
        await bot.send_message(uid, "x")
    assert info.value.retry_after == dt.timedelta(seconds=7)
    assert emulator.bot_messages_for(uid) == []
    await bot.send_message(uid, "finally")
    assert [c.fault for c in emulator.calls_to("sendMessage")] == ["500", "502", "429", None]


async def test_timeout_fault_executes_but_client_times_out(emulator: TelegramEmulator) -> None:
    uid = await started_user(emulator)
    request = HTTPXRequest(read_timeout=0.2)
    async with telegram.Bot(TOKEN, base_url=emulator.base_url, request=request) as bot:
        emulator.inject("sendMessage", "timeout")
        with pytest.raises(TimedOut):
            await bot.send_message(uid, "maybe delivered")
        # The ambiguous case: the message did arrive although the client saw a timeout.
        assert [m.text for m in emulator.bot_messages_for(uid)] == ["maybe delivered"]
        emulator.inject("sendMessage", "timeout_before")
        with pytest.raises(TimedOut):
            await bot.send_message(uid, "lost")
        assert len(emulator.bot_messages_for(uid)) == 1


async def test_edit_rules(emulator: TelegramEmulator, bot: telegram.Bot) -> None:
    uid = await started_user(emulator)
    kb = keyboard(("1", "q:1"), ("2", "q:2"))
    msg = await bot.send_message(uid, "Câu 1", reply_markup=kb)
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_text(
            "Câu 1", chat_id=uid, message_id=msg.message_id, reply_markup=kb
        )
    assert emulator.calls[-1].response["description"] == ERR_NOT_MODIFIED  # type: ignore[index]
    edited = await bot.edit_message_text(
        "Câu 2", chat_id=uid, message_id=msg.message_id, reply_markup=keyboard(("3", "q:3"))
    )
    assert isinstance(edited, telegram.Message)
    current = emulator.last_message(uid)
    assert current is not None and current.text == "Câu 2"
    assert current.buttons == [("3", "q:3")]
    # editMessageText without reply_markup drops the keyboard, like Telegram does.
    await bot.edit_message_text("Cảm ơn", chat_id=uid, message_id=msg.message_id)
    assert current.buttons == []
    assert [h.text for h in current.history] == ["Câu 1", "Câu 2", "Cảm ơn"]
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_reply_markup(chat_id=uid, message_id=msg.message_id)
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("x", chat_id=uid, message_id=999)


async def test_buttons_and_callback_answers(emulator: TelegramEmulator, bot: telegram.Bot) -> None:
    uid = await started_user(emulator)
    msg = await bot.send_message(uid, "Rate", reply_markup=keyboard(("5", "r:5")))
    update = await emulator.tap_button(uid, msg.message_id, "r:5")
    query = Update.de_json(update, bot).callback_query
    assert query is not None and query.data == "r:5" and query.from_user.id == uid
    assert await bot.answer_callback_query(query.id, text="Cảm ơn")
    assert emulator.callback_answer(query.id).answer_text == "Cảm ơn"
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await bot.answer_callback_query(query.id)
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await bot.answer_callback_query("12345")
    with pytest.raises(ValueError):
        await emulator.tap_button(uid, msg.message_id, "r:forged")
    forged = await emulator.tap_button(uid, 424242, "r:forged", force=True)
    assert Update.de_json(forged, bot).callback_query.data == "r:forged"  # type: ignore[union-attr]
    via_label = await emulator.tap_button_text(uid, "5")
    assert via_label["callback_query"]["data"] == "r:5"


async def test_get_updates_long_poll(emulator: TelegramEmulator, bot: telegram.Bot) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=3))
    await emulator.wait_until(lambda: emulator.long_polling, timeout=2)
    assert not poll.done()
    uid = emulator.new_user_id()
    await emulator.open_deep_link(uid, "abc", username="lan_vn")
    updates = await asyncio.wait_for(poll, 1)
    assert len(updates) == 1
    message = updates[0].message
    assert message is not None and message.text == "/start abc"
    assert message.chat.id == uid and message.from_user is not None
    assert message.entities[0].type == "bot_command"
    # Confirming with offset empties the queue and lets wait_idle return.
    assert await bot.get_updates(offset=updates[0].update_id + 1) == ()
    await emulator.wait_idle(timeout=1)


async def test_webhook_delivery_secret_and_redelivery(
    emulator: TelegramEmulator, bot: telegram.Bot
) -> None:
    async with Receiver(fail=2) as receiver:
        assert await bot.set_webhook(receiver.url, secret_token="s3cr3t_-X")
        with pytest.raises(Conflict, match=r"(?i)webhook is active"):
            await bot.get_updates()
        uid = emulator.new_user_id()
        await emulator.open_deep_link(uid, "p1")
        await emulator.send_text(uid, "hello")
        await emulator.wait_idle(timeout=2)
        texts = [body["message"]["text"] for body, _ in receiver.received]
        assert texts == ["/start p1", "hello"]  # order kept despite the failures
        assert {secret for _, secret in receiver.received} == {"s3cr3t_-X"}
        ids = [body["update_id"] for body, _ in receiver.received]
        assert ids[1] == ids[0] + 1
        statuses = [a.status for a in emulator.webhook_attempts]
        assert statuses == [500, 500, 200, 200]
        info = await bot.get_webhook_info()
        assert info.url == receiver.url and info.pending_update_count == 0
        assert (
            info.last_error_message == "Wrong response from the webhook: 500 Internal Server Error"
        )


async def test_webhook_failure_blocks_only_its_chat(
    emulator: TelegramEmulator, bot: telegram.Bot
) -> None:
    emulator.webhook_backoff = (0.3,)
    uid_a, uid_b = emulator.new_user_id(), emulator.new_user_id()
    async with Receiver(fail=1, fail_chat=uid_a) as receiver:
        await bot.set_webhook(receiver.url)
        await emulator.open_deep_link(uid_a, "a")
        await emulator.open_deep_link(uid_b, "b")
        await emulator.wait_until(lambda: len(receiver.received) == 1, timeout=1)
        assert receiver.received[0][0]["message"]["chat"]["id"] == uid_b
        assert receiver.received[0][1] is None  # no secret configured, no header
        await emulator.wait_idle(timeout=2)
        assert len(receiver.received) == 2


async def test_set_webhook_validation_and_poll_termination(
    emulator: TelegramEmulator, bot: telegram.Bot
) -> None:
    with pytest.raises(BadRequest, match=r"(?i)secret token"):
        await bot.set_webhook("http://127.0.0.1:9/hook", secret_token="has space")
    with pytest.raises(BadRequest, match=r"(?i)secret token"):
        await bot.set_webhook("http://127.0.0.1:9/hook", secret_token="a" * 257)
    poll = asyncio.create_task(bot.get_updates(timeout=3))
    await emulator.wait_until(lambda: emulator.long_polling, timeout=2)
    await bot.set_webhook("http://127.0.0.1:9/hook")
    with pytest.raises(Conflict, match=r"(?i)terminated by setWebhook request"):
        await poll
    assert await bot.delete_webhook()
    assert await bot.get_updates() == ()


async def test_the_public_server_refuses_a_webhook_it_could_not_deliver() -> None:
    """Off local mode the emulator holds the public Bot API's rule: HTTPS, port 443/80/88/8443."""
    async with TelegramEmulator(TOKEN) as emu:
        bot = telegram.Bot(TOKEN, base_url=emu.base_url)
        with pytest.raises(BadRequest, match=r"(?i)an https url must be provided"):
            await bot.set_webhook("http://127.0.0.1:8080/telegram/webhook")
        with pytest.raises(BadRequest, match=r"(?i)only on ports 80, 88, 443 or 8443"):
            await bot.set_webhook("https://rating.example.vn:8080/telegram/webhook")
        assert emu.webhook_url is None
        for url in ("https://rating.example.vn/tg", "https://rating.example.vn:8443/tg"):
            assert await bot.set_webhook(url)
            assert emu.webhook_url == url
        await bot.delete_webhook()
        await bot.shutdown()


async def test_a_callback_answered_after_ten_seconds_is_too_old() -> None:
    now = [1000.0]
    async with TelegramEmulator(TOKEN, clock=lambda: now[0]) as emu:
        bot = telegram.Bot(TOKEN, base_url=emu.base_url)
        uid = emu.new_user_id()
        await emu.open_deep_link(uid, None)
        msg = await bot.send_message(uid, "Rate", reply_markup=keyboard(("5", "r:5")))
        in_time = Update.de_json(await emu.tap_button(uid, msg.message_id, "r:5"), bot)
        late = Update.de_json(await emu.tap_button(uid, msg.message_id, "r:5"), bot)
        assert in_time.callback_query is not None and late.callback_query is not None
        now[0] += 9.5
        assert await bot.answer_callback_query(in_time.callback_query.id)
        now[0] += 1.0
        with pytest.raises(BadRequest, match=r"(?i)query is too old"):
            await bot.answer_callback_query(late.callback_query.id)
        await bot.shutdown()


async def test_send_photo_upload(emulator: TelegramEmulator, bot: telegram.Bot) -> None:
    uid = await started_user(emulator)
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 100
    msg = await bot.send_photo(uid, png, caption="Mã QR")
    assert msg.photo and msg.caption == "Mã QR"
    last = emulator.last_message(uid)
    assert last is not None and last.photo_bytes == png and last.body == "Mã QR"


async def test_json_body_clients(emulator: TelegramEmulator) -> None:
    """Clients that post JSON (e.g. a hand-written aiohttp adapter) are accepted too."""
    uid = await started_user(emulator)
    markup = {"inline_keyboard": [[{"text": "A", "callback_data": "x" * 65}]]}
    async with aiohttp.ClientSession() as session:
        url = f"{emulator.api_url}/sendMessage"
        async with session.post(url, json={"chat_id": uid, "text": "hi"}) as resp:
            assert resp.status == 200
            assert (await resp.json())["result"]["text"] == "hi"
        payload = {"chat_id": uid, "text": "hi", "reply_markup": markup}
        async with session.post(url, json=payload) as resp:
            assert resp.status == 400
            assert await resp.json() == {
                "ok": False,
                "error_code": 400,
                "description": "Bad Request: BUTTON_DATA_INVALID",
            }
        async with session.post(f"{emulator.base_url}nope/getMe") as resp:
            assert resp.status == 401
            assert (await resp.json())["description"] == "Unauthorized"
