"""The Telegram channel: python-telegram-bot as a typed Bot API client, nothing more.

No ``Application``, no ConversationHandler and no PTB persistence: survey state is ours (SQL plus
short-lived Redis marks), so any number of processes can serve one bot. This module sends; the
inbound side (webhook and long polling) is in ``inbound``.

Sending one outbox message:

* a question goes out as ``sendMessage`` with one inline button per row; its ``message_id`` is
  remembered under the contact pseudonym and the question id (never the raw chat id), with a TTL;
* an acknowledgement (``extra["ack"]``) edits that question in place to show the chosen answer,
  with no live buttons left; "message is not modified" counts as success (a resend after a crash);
* a re-rendered question (``update``, a multiple-choice toggle) edits the live question message;
* every call that shows a message first takes a slot from the rate limiter (about 1/s per chat
  with short bursts, about 25/s per bot), and a 429 pauses the whole bot for ``retry_after``;
* the last message of a conversation (``extra["forget"]``) deletes the chat's state once sent.

PTB errors become ``DeliveryError``: flood control → ``retry_after``; blocked, never started or
chat not found → permanent (the invitation closes as undeliverable, no retry storm); network
errors, timeouts and 5xx → transient (the outbox backs off and retries).

PTB logs every request with its parameters at DEBUG, and httpx logs URLs that contain the bot
token at INFO; both would put raw chat ids, names or the token into our logs, so both loggers are
held at WARNING-level detail here and their arguments are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import logging
import secrets
import warnings
from collections.abc import Awaitable, Callable
from typing import TypeVar

import telegram
from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest

from bot.adapters.telegram.state import (
    MemoryTelegramState,
    QuestionRef,
    RateLimits,
    RedisTelegramState,
    TelegramState,
)
from bot.channels import Capabilities, DeliveryError, OutboundMessage
from settings import Settings
from storage.coordination import Coordinator, RedisCoordinator
from storage.pseudonym import KeyRing

log = logging.getLogger(__name__)
T = TypeVar("T")

CAPABILITIES = Capabilities(
    buttons=True,
    max_text_chars=4096,
    max_buttons=8,
    max_button_data_bytes=64,
    edits=True,
    reminders=True,
)
#: Sleep at most this long for a per-chat slot inside one delivery, or one send's spacing at the
#: chat's rate when that is longer (below); longer waits go back to the outbox (so one busy chat
#: never holds up a dispatcher round for everyone else).
MAX_CHAT_WAIT_SECONDS = 1.0
#: Sleep at most this long in total for bot-wide slots before handing the message back.
MAX_BOT_WAIT_SECONDS = 10.0
ANSWERED_MARK = "✅"
#: Whether the send under way (this task's) is a reply inside a running conversation: every Bot
#: API call it makes (the edit, the message) asks the limiter as a reply.
_REPLYING: contextvars.ContextVar[bool] = contextvars.ContextVar("telegram_replying", default=False)


class _DropArguments(logging.Filter):
    """PTB log records carry request parameters and raw update data: keep the text only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = f"{record.msg} [arguments withheld]"
            record.args = None
        return True


def quiet_library_logging() -> None:
    """No raw identifier (chat id, name) and no bot token reach our logs through libraries."""
    logging.getLogger("telegram").setLevel(logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for name in list(logging.root.manager.loggerDict):
        if name == "telegram" or name.startswith("telegram."):
            logger = logging.getLogger(name)
            if not any(isinstance(f, _DropArguments) for f in logger.filters):
                logger.addFilter(_DropArguments())


quiet_library_logging()


def retry_after_seconds(exc: RetryAfter) -> float:
    """PTB 22 returns an int (deprecated) or a timedelta, depending on PTB_TIMEDELTA."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    if isinstance(value, dt.timedelta):
        return max(value.total_seconds(), 0.0)
    return float(value)


def delivery_error(exc: TelegramError) -> DeliveryError:
    """A PTB error as the outbox understands it. Reasons carry no identifier, only the kind."""
    if isinstance(exc, RetryAfter):
        return DeliveryError("telegram: flood control", retry_after=retry_after_seconds(exc))
    if isinstance(exc, Forbidden):
        return DeliveryError("telegram: forbidden (blocked or not started)", permanent=True)
    if isinstance(exc, ChatMigrated):
        return DeliveryError("telegram: chat migrated", permanent=True)
    if isinstance(exc, BadRequest):
        text = exc.message.lower()
        if "chat not found" in text or "user not found" in text:
            return DeliveryError("telegram: chat not found", permanent=True)
        # Telegram refused the request itself: resending the same request cannot succeed.
        return DeliveryError(f"telegram: bad request ({text[:80]})", permanent=True)
    if isinstance(exc, TimedOut):
        return DeliveryError("telegram: timed out")
    if isinstance(exc, NetworkError):
        return DeliveryError("telegram: network or server error")
    if isinstance(exc, InvalidToken):
        return DeliveryError("telegram: the bot token was rejected")
    return DeliveryError(f"telegram: {exc.__class__.__name__}")


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def fit(text: str, limit: int = 4096) -> str:
    """Telegram counts UTF-16 code units: an emoji costs two."""
    if _utf16_len(text) <= limit:
        return text
    cut = text
    while _utf16_len(cut) > limit - 1:
        cut = cut[: max(0, len(cut) - max(1, (_utf16_len(cut) - limit + 1) // 2))]
    return cut + "…"


def keyboard(buttons: list[tuple[str, str]]) -> InlineKeyboardMarkup | None:
    """One button per row: long Vietnamese labels stay readable on a phone."""
    if not buttons:
        return None
    for _, data in buttons:
        if not 1 <= len(data.encode("utf-8")) <= CAPABILITIES.max_button_data_bytes:
            raise DeliveryError("telegram: button data outside 1-64 bytes", permanent=True)
    return InlineKeyboardMarkup(
        [
            [InlineKeyboardButton(fit(label, 64) or "·", callback_data=data)]
            for label, data in buttons
        ]
    )


def make_bot(settings: Settings) -> telegram.Bot:
    """A PTB Bot with a connection pool large enough for the dispatcher's concurrency."""
    if not settings.telegram_token:
        raise ValueError("SURVEYBOT_TELEGRAM_TOKEN is not set")
    poll = settings.telegram_poll_timeout_seconds
    return telegram.Bot(
        settings.telegram_token,
        base_url=settings.telegram_api_base_url,
        request=HTTPXRequest(
            connection_pool_size=32, read_timeout=10.0, write_timeout=10.0, pool_timeout=5.0
        ),
        get_updates_request=HTTPXRequest(
            connection_pool_size=2, read_timeout=max(5.0, poll / 2), pool_timeout=5.0
        ),
    )


def make_state(settings: Settings, coordinator: Coordinator, bot_key: str) -> TelegramState:
    limits = RateLimits(
        per_chat=settings.telegram_per_chat_limit,
        per_chat_window=settings.telegram_per_chat_window_seconds,
        per_bot=settings.telegram_per_bot_limit,
        per_bot_window=settings.telegram_per_bot_window_seconds,
    )
    ttl = settings.survey_ttl_hours * 3600 + 3600
    if isinstance(coordinator, RedisCoordinator):
        return RedisTelegramState(coordinator.redis, coordinator.prefix, bot_key, limits, ttl)
    return MemoryTelegramState(limits, ttl)


class TelegramChannel:
    """Delivers outbox messages to Telegram chats; addresses are chat ids as text."""

    name = "telegram"
    capabilities = CAPABILITIES

    def __init__(
        self,
        bot: telegram.Bot,
        keyring: KeyRing,
        state: TelegramState,
        settings: Settings,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.bot = bot
        self.keys = keyring
        self.state = state
        self.settings = settings
        self._sleep = sleep
        # An answer's acknowledgement and its next question are two sends to one chat: at 1/s
        # the second waits just over a second. Waited for here, not handed back to the outbox,
        # where it cost a failed attempt, a write and a later claim (bench dispatch: the next
        # question 4.5 s after a tap behind a backlog).
        spacing = settings.telegram_per_chat_window_seconds / max(
            1, settings.telegram_per_chat_limit
        )
        self._chat_wait = max(MAX_CHAT_WAIT_SECONDS, spacing + min(0.25, spacing / 5))
        self._ready_lock = asyncio.Lock()
        self._ready = False
        #: The webhook as last registered by this process: "not registered", "registered",
        #: or "refused: <the Bot API's reason>" (``/readyz``).
        self.webhook_state = "not registered"

    @classmethod
    def from_settings(
        cls, settings: Settings, keyring: KeyRing, coordinator: Coordinator
    ) -> TelegramChannel:
        bot = make_bot(settings)
        bot_key = (settings.telegram_token or "").split(":", 1)[0] or "bot"
        return cls(bot, keyring, make_state(settings, coordinator, bot_key), settings)

    @property
    def bot_key(self) -> str:
        return (self.settings.telegram_token or "").split(":", 1)[0] or "bot"

    # ---------------------------------------------------------------- lifecycle
    async def ready(self) -> None:
        """Initialise PTB once (getMe); learn the bot's username if it was not configured."""
        if self._ready:
            return
        async with self._ready_lock:
            if self._ready:
                return
            try:
                await self.bot.initialize()
            except TelegramError as exc:
                raise delivery_error(exc) from None
            if not self.settings.telegram_bot_username:
                self.settings.telegram_bot_username = self.bot.username
            self._ready = True

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.bot.shutdown()
        self._ready = False

    async def ready_quietly(self) -> None:
        """At start-up, so the bot's username (for deep links) is known before the first send."""
        try:
            await self.ready()
        except DeliveryError as exc:
            log.warning("Telegram is not reachable yet (%s)", exc.reason)

    async def register_webhook(self, url: str) -> bool:
        try:
            await self.ready()
            await self.bot.set_webhook(
                url,
                secret_token=self.settings.telegram_webhook_secret,
                allowed_updates=["message", "callback_query"],
            )
        except (TelegramError, DeliveryError) as exc:
            reason = exc.message if isinstance(exc, TelegramError) else exc.reason
            self.webhook_state = f"refused: {reason[:200]}"
            log.warning("could not register the Telegram webhook: %s", reason[:200])
            return False
        self.webhook_state = "registered"
        log.info("Telegram webhook registered at the public base URL")
        return True

    # ---------------------------------------------------------------- sending
    def contact(self, address: str) -> str:
        """The pseudonym every piece of Telegram state is keyed by (the chat's contact
        pseudonym, namespaced by channel like the service's)."""
        return self.keys.channel_pseudonym("contact", self.name, address).digest

    async def send(self, address: str, message: OutboundMessage) -> None:
        """Send one outbox message; the last one of a conversation (``extra["forget"]``, set by
        the service on the thank-you, the /stop and the /delete replies) then drops the chat's
        state: its send window and the notes of the listed questions."""
        replying = _REPLYING.set(message.reply)
        try:
            await self._send(address, message)
        finally:
            _REPLYING.reset(replying)
        forget = message.extra.get("forget")
        if isinstance(forget, list):
            await self.forget(address, [str(question) for question in forget])

    async def forget(self, address: str, question_ids: list[str]) -> None:
        """Delete this chat's Redis state under every pseudonym it may have been kept under."""
        contacts = [p.digest for p in self.keys.channel_candidates("contact", self.name, address)]
        try:
            await self.state.forget(contacts, question_ids)
        except Exception as exc:  # it expires on its own; the message itself was delivered
            log.warning("chat state not forgotten (%s)", exc.__class__.__name__)

    async def _send(self, address: str, message: OutboundMessage) -> None:
        chat_id = _chat_id(address)
        contact = self.contact(address)
        await self.ready()
        question = message.question_id
        if message.extra.get("ack") and question:
            await self._acknowledge(chat_id, contact, question, message.text)
            return
        text = fit(message.text)
        markup = keyboard(message.buttons)
        if message.update and question:
            ref = await self._get_ref(contact, question)
            if ref is not None and ref.live:
                if await self._edit(chat_id, contact, ref.live[-1], text, markup):
                    ref.text = text
                    await self._put_ref(contact, question, ref)
                    return
        sent = await self._call(
            contact, lambda: self.bot.send_message(chat_id, text, reply_markup=markup)
        )
        if question and markup is not None:
            ref = await self._get_ref(contact, question) or QuestionRef(text)
            ref.text = text
            # A tap can come back before this note is written (the inbound side then notes
            # the message itself, ``remember_tapped``): the same message is listed once.
            earlier = [m for m in ref.live if m != sent.message_id]
            ref.live = [*earlier[-4:], sent.message_id]
            await self._put_ref(contact, question, ref)

    async def _acknowledge(self, chat_id: int, contact: str, question: str, ack: str) -> None:
        """Show the chosen answer in the question message itself, and leave no live buttons."""
        ref = await self._get_ref(contact, question)
        target = (ref.live[-1] if ref.live else ref.done) if ref is not None else None
        if ref is None or target is None:
            # The message id was forgotten (a Redis flush): confirm with a plain message.
            await self._call(contact, lambda: self.bot.send_message(chat_id, fit(ack)))
            return
        text = fit(f"{ref.text}\n\n{ANSWERED_MARK} {ack}")
        if not await self._edit(chat_id, contact, target, text, None):
            await self._call(contact, lambda: self.bot.send_message(chat_id, fit(ack)))
        for older in ref.live[:-1]:
            await self.strip_buttons(chat_id, contact, older)
        ref.live, ref.done = [], target
        await self._put_ref(contact, question, ref)

    async def _edit(
        self,
        chat_id: int,
        contact: str,
        message_id: int,
        text: str,
        markup: InlineKeyboardMarkup | None,
    ) -> bool:
        """Edit a message; False when it no longer exists or cannot be edited."""
        try:
            await self._call(
                contact,
                lambda: self.bot.edit_message_text(
                    text, chat_id=chat_id, message_id=message_id, reply_markup=markup
                ),
                raw=True,
            )
        except BadRequest as exc:
            reason = exc.message.lower()
            if "not modified" in reason:
                return True  # already shows exactly this: a resend after an unacknowledged send
            if "message to edit not found" in reason or "can't be edited" in reason:
                return False
            raise delivery_error(exc) from None
        except TelegramError as exc:
            raise delivery_error(exc) from None
        return True

    async def strip_buttons(self, chat_id: int, contact: str, message_id: int) -> None:
        """Best effort: take the keyboard off a message that should no longer be tapped."""
        try:
            await self._call(
                contact,
                lambda: self.bot.edit_message_reply_markup(
                    chat_id=chat_id, message_id=message_id, reply_markup=None
                ),
                max_wait=0.5,
            )
        except DeliveryError as exc:
            log.debug("could not remove old buttons (%s)", exc.reason)

    async def _call(
        self,
        contact: str | None,
        action: Callable[[], Awaitable[T]],
        *,
        raw: bool = False,
        max_wait: float | None = None,
    ) -> T:
        """One rate-limited Bot API call; PTB errors become DeliveryError unless ``raw``. Its
        slot is settled when the answer is back (or the call failed): the windows count it from
        then, after Telegram saw it (``TelegramState.settle``)."""
        slot = secrets.token_hex(8)
        await self._slot(contact, max_wait, slot)
        try:
            result = await action()
        except asyncio.CancelledError:
            raise  # a stop: nothing more is awaited here (the slot expires with its window)
        except RetryAfter as exc:
            await self._settle(contact, slot)
            seconds = retry_after_seconds(exc)
            with contextlib.suppress(Exception):
                await self.state.pause(seconds)
            raise delivery_error(exc) from None
        except TelegramError as exc:
            await self._settle(contact, slot)
            if raw:
                raise
            raise delivery_error(exc) from None
        except Exception:
            await self._settle(contact, slot)
            raise
        await self._settle(contact, slot)
        return result

    async def _settle(self, contact: str | None, slot: str) -> None:
        try:
            await self.state.settle(contact, slot)
        except Exception as exc:  # the slot keeps its acquire time: the padding covers most
            log.debug("send slot not settled (%s)", exc.__class__.__name__)

    async def _slot(self, contact: str | None, max_wait: float | None, slot: str) -> None:
        """Wait for a send slot: short waits here, long ones back in the outbox.

        A chat's own window is only waited for briefly, so one busy chat never holds up a
        dispatcher round; the bot-wide window is shared by everyone and waited for longer.
        """
        waited = 0.0
        while True:
            try:
                wait, scope = await self.state.acquire(contact, slot, reply=_REPLYING.get())
            except Exception as exc:  # Redis unreachable: try again later rather than flood
                reason = f"telegram: rate limiter unavailable ({exc.__class__.__name__})"
                raise DeliveryError(reason) from None
            if wait <= 0:
                return
            if max_wait is not None:
                budget = max_wait
            elif scope == "chat":
                budget = self._chat_wait
            else:
                budget = MAX_BOT_WAIT_SECONDS
            if waited + wait > budget:
                raise DeliveryError(f"telegram: rate limited ({scope})", retry_after=wait)
            await self._sleep(wait)
            waited += wait

    async def _get_ref(self, contact: str, question: str) -> QuestionRef | None:
        try:
            return await self.state.get_ref(contact, question)
        except Exception as exc:
            log.warning("question message lookup failed (%s)", exc.__class__.__name__)
            return None

    async def _put_ref(self, contact: str, question: str, ref: QuestionRef) -> None:
        """Never fail a delivery that already happened because the note could not be kept."""
        try:
            await self.state.put_ref(contact, question, ref)
        except Exception as exc:
            log.warning("question message note not kept (%s)", exc.__class__.__name__)

    async def remember_tapped(
        self, address: str, question: str, message_id: int, text: str
    ) -> None:
        """A tap shows which message asked the question: keep it if the note was lost."""
        contact = self.contact(address)
        if await self._get_ref(contact, question) is None and text:
            await self._put_ref(contact, question, QuestionRef(text, [message_id]))


def _chat_id(address: str) -> int:
    try:
        return int(address)
    except ValueError:
        raise DeliveryError("telegram: the address is not a chat id", permanent=True) from None


__all__ = ["CAPABILITIES", "TelegramChannel", "delivery_error", "fit", "keyboard", "make_bot"]
