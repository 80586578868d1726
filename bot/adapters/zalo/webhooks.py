"""Zalo webhooks: the OA/ZNS events endpoint (signed) and the Zalo Bot endpoint (secret header).

Why this order of checks: the ``X-ZEvent-Signature`` is verified on the raw bytes before anything
is trusted (``sha256(app_id + body + timestamp + OA secret)``, with or without ``mac=``, compared
in constant time); then a timestamp too far from now is refused, so a captured request cannot be
replayed later (a Zalo Bot message older than the same window is ignored). The window is Zalo's
whole redelivery ladder, so a redelivery is never refused as stale. Then the event is stored in
the durable inbox (the shared door, ``bot/adapters/gate.py``) and answered 200 inside Zalo's 2 s:
an event already stored (same message id, or the same content however spaced or ordered: Zalo's
retries and replays alike) is acknowledged without effect; processing happens from the inbox,
once, with our own retries, so nothing depends on Zalo choosing to redeliver (it may retry only
when it cannot connect). A 503 means the event could not be stored. A body that cannot be stored
(a lone surrogate) is refused with 400: a retry could not fix it. Nothing identifying is logged:
only event names and outcomes. Texts, taps and follows go to the one funnel; ZNS ratings and
receipts to the tracked-ratings use case.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bot.adapters import gate
from bot.adapters.zalo.ratings import record_delivery, record_rating
from bot.adapters.zalo.suite import ZaloSuite
from bot.adapters.zalo.zns import parse_rating
from bot.body import parse_json, read_raw
from bot.http_errors import error_response
from bot.inbound import Funnel, TrackedRatings
from bot.service import Outcome
from settings import Settings

log = logging.getLogger(__name__)
OA_CHANNEL = "zalo_oa"
BOT_CHANNEL = "zalo_bot"
#: "/start <token>" like Telegram, or "#<token>" (easy to type or prefill from the receipt).
TOKEN_TEXT = re.compile(r"^(?:/start\s+|#)([A-Za-z0-9_-]{16,128})$")
MAX_INBOUND_TEXT = 4000


@dataclass(frozen=True, slots=True)
class ZaloInbound:
    """What the Zalo webhooks and the Bot poller need: the settings (secrets, windows), the
    configured Zalo channels (None when Zalo is off), the one funnel, the tracked-ratings use
    case (ZNS) and the durable inbox the events go through."""

    settings: Settings
    zalo: ZaloSuite | None
    funnel: Funnel
    tracked: TrackedRatings
    inbox: gate.Inbox

    def register(self) -> None:
        """How the inbox processes each channel's stored events."""

        async def oa(body: dict[str, Any]) -> None:
            await _oa_event(self, body)

        async def bot(body: dict[str, Any]) -> None:
            await bot_update(self, body)

        self.inbox.handle(OA_CHANNEL, oa)
        self.inbox.handle(BOT_CHANNEL, bot)


# ------------------------------------------------------------------------ shared routing
async def route_zalo_text(funnel: Funnel, channel: str, address: str, text: str) -> Outcome:
    """A Zalo text is a tapped query button when it carries one of our payloads."""
    stripped = text.strip()[:MAX_INBOUND_TEXT]
    if re.fullmatch(r"(a|cmd):[A-Za-z0-9_:.\-]{1,120}", stripped):
        return await funnel.button(channel, address, stripped)
    match = TOKEN_TEXT.match(stripped)
    if match:
        return await funnel.text(channel, address, f"/start {match.group(1)}")
    return await funnel.text(channel, address, stripped)


def verify_signature(
    header: str | None, raw: bytes, app_id: str, timestamp: str, secret: str
) -> bool:
    """Zalo's MAC: plain SHA-256 of app_id + raw body + timestamp + OA secret key."""
    if not header:
        return False
    material = app_id.encode() + raw + timestamp.encode() + secret.encode()
    expected = hashlib.sha256(material).hexdigest()
    given = header.strip()
    given = given[4:] if given.lower().startswith("mac=") else given
    return hmac.compare_digest(given.lower().encode("utf-8", "surrogateescape"), expected.encode())


def event_identity(channel: str, body: dict[str, Any]) -> str:
    """What makes two deliveries one event: the platform's own message id when the event has one
    (``msg_id`` on the OA, ``message_id`` on the Bot), else the event's content with its keys in
    order and no spacing, so a resend with one more space or reordered keys is the same event."""
    message = body.get("message")
    own = message.get("msg_id", message.get("message_id")) if isinstance(message, dict) else None
    if isinstance(own, str | int) and not isinstance(own, bool) and 0 < len(str(own)) <= 64:
        return f"{channel}:{body.get('event_name')!s:.64}:{own}"
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{channel}:body:{canonical}"


def _conversation(body: dict[str, Any], identity: str) -> str:
    """Whose event it is: one citizen's events are processed one at a time, in order. Events
    about no chat (ZNS ratings and receipts) stand alone."""
    for holder in ("sender", "follower"):
        person = body.get(holder)
        user = _id(person.get("id")) if isinstance(person, dict) else None
        if user:
            return f"user:{user}"
    message = body.get("message")
    chat = message.get("chat") if isinstance(message, dict) else None
    chat_id = chat.get("id") if isinstance(chat, dict) else None
    if isinstance(chat_id, str | int) and not isinstance(chat_id, bool) and str(chat_id).strip():
        return f"chat:{str(chat_id)[:64]}"
    return f"event:{identity}"


async def _take(inbound: ZaloInbound, channel: str, body: dict[str, Any]) -> web.Response:
    identity = event_identity(channel, body)
    return await inbound.inbox.take(
        "zalo webhook", channel, identity, _conversation(body, identity), body
    )


def _id(value: Any) -> str | None:
    """Zalo ids are decimal strings (often > 2**53): never converted to numbers."""
    if isinstance(value, str) and value.isdigit() and len(value) <= 32:
        return value
    return None


# ------------------------------------------------------------------------ OA / ZNS events
#: The timestamp the signature covers, found in the raw bytes: nothing is parsed before the MAC.
RAW_TIMESTAMP = re.compile(rb'"timestamp"\s*:\s*"?(\d{1,16})"?')
MAX_TIMESTAMP_CANDIDATES = 4


def _signed_timestamp(header: str | None, raw: bytes, app_id: str, secret: str) -> str | None:
    """The body's timestamp whose MAC matches the header, or None: checked on the raw bytes."""
    for match in list(RAW_TIMESTAMP.finditer(raw))[:MAX_TIMESTAMP_CANDIDATES]:
        timestamp = match.group(1).decode("ascii")
        if verify_signature(header, raw, app_id, timestamp, secret):
            return timestamp
    return None


async def oa_webhook(inbound: ZaloInbound, request: web.Request) -> web.Response:
    settings = inbound.settings
    suite = inbound.zalo
    if suite is None or not settings.zalo_oa_configured:
        return error_response(404, "not_configured", "the Zalo OA channel is not configured")
    raw = await read_raw(request)
    assert settings.zalo_oa_secret is not None
    app_id = settings.zalo_app_id or ""
    header = request.headers.get("X-ZEvent-Signature")
    timestamp = _signed_timestamp(header, raw, app_id, settings.zalo_oa_secret)
    if timestamp is None:
        log.warning("zalo webhook with a bad signature refused")
        return error_response(401, "invalid_signature", "X-ZEvent-Signature does not match")
    body = parse_json(raw, max_depth=settings.max_json_depth, nul="strip")
    if not isinstance(body, dict):
        return error_response(400, "malformed_json", "the body must be a JSON object")
    if body.get("app_id") != app_id:
        return error_response(401, "unknown_app", "this event is for another Zalo app")
    if str(body.get("timestamp")) != timestamp:
        return error_response(401, "invalid_signature", "the signed timestamp is not the event's")
    age_ms = suite.now() * 1000 - int(timestamp)
    if not (
        -settings.zalo_webhook_max_skew_seconds * 1000
        <= age_ms
        <= settings.zalo_webhook_max_age_seconds * 1000
    ):
        log.warning("zalo webhook with a stale timestamp refused")
        return error_response(401, "stale_timestamp", "the event is too old or from the future")
    return await _take(inbound, OA_CHANNEL, body)


async def _oa_event(inbound: ZaloInbound, body: dict[str, Any]) -> None:
    """One stored OA/ZNS event, from the inbox."""
    funnel = inbound.funnel
    event = str(body.get("event_name", ""))
    message = body.get("message") if isinstance(body.get("message"), dict) else {}
    assert isinstance(message, dict)
    if event == "user_send_text":
        sender = body.get("sender")
        user = _id(sender.get("id")) if isinstance(sender, dict) else None
        text = message.get("text")
        if user and isinstance(text, str):
            await route_zalo_text(funnel, OA_CHANNEL, user, text)
    elif event.startswith("user_send_"):  # a sticker, an image...: a polite re-ask
        sender = body.get("sender")
        user = _id(sender.get("id")) if isinstance(sender, dict) else None
        if user:
            await funnel.text(OA_CHANNEL, user, "")
    elif event == "follow":
        follower = body.get("follower")
        user = _id(follower.get("id")) if isinstance(follower, dict) else None
        if user:
            await funnel.command(OA_CHANNEL, user, "help")
    elif event == "user_received_message" and isinstance(message.get("tracking_id"), str):
        await record_delivery(inbound.tracked, message["tracking_id"])
    elif event == "user_feedback":
        rating = parse_rating(message)
        if rating is not None:
            await record_rating(inbound.tracked, rating, inbound.settings.max_free_text_chars)
    # unfollow, OA echoes, seen receipts, OA delivery receipts: nothing to store.
    log.debug("zalo event %s handled", event[:40])


# ------------------------------------------------------------------------ Zalo Bot
async def bot_webhook(inbound: ZaloInbound, request: web.Request) -> web.Response:
    secret = inbound.settings.zalo_bot_webhook_secret
    if inbound.zalo is None or inbound.zalo.bot is None or not secret:
        return error_response(404, "not_configured", "the Zalo Bot webhook is not configured")
    if not gate.secret_matches(request.headers.get("X-Bot-Api-Secret-Token", ""), secret):
        log.warning("zalo bot webhook with a bad secret refused")
        return error_response(401, "invalid_secret", "X-Bot-Api-Secret-Token does not match")
    body = await gate.read_event(request, inbound.settings.max_json_depth)
    if not isinstance(body, dict):
        return error_response(400, "malformed_json", "the body must be a JSON object")
    update = body.get("result") if isinstance(body.get("result"), dict) else body
    assert isinstance(update, dict)
    message = update.get("message")
    sent_ms = message.get("date") if isinstance(message, dict) else None
    if isinstance(sent_ms, int) and not isinstance(sent_ms, bool) and inbound.zalo is not None:
        age_ms = inbound.zalo.now() * 1000 - sent_ms
        if age_ms > inbound.settings.zalo_webhook_max_age_seconds * 1000:
            # Older than its redelivery window: its mark may be gone, so it could be a replay.
            log.warning("zalo bot event older than the redelivery window ignored")
            return web.json_response({"ok": True, "ignored": "stale"})
    return await _take(inbound, BOT_CHANNEL, update)


async def bot_update(inbound: ZaloInbound, update: dict[str, Any]) -> None:
    """One stored Bot API update (webhook or polling), from the inbox."""
    message = update.get("message")
    if not isinstance(message, dict):
        return
    chat = message.get("chat") if isinstance(message.get("chat"), dict) else None
    chat_id = chat.get("id") if chat else None
    if not isinstance(chat_id, str | int) or not str(chat_id).strip():
        return
    text = message.get("text")
    event = str(update.get("event_name", ""))
    if event == "message.text.received" and isinstance(text, str):
        await route_zalo_text(inbound.funnel, BOT_CHANNEL, str(chat_id), text)
    elif event.startswith("message."):
        await inbound.funnel.text(BOT_CHANNEL, str(chat_id), "")


async def poll_bot(inbound: ZaloInbound, stop: asyncio.Event) -> None:
    """Long-poll the Bot API when no webhook is used (mutually exclusive on Zalo's side). A
    polled update goes through the same inbox as a webhook's: stored, then processed once."""
    suite = inbound.zalo
    if suite is None or suite.bot is None:
        return
    while not stop.is_set():
        try:
            update = await suite.bot.poll_once()
            if update is not None:
                identity = event_identity(BOT_CHANNEL, update)
                await inbound.inbox.accept(
                    BOT_CHANNEL, identity, _conversation(update, identity), update
                )
        except Exception as exc:
            log.warning("zalo bot poll failed: %s", exc.__class__.__name__)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await stop.wait()


def routes(inbound: ZaloInbound) -> list[web.RouteDef]:
    """The OA/ZNS events endpoint and the Bot endpoint (404 while not configured)."""
    return [
        web.post(
            "/webhooks/zalo/oa", functools.partial(oa_webhook, inbound), name="zalo_oa_webhook"
        ),
        web.post(
            "/webhooks/zalo/bot", functools.partial(bot_webhook, inbound), name="zalo_bot_webhook"
        ),
    ]


__all__ = ["ZaloInbound", "bot_update", "poll_bot", "route_zalo_text", "routes", "verify_signature"]
