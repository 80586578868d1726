"""Telegram updates in: the webhook endpoint and the long-polling loop share one handler.

The handler is the only place a Telegram update is read. It

* stores the verified update in the durable inbox first (the shared door,
  ``bot/adapters/gate.py``), keyed by the bot and its ``update_id``, so a redelivery is a
  duplicate and a crash after the 200 loses nothing; the webhook answers 200 once it is stored;
* processes it from the inbox, once: parses it with ``telegram.Update.de_json`` (PTB as a typed
  client, no Application), turns a message into ``route_text`` (``/start <token>`` binds the
  chat; commands; answers) and a button tap into ``answerCallbackQuery`` at once, then
  ``route_button``.

Per-chat order: the inbox processes one chat's updates one at a time, oldest first (its
conversation key is the chat), whether they came by webhook or by polling.

The webhook checks ``X-Telegram-Bot-Api-Secret-Token`` in constant time before reading anything:
missing → 401, wrong → 403, and nothing is stored. Nothing here logs an identifier: not the chat
id, not the name, not the text.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
from collections import defaultdict
from typing import Any

from aiohttp import web
from telegram import CallbackQuery, Message, Update
from telegram.constants import ChatType
from telegram.error import Conflict, TelegramError

from bot.adapters import gate
from bot.adapters.telegram.channel import TelegramChannel, fit
from bot.channels import DeliveryError
from bot.flows.engine import parse_payload
from bot.http_errors import error_response
from bot.inbound import Funnel

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name
ALLOWED_UPDATES = ["message", "callback_query"]
MAX_CALLBACK_DATA = 128
MAX_TEXT = 4096
#: Telegram keeps an undelivered update this long (plus a margin for clock skew).
TELEGRAM_REDELIVERY_WINDOW = dt.timedelta(hours=24, minutes=10)


class TelegramInbound:
    """Stores Telegram updates in the inbox and processes them from it, one chat at a time."""

    def __init__(self, channel: TelegramChannel, funnel: Funnel, inbox: gate.Inbox) -> None:
        self.channel = channel
        self.funnel = funnel
        self.inbox = inbox
        inbox.handle(channel.name, self.process)

    def parse(self, data: dict[str, Any]) -> Update | None:
        try:
            return Update.de_json(data, self.channel.bot)
        except Exception as exc:
            log.warning("unreadable Telegram update ignored (%s)", exc.__class__.__name__)
            return None

    def keys(self, update: Update) -> tuple[str, str]:
        """The event key (this bot's ``update_id``) and the conversation (the chat)."""
        chat = update.effective_chat
        conversation = f"chat:{chat.id}" if chat is not None else f"update:{update.update_id}"
        return f"{self.channel.bot_key}:{update.update_id}", conversation

    async def accept(self, update: Update, data: dict[str, Any]) -> object:
        """Store one update and try to process it now (``gate.Inbox.accept``)."""
        event_key, conversation = self.keys(update)
        return await self.inbox.accept(self.channel.name, event_key, conversation, data)

    async def process(self, data: dict[str, Any]) -> str:
        """One stored update, from the inbox; the word says what happened (for tests)."""
        update = self.parse(data)
        if update is None:
            return "ignored"
        outcome = await self._dispatch(update)
        log.debug("telegram update handled: %s", outcome)
        return outcome

    async def _dispatch(self, update: Update) -> str:
        if not well_formed(update):
            return "ignored"  # not what Telegram sends: redelivering it would change nothing
        if update.callback_query is not None:
            return await self._callback(update.callback_query)
        message = update.message
        if message is None:
            return "ignored"  # edits, membership changes, channel posts: nothing to do
        if message.chat.type != ChatType.PRIVATE:
            return "ignored"  # surveys are private conversations only
        address = str(message.chat.id)
        text = message.text or message.caption or ""
        language = message.from_user.language_code if message.from_user else None
        await self.funnel.text(self.channel.name, address, text[:MAX_TEXT], language)
        return "message"

    async def _callback(self, query: CallbackQuery) -> str:
        message = query.message
        chat = message.chat if message is not None else None
        data = (query.data or "")[:MAX_CALLBACK_DATA]
        # Answer at once, before any database work: the spinner stops and the citizen sees the
        # label of the button they tapped. A second answer (a redelivery) is refused: harmless.
        toast = _label_of(message, data) if isinstance(message, Message) else None
        try:
            await self.channel.bot.answer_callback_query(query.id, text=toast)
        except TelegramError as exc:
            log.debug("answerCallbackQuery refused (%s)", exc.__class__.__name__)
        if chat is None or chat.type != ChatType.PRIVATE:
            return "ignored"
        address = str(chat.id)
        choice = parse_payload(data)
        if choice is not None and isinstance(message, Message) and message.text:
            await self.channel.remember_tapped(
                address, choice.question_id, message.message_id, message.text
            )
        if data.startswith("cmd:") and isinstance(message, Message) and message.reply_markup:
            # A command's confirmation buttons (/delete, /lang) are spent once tapped. Taken off
            # before the command runs: /delete's reply then forgets every per-chat key this
            # edit made, instead of racing it.
            contact = self.channel.contact(address)
            await self.channel.strip_buttons(chat.id, contact, message.message_id)
        await self.funnel.button(self.channel.name, address, data)
        return "callback"


def well_formed(update: Update) -> bool:
    """PTB's ``de_json`` does not check types: a text, a chat id or a button's data of the wrong
    type is refused here, before anything slices or stores it."""
    query = update.callback_query
    message = query.message if query is not None else update.message
    if query is not None and not isinstance(query.data, str | None):
        return False
    if message is None:
        return True
    if not isinstance(message, Message):
        return query is not None  # an inaccessible (old) message under a button: handled
    chat, user = message.chat, message.from_user
    return (
        isinstance(message.message_id, int)
        and isinstance(chat.id, int)
        and isinstance(chat.type, str)
        and isinstance(message.text, str | None)
        and isinstance(message.caption, str | None)
        and (user is None or isinstance(user.language_code, str | None))
    )


def _label_of(message: Message, data: str) -> str | None:
    markup = message.reply_markup
    if markup is None or not data:
        return None
    for row in markup.inline_keyboard:
        for button in row:
            if button.callback_data == data:
                return fit(str(button.text), 200)
    return None


# ==================================================================================== webhook
async def webhook(inbound: TelegramInbound | None, request: web.Request) -> web.Response:
    """POST /telegram/webhook: 200 once the update is stored in the inbox."""
    if inbound is None:
        return error_response(404, "telegram_disabled", "the Telegram channel is not configured")
    settings = inbound.channel.settings
    secret = settings.telegram_webhook_secret
    if not secret:
        return error_response(
            403, "webhook_disabled", "set SURVEYBOT_TELEGRAM_WEBHOOK_SECRET to accept webhooks"
        )
    given = request.headers.get(SECRET_HEADER)
    if given is None:
        return error_response(401, "missing_secret_token", f"send the {SECRET_HEADER} header")
    if not gate.secret_matches(given, secret):
        return error_response(403, "invalid_secret_token", "the secret token does not match")
    data = await gate.read_event(request, settings.max_json_depth)
    if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
        return error_response(400, "not_an_update", "the body must be a Telegram Update object")
    update = inbound.parse(data)
    if update is None:
        return web.json_response({"ok": True, "ignored": True})
    if _older_than_redelivery(update):
        # Telegram keeps an update 24 hours: an older one is a replay, whose mark may be gone.
        log.warning("telegram update older than Telegram's redelivery window ignored")
        return web.json_response({"ok": True, "ignored": "stale"})
    event_key, conversation = inbound.keys(update)
    return await inbound.inbox.take(
        "telegram update", inbound.channel.name, event_key, conversation, data, _answer
    )


def _answer(outcome: object) -> dict[str, Any]:
    return {"ok": True, "outcome": str(outcome)}


def _older_than_redelivery(update: Update) -> bool:
    """A message sent more than Telegram's 24 hours of redelivery ago. Only a message's own date
    counts: a button tap carries the date of the question it sits under, which may be days old
    while the tap is new."""
    message = update.message
    if message is None or not isinstance(message.date, dt.datetime):
        return False
    if message.date.timestamp() <= 0:
        return False  # no date given (0): nothing to judge by, the update id still de-duplicates
    return dt.datetime.now(dt.UTC) - message.date > TELEGRAM_REDELIVERY_WINDOW


def routes(inbound: TelegramInbound | None) -> list[web.RouteDef]:
    """POST /telegram/webhook (answers 404 while no bot token is configured)."""
    handler = functools.partial(webhook, inbound)
    return [web.post("/telegram/webhook", handler, name="telegram_webhook")]


# ==================================================================================== polling
class TelegramPoller:
    """getUpdates with an offset, for deployments without public HTTPS.

    The offset only moves past an update once it is stored in the inbox; when one cannot be
    stored, the batch is fetched again after a pause, and the updates already stored are
    duplicates. Processing is the inbox's, as for the webhook.
    """

    def __init__(
        self,
        channel: TelegramChannel,
        inbound: TelegramInbound,
        timeout: int = 25,
        *,
        backoff: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0),
    ) -> None:
        self.channel = channel
        self.inbound = inbound
        self.timeout = timeout
        self.backoff = backoff
        self.offset: int | None = None
        self._failures = 0
        #: True while getUpdates answers (``/readyz``).
        self.polling = False

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.channel.ready()
                await self.channel.bot.delete_webhook(drop_pending_updates=False)
                break
            except (TelegramError, DeliveryError) as exc:
                log.warning("Telegram polling cannot start yet (%s)", gate.kind(exc))
                await self._pause(stop)
        log.info("Telegram long polling started")
        while not stop.is_set():
            try:
                handled = await self.poll_once()
                self.polling = True
            except Conflict:
                self.polling = False
                log.warning("another getUpdates or a webhook is active for this bot; waiting")
                await self._pause(stop)
                continue
            except Exception as exc:
                self.polling = False
                log.warning("getUpdates failed (%s)", gate.kind(exc))
                await self._pause(stop)
                continue
            if handled is False:
                await self._pause(stop)
            else:
                self._failures = 0

    async def poll_once(self, timeout: int | None = None) -> bool | None:
        """One getUpdates round. None: nothing came; True: all processed; False: some failed."""
        updates = await self.channel.bot.get_updates(
            offset=self.offset,
            timeout=self.timeout if timeout is None else timeout,
            allowed_updates=ALLOWED_UPDATES,
        )
        if not updates:
            return None
        by_chat: dict[int | None, list[Update]] = defaultdict(list)
        for update in updates:
            chat = update.effective_chat
            by_chat[chat.id if chat is not None else None].append(update)
        failed = await asyncio.gather(*(self._chat_in_order(group) for group in by_chat.values()))
        first_failed = min((f for f in failed if f is not None), default=None)
        self.offset = first_failed if first_failed is not None else updates[-1].update_id + 1
        return first_failed is None

    async def _chat_in_order(self, updates: list[Update]) -> int | None:
        """Store one chat's updates in order; the id of the first that could not be, if any."""
        for update in updates:
            try:
                await self.inbound.accept(update, update.to_dict())
            except Exception as exc:
                log.warning("telegram update not stored (%s); will retry", gate.kind(exc))
                return update.update_id
        return None

    async def _pause(self, stop: asyncio.Event) -> None:
        delay = self.backoff[min(self._failures, len(self.backoff) - 1)]
        self._failures += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()
