"""The Telegram adapter's parts on their own: flood limits, error mapping, message shaping."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import telegram
from redis.asyncio import Redis
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)

from bot.adapters.base import DeliveryError, OutboundMessage
from bot.adapters.telegram import TelegramChannel, delivery_error, fit, keyboard
from bot.adapters.telegram_state import (
    MemoryTelegramState,
    QuestionRef,
    RateLimits,
    RedisTelegramState,
)
from settings import load_settings
from storage.pseudonym import KeyRing
from tests.conftest import REDIS_URL, TEST_KEYS

os.environ.setdefault("PTB_TIMEDELTA", "true")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ============================================================================ limits in memory
async def test_memory_limits_per_chat_per_bot_and_pause() -> None:
    clock = FakeClock()
    state = MemoryTelegramState(RateLimits(3, 3.0, 5, 1.0), 60, clock=clock)
    for _ in range(3):
        assert await state.acquire("chat-a") == (0.0, "")
    wait, scope = await state.acquire("chat-a")
    assert scope == "chat" and 3.0 < wait <= 3.25  # the window plus a safety margin
    assert (await state.acquire("chat-b"))[0] == 0
    assert (await state.acquire("chat-c"))[0] == 0
    wait, scope = await state.acquire("chat-d")  # the bot's 5 per second are spent
    assert scope == "bot" and 1.0 < wait <= 1.11
    clock.now += 3.3
    assert (await state.acquire("chat-a"))[0] == 0
    await state.pause(7)
    wait, scope = await state.acquire("chat-e")
    assert scope == "pause" and wait == pytest.approx(7)
    clock.now += 7.01
    assert (await state.acquire(None))[0] == 0


async def test_memory_refs_and_update_marks_expire() -> None:
    clock = FakeClock()
    state = MemoryTelegramState(RateLimits(), 60, clock=clock)
    await state.put_ref("c", "q1", QuestionRef("Câu 1?", [5, 7], None))
    ref = await state.get_ref("c", "q1")
    assert ref is not None and ref.live == [5, 7] and ref.text == "Câu 1?"
    assert not await state.is_done("42")
    await state.mark_done("42")
    assert await state.is_done("42")
    clock.now += 61
    assert await state.get_ref("c", "q1") is None
    assert await state.is_done("42")  # update marks outlive Telegram's 24 h retention


# ============================================================================ limits in Redis
@pytest.fixture
async def redis_state(redis_prefix: str) -> AsyncIterator[RedisTelegramState]:
    client = Redis.from_url(REDIS_URL)
    yield RedisTelegramState(client, redis_prefix, "123", RateLimits(2, 0.5, 4, 0.5), 60)
    await client.aclose()


async def test_redis_limits_hold_across_clients(
    redis_state: RedisTelegramState, redis_prefix: str
) -> None:
    other_client = Redis.from_url(REDIS_URL)
    other = RedisTelegramState(other_client, redis_prefix, "123", redis_state.limits, 60)
    try:
        assert await redis_state.acquire("chat-a") == (0.0, "")
        assert await other.acquire("chat-a") == (0.0, "")  # a second process, same chat
        wait, scope = await redis_state.acquire("chat-a")
        assert scope == "chat" and 0 < wait <= 0.55
        assert (await other.acquire("chat-b"))[0] == 0
        assert (await other.acquire("chat-c"))[0] == 0
        wait, scope = await redis_state.acquire("chat-d")
        assert scope == "bot" and 0 < wait <= 0.55
        time.sleep(0.6)  # noqa: ASYNC251 - Redis's own clock must move on
        assert (await redis_state.acquire("chat-a"))[0] == 0
        await other.pause(2)
        wait, scope = await redis_state.acquire("chat-e")
        assert scope == "pause" and 1.5 < wait <= 2.0
    finally:
        await other_client.aclose()


async def test_redis_refs_and_marks_are_keyed_by_pseudonym(
    redis_state: RedisTelegramState, redis_prefix: str
) -> None:
    await redis_state.put_ref("c0ffee", "c3", QuestionRef("Câu 3?", [9]))
    ref = await redis_state.get_ref("c0ffee", "c3")
    assert ref is not None and ref.live == [9]
    await redis_state.mark_done("777")
    assert await redis_state.is_done("777") and not await redis_state.is_done("778")
    client = Redis.from_url(REDIS_URL)
    keys = sorted([k.decode() async for k in client.scan_iter(match=f"{redis_prefix}*")])
    ttls = [await client.ttl(k) for k in keys]
    await client.aclose()
    assert keys == [f"{redis_prefix}tg:123:q:c0ffee:c3", f"{redis_prefix}tg:123:update:777"]
    assert all(t > 0 for t in ttls)


# ============================================================================ errors
@pytest.mark.parametrize(
    ("error", "permanent", "retry_after"),
    [
        (RetryAfter(dt.timedelta(seconds=7)), False, 7.0),
        (RetryAfter(3), False, 3.0),
        (Forbidden("Forbidden: bot was blocked by the user"), True, None),
        (Forbidden("Forbidden: bot can't initiate conversation with a user"), True, None),
        (BadRequest("Bad Request: chat not found"), True, None),
        (BadRequest("Bad Request: BUTTON_DATA_INVALID"), True, None),
        (ChatMigrated(-100123), True, None),
        (TimedOut(), False, None),
        (NetworkError("Bad Gateway"), False, None),
        (InvalidToken(), False, None),
    ],
)
def test_ptb_errors_map_to_delivery_errors(
    error: Exception, permanent: bool, retry_after: float | None
) -> None:
    mapped = delivery_error(error)  # type: ignore[arg-type]
    assert mapped.permanent is permanent
    assert mapped.retry_after == retry_after
    assert mapped.reason.startswith("telegram: ")


def test_text_is_fitted_in_utf16_units_and_buttons_checked() -> None:
    assert fit("x" * 4096) == "x" * 4096
    fitted = fit("😀" * 3000)  # 6000 UTF-16 units
    assert len(fitted.encode("utf-16-le")) // 2 <= 4096 and fitted.endswith("…")
    markup = keyboard([("Một", "a:t:q:1"), ("Hai", "a:t:q:2")])
    assert markup is not None and [len(row) for row in markup.inline_keyboard] == [1, 1]
    assert keyboard([]) is None
    with pytest.raises(DeliveryError) as info:
        keyboard([("Quá dài", "a:" + "ấ" * 30)])  # 92 bytes
    assert info.value.permanent


# ============================================================================ waiting policy
class _Bot:
    """Just enough of telegram.Bot for the channel's send path."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def initialize(self) -> None:
        return None

    username = "Bot"

    async def send_message(self, chat_id: int, text: str, **kwargs: Any) -> Any:
        self.sent.append(text)
        return telegram.Message(
            len(self.sent), dt.datetime.now(dt.UTC), telegram.Chat(1, "private")
        )


async def test_short_waits_sleep_and_long_chat_waits_go_back_to_the_outbox() -> None:
    clock = FakeClock()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    state = MemoryTelegramState(RateLimits(2, 3.0, 3, 1.0), 60, clock=clock)
    settings = load_settings(env="test", keys=TEST_KEYS, telegram_token="1:x")
    bot = _Bot()
    channel = TelegramChannel(bot, KeyRing.from_json(TEST_KEYS), state, settings, sleep=sleep)  # type: ignore[arg-type]
    await channel.send("11", OutboundMessage("a"))
    await channel.send("11", OutboundMessage("b"))
    with pytest.raises(DeliveryError) as info:  # this chat must wait ~3 s: not here
        await channel.send("11", OutboundMessage("c"))
    assert info.value.retry_after and info.value.retry_after > 1 and not info.value.permanent
    await channel.send("12", OutboundMessage("d"))  # the bot's 3/s are now spent
    await channel.send("13", OutboundMessage("e"))  # ... so this one sleeps ~1 s, then goes
    assert bot.sent == ["a", "b", "d", "e"] and len(slept) == 1 and 1.0 < slept[0] <= 1.11
