"""The Telegram adapter's parts on their own: flood limits, error mapping, message shaping.

The shared state's own contract (memory and Redis) is in ``tests/test_telegram_state.py``."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import pytest
import telegram
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)

from bot.adapters.telegram.channel import TelegramChannel, delivery_error, fit, keyboard
from bot.adapters.telegram.state import (
    MemoryTelegramState,
    RateLimits,
)
from bot.channels import DeliveryError, OutboundMessage
from settings import load_settings
from storage.pseudonym import KeyRing
from tests.conftest import TEST_KEYS

os.environ.setdefault("PTB_TIMEDELTA", "true")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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
