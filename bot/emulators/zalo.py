"""Strict local emulator of the Zalo developer APIs (OA v3, OAuth v4, ZNS, Zalo Bot).

Why this exists: the real Zalo platform cannot be reached from CI, has a 7-day messaging window,
single-use rotating refresh tokens and signed webhooks, and nearly every one of those rules is a
way for an adapter to break in production. This emulator reproduces the documented behaviour
(see ``/work/shared/reference/zalo.md``) as strictly as possible, on one local aiohttp port, so the
test-suite and the ``surveybot demo`` command can exercise the real HTTP client code paths.

Design choices, each made to catch a class of adapter bug:

* OA/ZNS errors are HTTP 200 with ``{"error": <negative int>, "message": ...}``, so an adapter that
  trusts the HTTP status fails here exactly as it would in production.
* Ids are random 18-19 digit decimal strings and timestamps are millisecond strings, so any
  accidental ``int``/``float`` conversion (> 2**53) corrupts them visibly.
* The clock is virtual (:meth:`ZaloEmulator.advance`), so token expiry (25 h) and the 7-day window
  can be tested without sleeping.
* Webhooks are signed exactly as Zalo signs them, re-delivered with ``num_retry``, the same body
  and its original ``timestamp`` on Zalo's real ladder (30 s, 5 min, 15 min, 30 min, 1 h) run on
  the virtual clock: a redelivery happens when a test advances the clock past its due time. Which
  failures are retried is switchable (``retry_on``), since the sources can be read both ways.
  Events can be dropped on purpose, so idempotency and polling fallbacks get exercised.

Only aiohttp and the standard library are used, so the module is importable anywhere the bot runs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import random
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
from aiohttp import web

__all__ = [
    "ACCESS_TOKEN_TTL_S",
    "CS_FREE_WINDOW_MS",
    "CS_WINDOW_MS",
    "FAULT_KINDS",
    "REAL_RETRY_LADDER_S",
    "RETRY_TRIGGERS",
    "TWELVE_HOUR_RETRY_LADDER_S",
    "ZNS_PHONE_FORMS",
    "ApiCall",
    "BotMessage",
    "OaMessage",
    "OaUser",
    "WebhookRecord",
    "ZaloEmulator",
    "ZnsMessage",
    "ZnsRating",
    "ZnsTemplate",
    "sign_event",
    "verify_event_signature",
]

# --------------------------------------------------------------------------------------------
# Documented constants (reference §3, §0.1, §6, §1.2, §5)
# --------------------------------------------------------------------------------------------

#: OA access tokens live 25 h; ``expires_in`` is returned as the *string* of this value.
ACCESS_TOKEN_TTL_S = 90_000
#: Refresh tokens live about 3 months and are single-use.
REFRESH_TOKEN_TTL_S = 90 * 86_400
#: Authorization codes are single-use and last 10 minutes.
AUTH_CODE_TTL_S = 600
#: CS messages are free within 48 h of the last interaction ...
CS_FREE_WINDOW_MS = 48 * 3_600_000
#: ... billed up to 7 days, rejected (-230) after that.
CS_WINDOW_MS = 7 * 86_400_000
#: Maximum length of a CS text (after NFC normalisation) and of a Bot ``sendMessage`` text.
MAX_TEXT_CHARS = 2000
#: Documented OA limit: 4,000 requests per minute per app, ``-32`` beyond.
DEFAULT_RATE_LIMIT_PER_MINUTE = 4000
#: The webhook retry ladder: delays after each failed attempt, 30 s, 5 min, 15 min, 30 min, 1 h
#: (reference zalo.md §2.1 [M]: S4, S5 and S10 agree), run on the VIRTUAL clock so tests see it.
REAL_RETRY_LADDER_S: tuple[float, ...] = (30.0, 300.0, 900.0, 1800.0, 3600.0)
#: The older reading (zalo.md §2.1, S7 hainh.me): Zalo "keeps resending for up to 12 h, then
#: disables the webhook"; the spacing is not documented there, so this ladder is our guess of it.
TWELVE_HOUR_RETRY_LADDER_S: tuple[float, ...] = (
    *REAL_RETRY_LADDER_S,
    3600.0 * 2,
    3600.0 * 4,
    13_800.0,
)
#: What makes Zalo redeliver (zalo.md §2.1: "reply 200 within 2 s, or Zalo retries" [H]; which
#: failures count is ambiguous). ``"connect"``: only when the connection fails or no answer comes
#: within the 2 s deadline, so a 503 is NOT redelivered; ``"non_200"``: any answer but 200 too.
RETRY_TRIGGERS = frozenset({"connect", "non_200"})
#: Zalo answers must arrive within 2 s or the webhook is considered failed.
DEFAULT_WEBHOOK_TIMEOUT_S = 2.0
#: Vietnam local time, used for the ZNS daily quota day and the template night rule.
VN_TZ = timezone(timedelta(hours=7))
#: ZNS template type number of the service-rating template.
SERVICE_RATING_TEMPLATE_TYPE = 5

QUERY_BUTTON_TYPES = frozenset({"oa.query.show", "oa.query.hide"})
BUTTON_TYPES = QUERY_BUTTON_TYPES | {"oa.open.url", "oa.open.phone", "oa.open.sms"}
MAX_BUTTON_TITLE = 100
MAX_QUERY_PAYLOAD = 1000
#: Kinds accepted by :meth:`ZaloEmulator.inject`.
FAULT_KINDS = frozenset(
    {"expired_token", "quota", "500", "429", "timeout", "rate_limit", "unknown_error", "bad_secret"}
)

#: ZNS recipient phones (zalo.md §4.1 ``phone`` row): ``84xxxxxxxxx``, the country code without
#: the leading 0 [H], in every reading; the official Zalo Cloud error page (S6 [M]) says
#: ``0xxxxxxxxx`` and the bare national digits are accepted too. Vietnamese numbers have 9 or
#: 10 digits after the trunk 0.
_PHONE_RE = re.compile(r"84[1-9]\d{8,9}")
_PHONE_TRUNK_RE = re.compile(r"0([1-9]\d{8,9})")
_PHONE_BARE_RE = re.compile(r"[1-9]\d{8,9}")
#: Readings of which phone forms ZNS accepts (``zns_phone_forms``): ``"error_page"`` (S6:
#: ``84…``, ``0…``, bare national digits) or ``"country_code_only"`` (``84…`` only: §4.1's [H]
#: rule and the §8 emulator table, "``84…`` phone → -108").
ZNS_PHONE_FORMS = frozenset({"error_page", "country_code_only"})
_BOT_PATH_RE = re.compile(r"/bot([^/]+)/([A-Za-z]+)")
_MAX_TRACKING_ID = 48

Reply = tuple[int, dict[str, Any]]
"""A handler result: HTTP status and JSON body."""


# --------------------------------------------------------------------------------------------
# Signatures
# --------------------------------------------------------------------------------------------


def sign_event(app_id: str, body: bytes, timestamp: str, oa_secret: str) -> str:
    """Return the ``X-ZEvent-Signature`` header value for a webhook body.

    Zalo uses plain SHA-256 over ``app_id + raw_body + timestamp + oa_secret`` (not HMAC), and
    prefixes the hex digest with ``mac=`` (reference §2.3). Tests use this to forge valid or
    invalid requests for the adapter's webhook endpoint.
    """
    material = app_id.encode() + body + timestamp.encode() + oa_secret.encode()
    return "mac=" + hashlib.sha256(material).hexdigest()


def verify_event_signature(header: str | None, body: bytes, oa_secret: str) -> bool:
    """Check a ``X-ZEvent-Signature`` header against raw body bytes, like a careful receiver.

    ``app_id`` and ``timestamp`` are read from the body itself, as Zalo documents; the header is
    accepted with or without the ``mac=`` prefix and compared in constant time.
    """
    if not header:
        return False
    try:
        parsed = json.loads(body)
        app_id = str(parsed["app_id"])
        timestamp = str(parsed["timestamp"])
    except (ValueError, KeyError, TypeError):
        return False
    expected = sign_event(app_id, body, timestamp, oa_secret).removeprefix("mac=")
    return hmac.compare_digest(header.strip().removeprefix("mac="), expected)


# --------------------------------------------------------------------------------------------
# Records (what tests assert on)
# --------------------------------------------------------------------------------------------


@dataclass
class ZnsTemplate:
    """A ZNS/ZBS template the emulated OA owns; only these ids can be sent (-109 otherwise)."""

    template_id: str
    params: tuple[str, ...]
    name: str = "Đánh giá dịch vụ"
    template_type: int = SERVICE_RATING_TEMPLATE_TYPE
    status: str = "ENABLE"
    #: Per-template night restriction (-133 between 22:00 and 06:00 Vietnam time).
    night_restricted: bool = False
    #: Maximum length of each parameter value (-1121 beyond).
    param_max_length: int = 256


@dataclass
class OaUser:
    """A citizen as seen by the OA (OA-scoped ``user_id`` plus the app-scoped id)."""

    user_id: str
    user_id_by_app: str
    display_name: str
    phone: str | None = None
    is_follower: bool = False
    last_interaction_ms: int | None = None
    avatar: str = "https://s120-ava-talk.zadn.vn/emulator/avatar.jpg"


@dataclass
class OaMessage:
    """One CS message the OA sent through ``/v3.0/oa/message/cs``."""

    msg_id: str
    user_id: str
    text: str
    #: ``(title, payload)``; for url/phone/sms buttons the payload is the url/phone/content.
    buttons: list[tuple[str, str]]
    raw_buttons: list[dict[str, Any]]
    sent_ms: int
    billed: bool
    delivered: bool = False
    seen: bool = False

    def button_payloads(self, query_only: bool = True) -> list[str]:
        """Payloads a user could tap (query buttons only by default)."""
        return [
            str(b.get("payload"))
            for b in self.raw_buttons
            if not query_only or b.get("type") in QUERY_BUTTON_TYPES
        ]


@dataclass
class ZnsRating:
    """A star rating submitted on a service-rating ZNS message."""

    msg_id: str
    tracking_id: str
    template_id: str
    rate: int
    feedbacks: list[str]
    note: str
    submit_ms: int


@dataclass
class ZnsMessage:
    """One ZNS template message accepted by ``/message/template``."""

    msg_id: str
    phone: str
    template_id: str
    template_data: dict[str, Any]
    tracking_id: str
    mode: str | None
    sent_ms: int
    delivered_ms: int | None = None
    rating: ZnsRating | None = None
    #: ``phone`` as the request wrote it (``phone`` itself is always the ``84…`` form).
    phone_as_sent: str = ""


@dataclass
class BotMessage:
    """One message sent by the bot with ``sendMessage``."""

    message_id: str
    chat_id: str
    text: str
    date_ms: int
    parse_mode: str | None = None


@dataclass
class ApiCall:
    """One HTTP request received by the emulator, with what it answered."""

    api: str  # "oauth" | "openapi" | "business" | "bot"
    http_method: str
    endpoint: str  # e.g. "/v3.0/oa/message/cs", "/message/template", "/bot/sendMessage"
    query: dict[str, str]
    body: Any
    headers: dict[str, str]
    time_ms: int
    status: int = 0
    response: Any = None
    fault: str | None = None

    @property
    def error(self) -> int | None:
        """The Zalo ``error`` (OA/ZNS/OAuth) or ``error_code`` (Bot) of the answer, if any."""
        if not isinstance(self.response, dict):
            return None
        if "error" in self.response:
            value = self.response["error"]
            return value if isinstance(value, int) else None
        code = self.response.get("error_code")
        return code if isinstance(code, int) else None


@dataclass
class WebhookRecord:
    """One outbound webhook event and the history of its delivery attempts."""

    target: str  # "oa" | "bot"
    url: str | None
    event: dict[str, Any]
    body: bytes
    headers: dict[str, str]
    attempts: int = 0
    statuses: list[int | str] = field(default_factory=list)
    delivered: bool = False
    dropped: bool = False
    gave_up: bool = False
    #: The receiver's answer bodies, one per answered attempt (JSON when it parses, else text).
    replies: list[Any] = field(default_factory=list)
    #: Virtual epoch ms of the next redelivery (None when none is scheduled).
    due_ms: int | None = None

    @property
    def event_name(self) -> str:
        """The Zalo ``event_name`` of the event."""
        return str(self.event.get("event_name", ""))


@dataclass
class _Fault:
    endpoint: str | None
    kind: str
    remaining: int


@dataclass
class _Ctx:
    """A parsed incoming request, handed to the endpoint handlers."""

    api: str
    endpoint: str
    request: web.Request
    raw: bytes
    query: dict[str, str]
    call: ApiCall
    bot_token: str | None = None

    def json_body(self) -> Any:
        """The JSON body, or ``None`` when it is absent, not JSON, or not sent as JSON."""
        if self.request.content_type != "application/json":
            return None
        try:
            return json.loads(self.raw or b"null")
        except ValueError:
            return None


# --------------------------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------------------------

_Handler = Callable[[_Ctx], Awaitable[Reply]]


def _oa_err(code: int, message: str) -> Reply:
    """OA/ZNS failure: always HTTP 200, never a ``data`` member (reference §1.2)."""
    return 200, {"error": code, "message": message}


def _ok(data: Any) -> Reply:
    return 200, {"error": 0, "message": "Success", "data": data}


def _bot_err(code: int, description: str) -> Reply:
    """Bot failure; the HTTP status mirrors ``error_code`` so adapters must read the body."""
    return code, {"ok": False, "error_code": code, "description": description}


def _bot_ok(result: Any) -> Reply:
    return 200, {"ok": True, "result": result}


def _oauth_err(code: int, name: str, reason: str) -> Reply:
    """OAuth failure; shape per reference §3 ([L]): anything without access_token is fatal."""
    return 200, {
        "error": code,
        "error_name": name,
        "error_reason": reason,
        "error_description": reason,
        "ref_doc": "https://developers.zalo.me/docs/official-account/bat-dau/xac-thuc-va-uy-quyen",
    }


class ZaloEmulator:
    """One aiohttp server emulating oauth.zaloapp.com, openapi.zalo.me, business.openapi.zalo.me
    and bot-api.zaloplatforms.com under path prefixes of a single local port.

    After :meth:`start`, use :attr:`oauth_url`, :attr:`openapi_url`, :attr:`business_url` and
    :attr:`bot_url` as the base URLs an adapter would otherwise point at the real hosts; paths
    below them are identical to production.
    """

    def __init__(
        self,
        *,
        app_id: str = "360846524940903967",
        oa_id: str = "579745863508352884",
        app_secret_key: str = "emulator-app-secret",  # noqa: S107
        oa_secret: str = "emulator-oa-secret",  # noqa: S107
        refresh_token: str = "emulator-refresh-token-0",  # noqa: S107
        access_token: str | None = None,
        bot_token: str = "1234567890123456789:emulator-bot-secret",  # noqa: S107
        oa_name: str = "Cổng Dịch vụ công (emulator)",
        webhook_url: str | None = None,
        rating_template_id: str = "355330",
        rating_template_params: Sequence[str] = ("customer_name", "dossier_code"),
        zns_templates: Sequence[ZnsTemplate] | None = None,
        zns_daily_quota: int = 500,
        zns_admin_phones: Iterable[str] = (),
        rate_limit_per_minute: int = DEFAULT_RATE_LIMIT_PER_MINUTE,
        bot_rate_limit_per_minute: int | None = None,
        expired_token_code: int = -220,
        zns_phone_forms: str = "error_page",
        zns_rerating: bool = True,
        rating_get_order: str = "oldest_first",
        revoke_replaced_access_token: bool = True,
        max_buttons: int = 5,
        echo_oa_messages: bool = True,
        auto_delivery_receipts: bool = False,
        webhook_timeout: float = DEFAULT_WEBHOOK_TIMEOUT_S,
        retry_ladder: Sequence[float] = REAL_RETRY_LADDER_S,
        retry_on: str = "non_200",
        client_timeout: float = 10.0,
        bot_poll_time_scale: float = 1.0,
        bot_webhook_wrapped: bool = False,
        allow_http_webhooks: bool = True,
        start_time_ms: int | None = None,
        clock_runs: bool = True,
        seed: int | None = None,
    ) -> None:
        """Configure the emulated app/OA/bot.

        ``client_timeout`` is the adapter's HTTP timeout: a ``"timeout"`` fault sleeps longer than
        it. ``start_time_ms``/``clock_runs`` control the virtual clock (``clock_runs=False``
        freezes it so tests are deterministic). ``expired_token_code`` is what an expired (or
        revoked) OA token is answered with: -220 "access_token is expired or removed" by default
        (zalo.md §1.5, the official ``ma-loi`` table via S3 [H]), while -216 "Access token is
        invalid" stays the answer to a missing or unknown token; -216 is the other reading
        (zalo.md §1.5: chatwoot refreshes on -216 only; §3 and §8 say "-216/-220"). ``revoke_replaced_access_token``: a
        refresh makes the access token issued with the used refresh token stop working at once
        (zalo.md §3, "The access token that was just replaced stops working as soon as the new
        pair is issued", read in a verification of the live docs); ``False`` is the reading
        that it stays valid until its own 25 h expiry (not documented: our reading of the
        older sources, which never mention a revocation).
        """
        self.app_id = app_id
        self.oa_id = oa_id
        self.app_secret_key = app_secret_key
        self.oa_secret = oa_secret
        self.bot_token = bot_token
        self.oa_name = oa_name
        self.oa_webhook_url = webhook_url
        self.zns_daily_quota = zns_daily_quota
        self.zns_admin_phones = set(zns_admin_phones)
        self.rate_limit_per_minute = rate_limit_per_minute
        self.bot_rate_limit_per_minute = bot_rate_limit_per_minute
        self.expired_token_code = expired_token_code
        if zns_phone_forms not in ZNS_PHONE_FORMS:
            raise ValueError(f"zns_phone_forms must be one of {sorted(ZNS_PHONE_FORMS)}")
        self.zns_phone_forms = zns_phone_forms
        # Not documented: our reading. zalo.md §4.2 says nothing of a second rating; we assume
        # a citizen can change their stars, each change a new user_feedback and rating/get row.
        self.zns_rerating = zns_rerating
        # Not documented: our reading. zalo.md §4.2 gives no order for rating/get's list.
        if rating_get_order not in ("oldest_first", "newest_first"):
            raise ValueError("rating_get_order must be 'oldest_first' or 'newest_first'")
        self.rating_get_order = rating_get_order
        self.revoke_replaced_access_token = revoke_replaced_access_token
        self.max_buttons = max_buttons
        self.echo_oa_messages = echo_oa_messages
        self.auto_delivery_receipts = auto_delivery_receipts
        self.webhook_timeout = webhook_timeout
        self.retry_ladder = tuple(retry_ladder)
        if retry_on not in RETRY_TRIGGERS:
            raise ValueError(f"retry_on must be one of {sorted(RETRY_TRIGGERS)}")
        self.retry_on = retry_on
        self.client_timeout = client_timeout
        self.bot_poll_time_scale = bot_poll_time_scale
        self.bot_webhook_wrapped = bot_webhook_wrapped
        self.allow_http_webhooks = allow_http_webhooks

        self._rng = random.Random(seed)
        self._issued_ids: set[str] = set()
        self._clock_base_ms = int(time.time() * 1000) if start_time_ms is None else start_time_ms
        self._clock_started = time.monotonic()
        self._clock_runs = clock_runs
        self._offset_ms = 0

        templates = list(zns_templates or ())
        if not templates:
            templates = [ZnsTemplate(rating_template_id, tuple(rating_template_params))]
        self.zns_templates: dict[str, ZnsTemplate] = {t.template_id: t for t in templates}

        # Tokens: value -> expiry (virtual ms).
        self._access_tokens: dict[str, int] = {}
        self._refresh_tokens: dict[str, int] = {}
        self._used_refresh_tokens: set[str] = set()
        self._auth_codes: dict[str, tuple[int, str | None]] = {}
        #: The access token issued together with each refresh token (the pair a refresh replaces).
        self._paired_access: dict[str, str] = {}
        #: Access tokens revoked before their expiry: answered as "expired or removed".
        self._removed_access_tokens: set[str] = set()
        self._refresh_tokens[refresh_token] = self.now_ms() + REFRESH_TOKEN_TTL_S * 1000
        if access_token is not None:
            self._access_tokens[access_token] = self.now_ms() + ACCESS_TOKEN_TTL_S * 1000
            self._paired_access[refresh_token] = access_token

        # State.
        self.users: dict[str, OaUser] = {}
        self.oa_messages: dict[str, OaMessage] = {}
        self.zns_messages: list[ZnsMessage] = []
        self._zns_by_id: dict[str, ZnsMessage] = {}
        self.zns_ratings: list[ZnsRating] = []
        self._zns_sent_per_day: dict[str, int] = {}
        self.unreachable_phones: dict[str, int] = {}
        self.bot_chats: dict[str, dict[str, Any]] = {}
        self.bot_sent: list[BotMessage] = []
        self.bot_webhook_url: str | None = None
        self.bot_webhook_secret: str | None = None
        self._bot_webhook_updated_ms = 0

        # Recording.
        self.calls: list[ApiCall] = []
        self.webhooks: list[WebhookRecord] = []
        self.refresh_count = 0

        # Machinery.
        self._faults: list[_Fault] = []
        self._rate_counts: dict[tuple[str, int], int] = {}
        self._drop_rules: list[list[Any]] = []  # [target, event_name | None, remaining]
        self._queues: dict[str, asyncio.Queue[WebhookRecord]] = {
            "oa": asyncio.Queue(),
            "bot": asyncio.Queue(),
        }
        self._bot_updates: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._in_flight = 0
        #: Failed events waiting (on the virtual clock) for their next rung of the ladder.
        self._scheduled: list[WebhookRecord] = []
        self._wake = asyncio.Event()
        self._active_requests = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._workers: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.oauth_url = ""
        self.openapi_url = ""
        self.business_url = ""
        self.bot_url = ""

        self._routes: dict[tuple[str, str, str], _Handler] = {
            ("oauth", "POST", "/v4/oa/access_token"): self._h_access_token,
            ("openapi", "POST", "/v3.0/oa/message/cs"): self._h_message_cs,
            ("openapi", "GET", "/v3.0/oa/user/detail"): self._h_user_detail,
            ("openapi", "POST", "/v3.0/oa/quota/message"): self._h_quota_message,
            ("openapi", "GET", "/v2.0/oa/getoa"): self._h_getoa,
            ("openapi", "POST", "/v2.0/oa/message"): self._h_message_v2,
            ("business", "POST", "/message/template"): self._h_zns_send,
            ("business", "GET", "/message/status"): self._h_zns_status,
            ("business", "GET", "/message/quota"): self._h_zns_quota,
            ("business", "GET", "/template/info/v2"): self._h_template_info,
            ("business", "GET", "/rating/get"): self._h_rating_get,
            ("business", "POST", "/rating/get"): self._h_rating_get,
        }
        for method in (
            "getMe",
            "getUpdates",
            "setWebhook",
            "deleteWebhook",
            "getWebhookInfo",
            "sendMessage",
            "sendChatAction",
        ):
            self._routes[("bot", "POST", "/bot/" + method)] = getattr(self, "_hb_" + method)

    # ---------------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Bind the server (port 0 = a free port) and start the webhook delivery workers."""
        app = web.Application(client_max_size=2 * 1024 * 1024)
        app.router.add_route("*", "/{api:oauth|openapi|business|botapi}/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        addresses = self._runner.addresses
        bound_port = int(addresses[0][1]) if addresses else port
        url_host = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{url_host}:{bound_port}"
        self.oauth_url = self.base_url + "/oauth"
        self.openapi_url = self.base_url + "/openapi"
        self.business_url = self.base_url + "/business"
        self.bot_url = self.base_url + "/botapi"
        # A fresh connection per delivery (whether Zalo keeps connections alive is not
        # documented), so a receiver that stopped listening is really unreachable.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        self._workers = [
            asyncio.create_task(self._worker(target), name=f"zalo-emulator-webhooks-{target}")
            for target in ("oa", "bot")
        ]
        self._workers.append(
            asyncio.create_task(self._redelivery_timer(), name="zalo-emulator-redelivery")
        )

    async def stop(self) -> None:
        """Stop workers and the server; undelivered webhooks are abandoned."""
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ZaloEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- clock

    def now_ms(self) -> int:
        """Virtual epoch ms: base + real elapsed time (unless frozen) + :meth:`advance` offsets."""
        elapsed = int((time.monotonic() - self._clock_started) * 1000) if self._clock_runs else 0
        return self._clock_base_ms + elapsed + self._offset_ms

    def advance(self, seconds: float) -> None:
        """Jump the virtual clock forward, e.g. 90000 s to expire an access token; webhook
        redeliveries that became due are started (await :meth:`wait_idle` to see them land)."""
        self._offset_ms += int(seconds * 1000)
        self._promote_due()

    def set_time_ms(self, epoch_ms: int) -> None:
        """Set the virtual clock to an absolute instant (e.g. 23:00 Vietnam time)."""
        self._offset_ms += epoch_ms - self.now_ms()
        self._promote_due()

    # ---------------------------------------------------------------- ids & tokens

    def new_id(self) -> str:
        """A fresh 18-19 digit decimal id string, always above 2**53 to catch int conversions."""
        while True:
            value = str(self._rng.randrange(10**17, 10**19))
            if value not in self._issued_ids:
                self._issued_ids.add(value)
                return value

    def _token(self, prefix: str) -> str:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        return prefix + "".join(self._rng.choice(alphabet) for _ in range(40))

    def issue_tokens(self) -> tuple[str, str]:
        """Mint a valid (access, refresh) pair directly, like the console's API Explorer."""
        access = self._token("AT.")
        refresh = self._token("RT.")
        self._access_tokens[access] = self.now_ms() + ACCESS_TOKEN_TTL_S * 1000
        self._refresh_tokens[refresh] = self.now_ms() + REFRESH_TOKEN_TTL_S * 1000
        self._paired_access[refresh] = access
        return access, refresh

    def issue_authorization_code(self, code_challenge: str | None = None) -> str:
        """Mint a single-use 10-minute authorization code (the OA admin's consent redirect)."""
        code = self._token("CODE.")
        self._auth_codes[code] = (self.now_ms() + AUTH_CODE_TTL_S * 1000, code_challenge)
        return code

    def revoke_access_token(self, token: str) -> None:
        """Make an access token invalid immediately (the "removed" half of -220)."""
        if self._access_tokens.pop(token, None) is not None:
            self._removed_access_tokens.add(token)

    @property
    def valid_refresh_tokens(self) -> list[str]:
        """Refresh tokens that a refresh would currently accept."""
        now = self.now_ms()
        return [t for t, exp in self._refresh_tokens.items() if exp > now]

    # ---------------------------------------------------------------- faults

    def inject(self, endpoint: str | None, kind: str, count: int = 1) -> None:
        """Make the next ``count`` calls to ``endpoint`` (``None`` = any endpoint) fail.

        ``endpoint`` matches the call's endpoint exactly or as a suffix, e.g.
        ``"/v3.0/oa/message/cs"``, ``"/message/template"``, ``"/v4/oa/access_token"`` or
        ``"sendMessage"`` (bot endpoints are ``"/bot/<method>"``, the token stripped). Kinds:
        ``expired_token`` (OA ``expired_token_code``, -220 by default, ZNS -124, OAuth -14014, Bot 401), ``quota`` (OA -211,
        ZNS -144, Bot 429), ``500`` (HTTP 500, text body), ``timeout`` (sleeps
        ``client_timeout + 0.5`` s, then processes the request normally, so the side effect
        happens although the client gave up), ``rate_limit`` (OA/ZNS/OAuth -32, Bot 429),
        ``429`` (HTTP 429 with a text body, as a gateway in front of Zalo would answer: not
        documented, our reading), ``unknown_error`` (a code no source lists: OAuth -14099,
        OA/ZNS -100 "unknown" of zalo.md §4.4, Bot 500) and ``bad_secret`` (OAuth -14005, the
        emulator's invalid ``secret_key`` answer; ZNS -104 "secret invalid", zalo.md §4.4; OA
        -242, §1.5; Bot 401).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if count < 1:
            raise ValueError("count must be >= 1")
        self._faults.append(_Fault(endpoint, kind, count))

    def clear_faults(self) -> None:
        """Forget all pending injected faults."""
        self._faults.clear()

    def _take_fault(self, endpoint: str) -> str | None:
        for fault in self._faults:
            if (
                fault.endpoint is None
                or endpoint == fault.endpoint
                or (endpoint.endswith(fault.endpoint))
            ):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault.kind
        return None

    def _fault_reply(self, api: str, kind: str) -> Reply:
        if api == "bot":
            if kind in ("expired_token", "bad_secret"):
                return _bot_err(401, "Unauthorized")
            if kind == "unknown_error":
                return _bot_err(500, "Internal Server Error")
            return _bot_err(429, "Too Many Requests")
        if kind == "unknown_error":  # not documented: our reading of "a code nobody lists"
            if api == "oauth":
                return _oauth_err(-14099, "Unknown error", "An unknown error occurred")
            return _oa_err(-100, "Unknown error")
        if kind == "bad_secret":
            if api == "oauth":
                return _oauth_err(-14005, "Invalid secret key", "secret_key header is invalid")
            if api == "business":
                return _oa_err(-104, "App secret key is invalid")
            return _oa_err(-242, "Invalid appsecret_proof provided")
        if api == "oauth":
            if kind == "expired_token":
                return _oauth_err(-14014, "Invalid refresh token", "Refresh token is invalid")
            return _oa_err(-32, "Your application reached limit call api")
        if kind == "expired_token":
            if api == "business":
                return _oa_err(-124, "Access token is invalid")
            return self._expired_oa_token()
        if kind == "quota":
            if api == "business":
                return _oa_err(-144, "OA has exceeded the daily limit of ZNS messages")
            return _oa_err(-211, "Out of quota")
        return _oa_err(-32, "Your application reached limit call api")

    def _expired_oa_token(self) -> Reply:
        """An expired or removed OA token (zalo.md §1.5: -220; -216 under the other reading)."""
        if self.expired_token_code == -220:
            return _oa_err(-220, "access_token is expired or removed")
        return _oa_err(self.expired_token_code, "Access token is invalid")

    # ---------------------------------------------------------------- dispatch

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        """Single entry point: record, inject faults, rate-limit, then route to a handler."""
        prefix = request.match_info["api"]
        tail = "/" + request.match_info["tail"]
        api = "bot" if prefix == "botapi" else prefix
        bot_token: str | None = None
        endpoint = tail
        if api == "bot":
            match = _BOT_PATH_RE.fullmatch(tail)
            if match is None:
                return web.json_response(
                    {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
                )
            bot_token, endpoint = match.group(1), "/bot/" + match.group(2)
        raw = await request.read()
        body: Any
        try:
            body = json.loads(raw) if raw and request.content_type == "application/json" else None
        except ValueError:
            body = None
        if body is None and raw:
            body = raw.decode("utf-8", "replace")
        call = ApiCall(
            api=api,
            http_method=request.method,
            endpoint=endpoint,
            query=dict(request.query),
            body=body,
            headers=dict(request.headers),
            time_ms=self.now_ms(),
        )
        self.calls.append(call)
        ctx = _Ctx(api, endpoint, request, raw, dict(request.query), call, bot_token)
        long_poll = endpoint == "/bot/getUpdates"
        if not long_poll:
            self._active_requests += 1
            self._busy_changed()
        try:
            return await self._process(ctx)
        finally:
            if not long_poll:
                self._active_requests -= 1
                self._busy_changed()

    async def _process(self, ctx: _Ctx) -> web.StreamResponse:
        call = ctx.call
        handler = self._routes.get((ctx.api, ctx.request.method, ctx.endpoint))
        if handler is None:
            known = any(a == ctx.api and e == ctx.endpoint for a, _, e in self._routes)
            status = 405 if known else 404
            call.status = status
            if ctx.api == "bot":
                call.response = {"ok": False, "error_code": status, "description": "Not Found"}
                return web.json_response(call.response, status=status)
            call.response = "Method Not Allowed" if known else "Not Found"
            return web.Response(status=status, text=str(call.response))

        headers: dict[str, str] = {}
        reply: Reply | None = None
        fault = self._take_fault(ctx.endpoint)
        call.fault = fault
        if fault == "500":
            call.status, call.response = 500, "Internal Server Error"
            return web.Response(status=500, text="Internal Server Error")
        if fault == "429" and ctx.api != "bot":
            call.status, call.response = 429, "Too Many Requests"
            return web.Response(status=429, text="Too Many Requests")
        if fault == "timeout":
            await asyncio.sleep(self.client_timeout + 0.5)
        elif fault is not None:
            reply = self._fault_reply(ctx.api, fault)

        if reply is None and ctx.api == "bot" and ctx.bot_token != self.bot_token:
            reply = _bot_err(401, "Unauthorized")
        if reply is None:
            reply = self._rate_limit(ctx, headers)
        if reply is None:
            reply = await handler(ctx)
        status, payload = reply
        call.status, call.response = status, payload
        return web.json_response(
            payload,
            status=status,
            headers=headers,
            dumps=lambda obj: json.dumps(obj, ensure_ascii=False),
        )

    def _rate_limit(self, ctx: _Ctx, headers: dict[str, str]) -> Reply | None:
        """Per-app (OA+ZNS) or per-bot requests-per-minute limit over the virtual clock."""
        if ctx.api in ("openapi", "business"):
            limit: int | None = self.rate_limit_per_minute
            key = "app"
        elif ctx.api == "bot":
            limit, key = self.bot_rate_limit_per_minute, "bot"
        else:
            return None
        if limit is None:
            return None
        minute = self.now_ms() // 60_000
        count = self._rate_counts.get((key, minute), 0) + 1
        self._rate_counts[(key, minute)] = count
        if ctx.api != "bot":
            headers["X-RateLimit-Limit"] = str(limit)
            headers["X-RateLimit-Remain"] = str(max(0, limit - count))
        if count <= limit:
            return None
        if ctx.api == "bot":
            return _bot_err(429, "Too Many Requests")
        return _oa_err(-32, "Your application reached limit call api")

    def _check_token(self, ctx: _Ctx) -> Reply | None:
        """Validate the bare ``access_token`` header (not ``Authorization: Bearer``)."""
        token = ctx.request.headers.get("access_token")
        expiry = self._access_tokens.get(token) if token else None
        if expiry is None and token in self._removed_access_tokens:
            # Replaced by a refresh (zalo.md §3): "a process still holding it gets -216/-220";
            # answered like an expired token (the "removed" of -220's message).
            if ctx.api == "business":
                return _oa_err(-124, "Access token is invalid")
            return self._expired_oa_token()
        if expiry is None:  # missing or never issued: "invalid" (zalo.md §1.5 -216, §4.4 -124)
            if ctx.api == "business":
                return _oa_err(-124, "Access token is invalid")
            return _oa_err(-216, "Access token is invalid")
        if expiry <= self.now_ms():
            if ctx.api == "business":
                return _oa_err(-124, "Access token is invalid")
            return self._expired_oa_token()
        return None

    # ---------------------------------------------------------------- OAuth

    async def _h_access_token(self, ctx: _Ctx) -> Reply:
        """Refresh (or code exchange): form-encoded, ``secret_key`` header, rotating tokens."""
        if ctx.request.content_type != "application/x-www-form-urlencoded":
            return _oauth_err(-14001, "Invalid parameter", "Body must be form-urlencoded")
        form = dict(parse_qsl(ctx.raw.decode("utf-8", "replace"), keep_blank_values=True))
        ctx.call.body = form
        if ctx.request.headers.get("secret_key") != self.app_secret_key:
            return _oauth_err(-14005, "Invalid secret key", "secret_key header is invalid")
        if str(form.get("app_id", "")) != self.app_id:
            return _oauth_err(-14002, "Invalid app_id", "app_id is invalid")
        grant = str(form.get("grant_type", ""))
        now = self.now_ms()
        if grant == "refresh_token":
            old = str(form.get("refresh_token", ""))
            expiry = self._refresh_tokens.pop(old, None)
            if expiry is None or expiry <= now:
                reason = (
                    "Refresh token was already used"
                    if old in self._used_refresh_tokens
                    else "Refresh token is invalid or expired"
                )
                return _oauth_err(-14014, "Invalid refresh token", reason)
            self._used_refresh_tokens.add(old)
            self.refresh_count += 1
            replaced = self._paired_access.pop(old, None)
            if replaced is not None and self.revoke_replaced_access_token:
                # zalo.md §3: the replaced access token stops working as soon as the new pair
                # is issued (switch off for the reading that it lives out its 25 h).
                self.revoke_access_token(replaced)
        elif grant == "authorization_code":
            code = str(form.get("code", ""))
            entry = self._auth_codes.pop(code, None)
            if entry is None or entry[0] <= now:
                return _oauth_err(-14019, "Invalid authorization code", "code is invalid")
            challenge = entry[1]
            if challenge is not None:
                verifier = str(form.get("code_verifier", ""))
                digest = hashlib.sha256(verifier.encode()).digest()
                computed = base64.urlsafe_b64encode(digest).decode().rstrip("=")
                if not hmac.compare_digest(computed, challenge):
                    return _oauth_err(-14016, "Invalid code verifier", "code_verifier mismatch")
        else:
            return _oauth_err(-14001, "Invalid parameter", "grant_type is invalid")
        access, refresh = self.issue_tokens()
        return 200, {
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": str(ACCESS_TOKEN_TTL_S),
        }

    # ---------------------------------------------------------------- OA API

    def _user_from(self, value: Any) -> OaUser | Reply:
        if not isinstance(value, str) or not value.isdigit():
            return _oa_err(-201, "user_id is invalid!")
        user = self.users.get(value)
        if user is None:
            return _oa_err(-201, "user_id is invalid!")
        return user

    async def _h_message_cs(self, ctx: _Ctx) -> Reply:
        """``POST /v3.0/oa/message/cs``: text, or text + ``template`` buttons attachment."""
        if (err := self._check_token(ctx)) is not None:
            return err
        body = ctx.json_body()
        if not isinstance(body, dict):
            return _oa_err(-201, "body is invalid!")
        recipient = body.get("recipient")
        message = body.get("message")
        if not isinstance(recipient, dict):
            return _oa_err(-201, "recipient is invalid!")
        if not isinstance(message, dict):
            return _oa_err(-201, "message is invalid!")
        found = self._user_from(recipient.get("user_id"))
        if not isinstance(found, OaUser):
            return found
        user = found
        text = message.get("text")
        if not isinstance(text, str) or not text.strip():
            return _oa_err(-201, "text is invalid!")
        if len(unicodedata.normalize("NFC", text)) > MAX_TEXT_CHARS:
            return _oa_err(-201, "text is invalid! (maximum 2000 characters)")
        raw_buttons: list[dict[str, Any]] = []
        if "attachment" in message:
            parsed = self._parse_attachment(message["attachment"])
            if not isinstance(parsed, list):
                return parsed
            raw_buttons = parsed
        now = self.now_ms()
        last = user.last_interaction_ms
        if last is None or now - last > CS_WINDOW_MS:
            return _oa_err(-230, "User has not interacted with the OA in the past 7 days")
        billed = now - last > CS_FREE_WINDOW_MS
        msg = OaMessage(
            msg_id=self.new_id(),
            user_id=user.user_id,
            text=text,
            buttons=[(str(b["title"]), _button_payload_str(b)) for b in raw_buttons],
            raw_buttons=raw_buttons,
            sent_ms=now,
            billed=billed,
        )
        self.oa_messages[msg.msg_id] = msg
        if self.echo_oa_messages:
            self._emit_oa(
                {
                    "app_id": self.app_id,
                    "user_id_by_app": user.user_id_by_app,
                    "event_name": "oa_send_text",
                    "timestamp": str(now),
                    "sender": {"id": self.oa_id},
                    "recipient": {"id": user.user_id},
                    "message": {"msg_id": msg.msg_id, "text": text},
                }
            )
        if self.auto_delivery_receipts:
            await self.user_receive_message(msg.msg_id)
        return _ok(
            {
                "quota": {"quota_type": "purchase_quota" if billed else "reply"},
                "message_id": msg.msg_id,
                "user_id": user.user_id,
                "sent_time": str(now),
            }
        )

    def _parse_attachment(self, attachment: Any) -> list[dict[str, Any]] | Reply:
        """Validate the documented text+buttons attachment shape (reference §1.3)."""
        if not isinstance(attachment, dict) or attachment.get("type") != "template":
            return _oa_err(-233, "message type is invalid or not support")
        payload = attachment.get("payload")
        if not isinstance(payload, dict):
            return _oa_err(-201, "payload is invalid!")
        template_type = payload.get("template_type")
        if template_type not in (None, "button"):
            return _oa_err(-233, "message type is invalid or not support")
        buttons = payload.get("buttons")
        if not isinstance(buttons, list) or not buttons or len(buttons) > self.max_buttons:
            return _oa_err(-201, "buttons is invalid!")
        out: list[dict[str, Any]] = []
        for button in buttons:
            if not isinstance(button, dict):
                return _oa_err(-201, "buttons is invalid!")
            kind = button.get("type")
            title = button.get("title")
            value = button.get("payload")
            if kind not in BUTTON_TYPES:
                return _oa_err(-201, "button.type is invalid!")
            if not isinstance(title, str) or not 1 <= len(title) <= MAX_BUTTON_TITLE:
                return _oa_err(-201, "button.title is invalid!")
            ok = False
            if kind in QUERY_BUTTON_TYPES:
                ok = isinstance(value, str) and 1 <= len(value) <= MAX_QUERY_PAYLOAD
            elif kind == "oa.open.url":
                ok = isinstance(value, dict) and str(value.get("url", "")).startswith(
                    ("http://", "https://")
                )
            elif kind == "oa.open.phone":
                ok = isinstance(value, dict) and isinstance(value.get("phone_code"), str)
            elif kind == "oa.open.sms":
                ok = (
                    isinstance(value, dict)
                    and isinstance(value.get("phone_code"), str)
                    and isinstance(value.get("content"), str)
                )
            if not ok:
                return _oa_err(-201, "button.payload is invalid!")
            out.append(dict(button))
        return out

    async def _h_message_v2(self, ctx: _Ctx) -> Reply:
        """The shut-down v2 message API, so adapters still using it fail loudly."""
        return _oa_err(-240, "MessageV2 API has been shut down, please switch to MessageV3")

    async def _h_user_detail(self, ctx: _Ctx) -> Reply:
        """``GET /v3.0/oa/user/detail?data={"user_id": "..."}``."""
        if (err := self._check_token(ctx)) is not None:
            return err
        try:
            data = json.loads(ctx.query.get("data", ""))
        except ValueError:
            return _oa_err(-201, "data is invalid!")
        if not isinstance(data, dict):
            return _oa_err(-201, "data is invalid!")
        found = self._user_from(data.get("user_id"))
        if not isinstance(found, OaUser):
            return found
        user = found
        last = ""
        if user.last_interaction_ms is not None:
            last = datetime.fromtimestamp(user.last_interaction_ms / 1000, VN_TZ).strftime(
                "%d/%m/%Y"
            )
        detail: dict[str, Any] = {
            "user_id": user.user_id,
            "user_id_by_app": user.user_id_by_app,
            "user_external_id": "",
            "display_name": user.display_name,
            "user_alias": "",
            "is_sensitive": False,
            "user_last_interaction_date": last,
            "user_is_follower": user.is_follower,
            "avatar": user.avatar,
            "avatars": {"120": user.avatar, "240": user.avatar},
            "tags_and_notes_info": {"tag_names": [], "notes": []},
        }
        if user.phone:
            detail["shared_info"] = {
                "name": user.display_name,
                "phone": user.phone,
                "address": "",
                "city": "",
                "district": "",
            }
        return _ok(detail)

    async def _h_quota_message(self, ctx: _Ctx) -> Reply:
        """``POST /v3.0/oa/quota/message``: per-user ``last_interaction`` (ms string)."""
        if (err := self._check_token(ctx)) is not None:
            return err
        body = ctx.json_body()
        if not isinstance(body, dict):
            return _oa_err(-201, "body is invalid!")
        if "user_id" not in body:
            if "quota_owner" in body:
                return _ok([])
            return _oa_err(-201, "user_id is invalid!")
        found = self._user_from(body.get("user_id"))
        if not isinstance(found, OaUser):
            return found
        user = found
        last = user.last_interaction_ms
        open_window = last is not None and self.now_ms() - last <= CS_WINDOW_MS
        return _ok(
            {
                "user_id": user.user_id,
                "last_interaction": "" if last is None else str(last),
                "cs_reply": {"remain": "8" if open_window else "0", "total": "8"},
                "promotion": {"remain": "0", "total": "0"},
            }
        )

    async def _h_getoa(self, ctx: _Ctx) -> Reply:
        """``GET /v2.0/oa/getoa``: OA profile, usable as an adapter health check."""
        if (err := self._check_token(ctx)) is not None:
            return err
        return _ok(
            {
                "oa_id": self.oa_id,
                "oaid": self.oa_id,
                "name": self.oa_name,
                "description": "Local Zalo emulator",
                "is_verified": True,
                "oa_type": 2,
                "package_name": "Gói Nâng cao",
                "avatar": "https://s160-ava-talk.zadn.vn/emulator/oa.jpg",
                "cover": "",
                "num_follower": sum(1 for u in self.users.values() if u.is_follower),
            }
        )

    # ---------------------------------------------------------------- ZNS API

    def _zns_day(self, ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, VN_TZ).strftime("%Y-%m-%d")

    def zns_remaining_quota(self) -> int:
        """How many ZNS messages can still be sent today (Vietnam calendar day)."""
        used = self._zns_sent_per_day.get(self._zns_day(self.now_ms()), 0)
        return max(0, self.zns_daily_quota - used)

    async def _h_zns_send(self, ctx: _Ctx) -> Reply:
        """``POST /message/template``: send a ZNS template by phone, with strict checks."""
        if (err := self._check_token(ctx)) is not None:
            return err
        body = ctx.json_body()
        if not isinstance(body, dict):
            return _oa_err(-100, "Body is invalid")
        phone = self._zns_phone(body.get("phone"))
        if phone is None:  # zalo.md §4.4 / §8: -108 "phone invalid"
            return _oa_err(-108, "Phone number is invalid")
        template_id = body.get("template_id")
        template = self.zns_templates.get(template_id) if isinstance(template_id, str) else None
        if template is None:
            return _oa_err(-109, "Template ID is invalid")
        if template.status != "ENABLE":
            return _oa_err(-131, "Template has not been approved")
        data = body.get("template_data")
        if not isinstance(data, dict) or not data:
            return _oa_err(-111, "Template data is empty")
        for name in template.params:
            if name not in data or data[name] in (None, ""):
                return _oa_err(-1122, f"Template data is missing param: {name}")
        for name, value in data.items():
            if name not in template.params:
                return _oa_err(-112, f"Template data is undefined: {name}")
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                return _oa_err(-1124, f"Template data has invalid format: {name}")
            if len(str(value)) > template.param_max_length:
                return _oa_err(-1121, f"Template data is too long: {name}")
        tracking_id = body.get("tracking_id", "")
        if not isinstance(tracking_id, str) or len(tracking_id) > _MAX_TRACKING_ID:
            return _oa_err(-100, "tracking_id is invalid")
        mode = body.get("mode")
        if mode is not None and mode != "development":
            return _oa_err(-100, "mode is invalid")
        if mode == "development" and phone not in self.zns_admin_phones:
            return _oa_err(-127, "Development mode: recipient is not an admin of the app/OA")
        now = self.now_ms()
        if template.night_restricted:
            hour = datetime.fromtimestamp(now / 1000, VN_TZ).hour
            if hour >= 22 or hour < 6:
                return _oa_err(-133, "Template cannot be sent at night (22:00 - 06:00)")
        if self.zns_remaining_quota() <= 0:
            return _oa_err(-144, "OA has exceeded the daily limit of ZNS messages")
        if phone in self.unreachable_phones:
            code = self.unreachable_phones[phone]
            return _oa_err(code, "User cannot receive ZNS messages")
        day = self._zns_day(now)
        self._zns_sent_per_day[day] = self._zns_sent_per_day.get(day, 0) + 1
        msg = ZnsMessage(
            msg_id=self.new_id(),
            phone=phone,
            template_id=template.template_id,
            template_data=dict(data),
            tracking_id=tracking_id,
            mode=mode,
            sent_ms=now,
            phone_as_sent=str(body["phone"]),
        )
        self.zns_messages.append(msg)
        self._zns_by_id[msg.msg_id] = msg
        return _ok(
            {
                "msg_id": msg.msg_id,
                "sent_time": str(now),
                "quota": {
                    "dailyQuota": str(self.zns_daily_quota),
                    "remainingQuota": str(self.zns_remaining_quota()),
                },
            }
        )

    def _zns_phone(self, value: Any) -> str | None:
        """The recipient as ``84…`` (how Zalo reports it back, zalo.md §4.3), or None when the
        form is refused under the configured reading. ``+84…`` is refused in both: §4.1 says it
        "is also documented" without naming where (not documented for us: our reading, strict,
        so a client that starts sending it is caught; ours always sends ``84…``)."""
        if not isinstance(value, str):
            return None
        if _PHONE_RE.fullmatch(value):
            return value
        if self.zns_phone_forms == "error_page":  # zalo.md §4.1, the S6 error page
            if match := _PHONE_TRUNK_RE.fullmatch(value):
                return "84" + match.group(1)
            if _PHONE_BARE_RE.fullmatch(value):
                return "84" + value
        return None

    async def _h_zns_status(self, ctx: _Ctx) -> Reply:
        """``GET /message/status?message_id=``: status 1 delivered, 0 sent."""
        if (err := self._check_token(ctx)) is not None:
            return err
        msg = self._zns_by_id.get(ctx.query.get("message_id", ""))
        if msg is None:
            return _oa_err(-100, "message_id is invalid")
        delivered = msg.delivered_ms is not None
        return _ok(
            {
                "delivery_time": str(msg.delivered_ms) if delivered else "",
                "status": 1 if delivered else 0,
                "message": "The message has been delivered"
                if delivered
                else "The message has been sent",
            }
        )

    async def _h_zns_quota(self, ctx: _Ctx) -> Reply:
        """``GET /message/quota``: same key names as the send response."""
        if (err := self._check_token(ctx)) is not None:
            return err
        return _ok(
            {
                "dailyQuota": str(self.zns_daily_quota),
                "remainingQuota": str(self.zns_remaining_quota()),
            }
        )

    async def _h_template_info(self, ctx: _Ctx) -> Reply:
        """``GET /template/info/v2?template_id=``: ``status`` and ``listParams[].name``."""
        if (err := self._check_token(ctx)) is not None:
            return err
        template = self.zns_templates.get(ctx.query.get("template_id", ""))
        if template is None:
            return _oa_err(-109, "Template ID is invalid")
        return _ok(
            {
                "templateId": template.template_id,
                "templateName": template.name,
                "status": template.status,
                "listParams": [
                    {
                        "name": name,
                        "require": True,
                        "type": "STRING",
                        "maxLength": template.param_max_length,
                        "minLength": 1,
                        "acceptNull": False,
                    }
                    for name in template.params
                ],
                "listButtons": [],
                "timeout": 7_200_000,
                "previewUrl": f"https://account.zalo.cloud/znspreview/{template.template_id}",
                "templateQuality": "HIGH",
                "templateTag": "CUSTOMER_CARE",
                "price": "440",
            }
        )

    async def _h_rating_get(self, ctx: _Ctx) -> Reply:
        """``GET|POST /rating/get``: ratings of one template submitted in [from_time, to_time]."""
        if (err := self._check_token(ctx)) is not None:
            return err
        params: dict[str, Any] = dict(ctx.query)
        if ctx.request.method == "POST":
            body = ctx.json_body()
            if not isinstance(body, dict):
                return _oa_err(-100, "Body is invalid")
            params.update(body)
        template = self.zns_templates.get(str(params.get("template_id", "")))
        if template is None:
            return _oa_err(-109, "Template ID is invalid")
        try:
            from_time = int(params["from_time"])
            to_time = int(params["to_time"])
            offset = int(params.get("offset", 0))
            limit = min(int(params.get("limit", 100)), 10_000)
        except (KeyError, TypeError, ValueError):
            return _oa_err(-100, "from_time, to_time, offset and limit must be integers")
        if offset < 0 or limit < 1 or from_time > to_time:
            return _oa_err(-100, "Invalid time range or paging")
        matching = [
            r
            for r in self.zns_ratings
            if r.template_id == template.template_id and from_time <= r.submit_ms <= to_time
        ]
        if self.rating_get_order == "newest_first":  # not documented: our reading
            matching.reverse()
        page = matching[offset : offset + limit]
        return _ok(
            {
                "total": len(matching),
                "data": [
                    {
                        "msgId": r.msg_id,
                        "trackingId": r.tracking_id,
                        "oaId": self.oa_id,
                        "rate": r.rate,
                        "note": r.note,
                        "feedbacks": list(r.feedbacks),
                        "submitDate": str(r.submit_ms),
                    }
                    for r in page
                ],
            }
        )

    # ---------------------------------------------------------------- Bot API

    def _bot_body(self, ctx: _Ctx) -> dict[str, Any] | None:
        if not ctx.raw:
            return {}
        body = ctx.json_body()
        return body if isinstance(body, dict) else None

    async def _hb_getMe(self, ctx: _Ctx) -> Reply:
        """Bot identity; the id is the numeric part of the token."""
        return _bot_ok(
            {
                "id": self.bot_token.split(":", 1)[0],
                "account_name": "bot.emulator",
                "account_type": "BASIC",
                "can_join_groups": False,
            }
        )

    async def _hb_getUpdates(self, ctx: _Ctx) -> Reply:
        """Long poll returning ONE update (not an array), or error 408 when nothing arrived."""
        body = self._bot_body(ctx)
        if body is None:
            return _bot_err(400, "Bad Request: body must be JSON")
        if self.bot_webhook_url:
            return _bot_err(409, "Conflict: can't use getUpdates while webhook is active")
        try:
            timeout = float(body.get("timeout", "30"))
        except (TypeError, ValueError):
            return _bot_err(400, "Bad Request: timeout is invalid")
        try:
            update = await asyncio.wait_for(
                self._bot_updates.get(), max(0.0, timeout) * self.bot_poll_time_scale
            )
        except TimeoutError:
            return _bot_err(408, "Request timeout")
        return _bot_ok(update)

    async def _hb_setWebhook(self, ctx: _Ctx) -> Reply:
        """Switch to webhook mode; ``secret_token`` 8-256 chars is echoed in every delivery."""
        body = self._bot_body(ctx)
        if body is None:
            return _bot_err(400, "Bad Request: body must be JSON")
        url = body.get("url")
        secret = body.get("secret_token")
        if not isinstance(url, str) or not _webhook_url_ok(url, self.allow_http_webhooks):
            return _bot_err(400, "Bad Request: url is invalid")
        if not isinstance(secret, str) or not 8 <= len(secret) <= 256:
            return _bot_err(400, "Bad Request: secret_token must be 8-256 characters")
        self.bot_webhook_url, self.bot_webhook_secret = url, secret
        self._bot_webhook_updated_ms = self.now_ms()
        # Updates waiting for a poller now go to the webhook instead.
        while not self._bot_updates.empty():
            self._emit_bot(self._bot_updates.get_nowait())
        return _bot_ok({"url": url, "updated_at": self._bot_webhook_updated_ms})

    async def _hb_deleteWebhook(self, ctx: _Ctx) -> Reply:
        """Back to polling mode."""
        self.bot_webhook_url, self.bot_webhook_secret = None, None
        self._bot_webhook_updated_ms = self.now_ms()
        return _bot_ok({"url": "", "updated_at": self._bot_webhook_updated_ms})

    async def _hb_getWebhookInfo(self, ctx: _Ctx) -> Reply:
        """Current webhook URL ("" when polling)."""
        return _bot_ok(
            {"url": self.bot_webhook_url or "", "updated_at": self._bot_webhook_updated_ms}
        )

    def _bot_chat(self, body: dict[str, Any]) -> str | Reply:
        chat_id = body.get("chat_id")
        if not isinstance(chat_id, str) or not chat_id:
            return _bot_err(400, "Bad Request: chat_id is invalid")
        if chat_id not in self.bot_chats:
            return _bot_err(400, "Bad Request: chat not found")
        return chat_id

    async def _hb_sendMessage(self, ctx: _Ctx) -> Reply:
        """Text 1-2000 chars to a chat the bot has already seen."""
        body = self._bot_body(ctx)
        if body is None:
            return _bot_err(400, "Bad Request: body must be JSON")
        chat = self._bot_chat(body)
        if not isinstance(chat, str):
            return chat
        text = body.get("text")
        if not isinstance(text, str) or not 1 <= len(unicodedata.normalize("NFC", text)) <= 2000:
            return _bot_err(400, "Bad Request: text must be 1-2000 characters")
        parse_mode = body.get("parse_mode")
        if parse_mode is not None and parse_mode not in ("markdown", "html"):
            return _bot_err(400, "Bad Request: parse_mode is invalid")
        msg = BotMessage(self.new_id(), chat, text, self.now_ms(), parse_mode)
        self.bot_sent.append(msg)
        return _bot_ok({"message_id": msg.message_id, "date": msg.date_ms})

    async def _hb_sendChatAction(self, ctx: _Ctx) -> Reply:
        """Only ``typing`` is documented; the documented answer has no ``result``."""
        body = self._bot_body(ctx)
        if body is None:
            return _bot_err(400, "Bad Request: body must be JSON")
        chat = self._bot_chat(body)
        if not isinstance(chat, str):
            return chat
        if body.get("action") != "typing":
            return _bot_err(400, "Bad Request: action is invalid")
        return 200, {"ok": True}

    # ---------------------------------------------------------------- webhook delivery

    def set_oa_webhook(self, url: str | None) -> None:
        """Set (or clear) the app's OA/ZNS webhook URL, as done in the developer console."""
        self.oa_webhook_url = url

    def drop_next_webhook(
        self, count: int = 1, target: str = "oa", event_name: str | None = None
    ) -> None:
        """Silently lose the next ``count`` events for ``target`` ("oa" or "bot").

        With ``event_name`` only events of that name are lost (e.g. ``"user_feedback"``, whose
        loss the adapter must recover from by polling ``rating/get``).
        """
        if target not in ("oa", "bot"):
            raise ValueError("target must be 'oa' or 'bot'")
        self._drop_rules.append([target, event_name, count])

    def _serialise(self, event: dict[str, Any]) -> bytes:
        return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()

    def _emit_oa(self, event: dict[str, Any], zns: bool = False) -> WebhookRecord:
        body = self._serialise(event)
        headers = {
            "Content-Type": "application/json",
            "X-ZEvent-Signature": sign_event(self.app_id, body, event["timestamp"], self.oa_secret),
        }
        if zns:
            headers["X-ZEvent-Server"] = "ZNS"
        record = WebhookRecord("oa", self.oa_webhook_url, event, body, headers)
        return self._enqueue(record)

    def _emit_bot(self, update: dict[str, Any]) -> WebhookRecord:
        # zalo.md §5 Webhook: the docs sample wraps the update as {"ok":true,"result":…}, OpenClaw
        # (S8) says it arrives bare [L on which]: ``bot_webhook_wrapped`` picks the reading.
        payload = {"ok": True, "result": update} if self.bot_webhook_wrapped else update
        body = self._serialise(payload)
        headers = {
            "Content-Type": "application/json",
            "X-Bot-Api-Secret-Token": self.bot_webhook_secret or "",
        }
        record = WebhookRecord("bot", self.bot_webhook_url, update, body, headers)
        return self._enqueue(record)

    def _enqueue(self, record: WebhookRecord) -> WebhookRecord:
        self.webhooks.append(record)
        for rule in self._drop_rules:
            target, name, _ = rule
            if target == record.target and name in (None, record.event_name):
                rule[2] -= 1
                if rule[2] <= 0:
                    self._drop_rules.remove(rule)
                record.dropped = True
                return record
        if record.url is None:
            record.gave_up = True
            return record
        self._in_flight += 1
        self._busy_changed()
        self._queues[record.target].put_nowait(record)
        return record

    async def _worker(self, target: str) -> None:
        """Deliver events of one target in order: first attempts and redeliveries that fell due."""
        queue = self._queues[target]
        while True:
            record = await queue.get()
            try:
                await self._deliver(record)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # pragma: no cover - never kill the worker
                record.statuses.append(f"emulator error: {exc!r}")
                record.gave_up = True
            finally:
                self._in_flight -= 1
                self._busy_changed()
                queue.task_done()

    async def _deliver(self, record: WebhookRecord) -> None:
        """One delivery attempt; a retried failure is scheduled on the ladder's next rung.

        A redelivery carries the same body, so the same original ``timestamp`` and signature,
        plus a ``num_retry`` header (zalo.md §2.1 [M]: S4, S5, S10).
        """
        assert self._session is not None and record.url is not None
        timeout = aiohttp.ClientTimeout(total=self.webhook_timeout)
        attempt = record.attempts
        headers = dict(record.headers)
        if attempt > 0:
            headers["num_retry"] = str(attempt)
        record.attempts += 1
        record.due_ms = None
        retry = True
        try:
            async with self._session.post(
                record.url, data=record.body, headers=headers, timeout=timeout
            ) as resp:
                answer = await resp.read()
                record.statuses.append(resp.status)
                try:
                    record.replies.append(json.loads(answer))
                except ValueError:
                    record.replies.append(answer.decode("utf-8", "replace"))
                if resp.status == 200:
                    record.delivered = True
                    return
                retry = self.retry_on == "non_200"
        except TimeoutError:  # no answer within 2 s: retried in both readings (zalo.md §2.1 [H])
            record.statuses.append("timeout")
        except aiohttp.ClientError as exc:  # refused or dropped connection: "cannot connect"
            record.statuses.append(type(exc).__name__)
        if retry and attempt < len(self.retry_ladder):
            record.due_ms = self.now_ms() + int(self.retry_ladder[attempt] * 1000)
            self._scheduled.append(record)
            self._wake.set()
        else:
            record.gave_up = True

    def _promote_due(self) -> None:
        """Queue the scheduled redeliveries whose due time the virtual clock has reached."""
        now = self.now_ms()
        due = sorted((r for r in self._scheduled if (r.due_ms or 0) <= now), key=_due_key)
        for record in due:
            self._scheduled.remove(record)
            self._in_flight += 1
            self._queues[record.target].put_nowait(record)
        if due:
            self._busy_changed()
        self._wake.set()

    async def _redelivery_timer(self) -> None:
        """Promote due redeliveries; with a running clock also when real time reaches them
        (a frozen clock moves only through :meth:`advance` / :meth:`set_time_ms`)."""
        while True:
            self._wake.clear()
            timeout: float | None = None
            if self._clock_runs and self._scheduled:
                nearest = min(_due_key(r) for r in self._scheduled)
                timeout = max(0.0, (nearest - self.now_ms()) / 1000)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            if self._clock_runs:
                self._promote_due()
                self._wake.clear()

    @property
    def pending_redeliveries(self) -> list[WebhookRecord]:
        """Failed events waiting for their next rung of the ladder, soonest first."""
        return sorted(self._scheduled, key=_due_key)

    async def run_ladder(self) -> None:
        """Advance the virtual clock rung by rung until no redelivery is pending: every event
        is then delivered or given up (a test of "Zalo retried, then stopped")."""
        while True:
            await self.wait_idle()
            pending = self.pending_redeliveries
            if not pending:
                return
            self.set_time_ms(max(self.now_ms(), _due_key(pending[0])))

    async def redeliver(self, record: WebhookRecord) -> None:
        """Send ``record`` once more now, as a redelivery (a duplicate inside the window)."""
        if record.url is None:
            raise ValueError("this event has no webhook URL")
        self._in_flight += 1
        self._busy_changed()
        self._queues[record.target].put_nowait(record)

    def _busy_changed(self) -> None:
        """Keep the idle event in sync with in-flight webhooks and running API requests."""
        if self._in_flight or self._active_requests:
            self._idle.clear()
        else:
            self._idle.set()

    async def wait_idle(self, settle: float = 0.05, max_wait: float = 10.0) -> None:
        """Wait until no webhook is pending and no API request is running, twice in a row.

        Delivering one event often makes the adapter call the API, which may emit an echo
        event; so this loops until a ``settle`` pause shows no new activity.
        """
        async with asyncio.timeout(max_wait):
            while True:
                await self._idle.wait()
                marker = (len(self.calls), len(self.webhooks))
                await asyncio.sleep(settle)
                if (
                    marker == (len(self.calls), len(self.webhooks))
                    and not self._in_flight
                    and not self._active_requests
                ):
                    return

    # ---------------------------------------------------------------- simulated citizens (OA)

    def add_user(
        self,
        user_id: str | None = None,
        *,
        display_name: str | None = None,
        phone: str | None = None,
        follower: bool = False,
        last_interaction_ms: int | None = None,
    ) -> OaUser:
        """Register a user silently (no webhook), e.g. one who interacted long ago."""
        if user_id is None:
            user_id = self.new_id()
        user = self.users.get(user_id)
        if user is None:
            user = OaUser(
                user_id=user_id,
                user_id_by_app=self.new_id(),
                display_name=display_name or f"Công dân {user_id[-4:]}",
                phone=phone,
            )
            self.users[user_id] = user
        if display_name:
            user.display_name = display_name
        if phone:
            user.phone = phone
        user.is_follower = user.is_follower or follower
        if last_interaction_ms is not None:
            user.last_interaction_ms = last_interaction_ms
        return user

    def _touch(self, user: OaUser) -> int:
        now = self.now_ms()
        user.last_interaction_ms = now
        return now

    async def follow(
        self,
        user_id: str | None = None,
        *,
        display_name: str | None = None,
        phone: str | None = None,
        source: str = "oa_profile",
    ) -> str:
        """The citizen follows the OA (opens the 7-day window); returns the user id."""
        user = self.add_user(user_id, display_name=display_name, phone=phone)
        user.is_follower = True
        now = self._touch(user)
        self._emit_oa(
            {
                "app_id": self.app_id,
                "oa_id": self.oa_id,
                "follower": {"id": user.user_id},
                "user_id_by_app": user.user_id_by_app,
                "event_name": "follow",
                "source": source,
                "timestamp": str(now),
            }
        )
        return user.user_id

    async def unfollow(self, user_id: str) -> None:
        """The citizen unfollows; not an interaction, so the window is unchanged."""
        user = self._require_user(user_id)
        user.is_follower = False
        self._emit_oa(
            {
                "app_id": self.app_id,
                "oa_id": self.oa_id,
                "follower": {"id": user.user_id},
                "user_id_by_app": user.user_id_by_app,
                "event_name": "unfollow",
                "source": "oa_profile",
                "timestamp": str(self.now_ms()),
            }
        )

    async def user_send_text(self, user_id: str, text: str) -> str:
        """The citizen types ``text`` (auto-registers an unknown user); returns its msg_id."""
        user = self.add_user(user_id)
        now = self._touch(user)
        msg_id = self.new_id()
        self._emit_oa(
            {
                "app_id": self.app_id,
                "user_id_by_app": user.user_id_by_app,
                "event_name": "user_send_text",
                "timestamp": str(now),
                "sender": {"id": user.user_id},
                "recipient": {"id": self.oa_id},
                "message": {"msg_id": msg_id, "text": text},
            }
        )
        return msg_id

    async def tap_query_button(
        self, user_id: str, msg_id: str, payload: str, *, force: bool = False
    ) -> str:
        """Tap an ``oa.query.*`` button: Zalo sends a plain ``user_send_text`` with the payload.

        Raises ``ValueError`` when that message has no such button for that user, because a
        test doing that is wrong; ``force=True`` simulates the user typing the payload instead.
        """
        if not force:
            msg = self.oa_messages.get(msg_id)
            if msg is None or msg.user_id != user_id:
                raise ValueError(f"no OA message {msg_id} was sent to user {user_id}")
            if payload not in msg.button_payloads(query_only=True):
                raise ValueError(f"message {msg_id} has no oa.query button with {payload!r}")
        return await self.user_send_text(user_id, payload)

    async def user_receive_message(self, msg_id: str) -> None:
        """Delivery receipt of an OA message (``user_received_message``, single ``msg_id``)."""
        msg = self.oa_messages[msg_id]
        msg.delivered = True
        user = self.users[msg.user_id]
        now = str(self.now_ms())
        self._emit_oa(
            {
                "app_id": self.app_id,
                "user_id_by_app": user.user_id_by_app,
                "event_name": "user_received_message",
                "timestamp": now,
                "sender": {"id": user.user_id},
                "recipient": {"id": self.oa_id},
                "message": {"msg_id": msg_id, "delivery_time": now},
            }
        )

    async def user_seen_messages(self, user_id: str, msg_ids: Sequence[str] | None = None) -> None:
        """Seen receipt (``user_seen_message``, an array ``msg_ids``); defaults to all unseen."""
        user = self._require_user(user_id)
        if msg_ids is None:
            msg_ids = [m.msg_id for m in self.oa_messages.values() if m.user_id == user_id]
        for mid in msg_ids:
            self.oa_messages[mid].seen = True
        self._emit_oa(
            {
                "app_id": self.app_id,
                "user_id_by_app": user.user_id_by_app,
                "event_name": "user_seen_message",
                "timestamp": str(self.now_ms()),
                "sender": {"id": user.user_id},
                "recipient": {"id": self.oa_id},
                "message": {"msg_ids": list(msg_ids)},
            }
        )

    def _require_user(self, user_id: str) -> OaUser:
        user = self.users.get(user_id)
        if user is None:
            raise KeyError(f"unknown OA user {user_id}")
        return user

    # ---------------------------------------------------------------- simulated citizens (ZNS)

    def zns_message(self, msg_id: str) -> ZnsMessage:
        """Look up a sent ZNS message by its ``msg_id``."""
        return self._zns_by_id[msg_id]

    def set_phone_unreachable(self, phone: str, code: int = -114) -> None:
        """Make ZNS sends to ``phone`` fail (-114 cannot receive, -118 no Zalo account ...)."""
        self.unreachable_phones[phone] = code

    async def zns_deliver(self, msg_id: str) -> None:
        """The phone receives the ZNS message: ZNS-shaped ``user_received_message``."""
        msg = self._zns_by_id[msg_id]
        now = self.now_ms()
        msg.delivered_ms = now
        self._emit_oa(
            {
                "event_name": "user_received_message",
                "app_id": self.app_id,
                "timestamp": str(now),
                "sender": {"id": self.oa_id},
                "recipient": {"id": msg.phone},
                "message": {
                    "msg_id": msg.msg_id,
                    "tracking_id": msg.tracking_id,
                    "delivery_time": str(now),
                },
            },
            zns=True,
        )

    async def zns_rate(
        self,
        msg_id: str,
        stars: int,
        feedbacks: Sequence[str] = (),
        note: str = "",
        *,
        force: bool = False,
    ) -> ZnsRating:
        """The citizen rates a service-rating ZNS message.

        Delivers it first if needed, records the rating (so ``rating/get`` returns it even if
        the webhook is lost) and emits ``user_feedback``. Rating again (the citizen changes their
        stars) adds a second rating, a second ``user_feedback`` and a second ``rating/get`` row
        unless ``zns_rerating`` is off (not documented: our reading). Rating a non-rating
        template, rating twice without ``zns_rerating`` or out-of-range stars raise
        ``ValueError`` unless ``force``.
        """
        msg = self._zns_by_id[msg_id]
        template = self.zns_templates[msg.template_id]
        if not force:
            if template.template_type != SERVICE_RATING_TEMPLATE_TYPE:
                raise ValueError(f"template {template.template_id} is not a rating template")
            if msg.rating is not None and not self.zns_rerating:
                raise ValueError(f"message {msg_id} was already rated")
            if not 1 <= stars <= 5:
                raise ValueError("stars must be 1-5")
        if msg.delivered_ms is None:
            await self.zns_deliver(msg_id)
        now = self.now_ms()
        rating = ZnsRating(
            msg_id=msg.msg_id,
            tracking_id=msg.tracking_id,
            template_id=msg.template_id,
            rate=stars,
            feedbacks=list(feedbacks),
            note=note,
            submit_ms=now,
        )
        msg.rating = rating
        self.zns_ratings.append(rating)
        self._emit_oa(
            {
                "event_name": "user_feedback",
                "app_id": self.app_id,
                "oa_id": self.oa_id,
                "timestamp": str(now),
                "message": {
                    "msg_id": msg.msg_id,
                    "tracking_id": msg.tracking_id,
                    "rate": stars,
                    "note": note,
                    "feedbacks": list(feedbacks),
                    "submit_time": str(now),
                },
            },
            zns=True,
        )
        return rating

    # ---------------------------------------------------------------- simulated citizens (Bot)

    async def bot_user_send_text(
        self, chat_id: str | None, text: str, *, display_name: str = "Công dân"
    ) -> str:
        """A user messages the bot: webhook delivery if set, else queued for ``getUpdates``.

        Returns the chat id (a new one when ``chat_id`` is None); the chat becomes known, so
        the bot may now ``sendMessage`` to it.
        """
        if chat_id is None:
            chat_id = self.new_id()
        self.bot_chats.setdefault(chat_id, {"id": chat_id, "display_name": display_name})
        update = {
            "event_name": "message.text.received",
            "message": {
                "message_id": self.new_id(),
                "date": self.now_ms(),
                "text": text,
                "from": {"id": chat_id, "display_name": display_name, "is_bot": False},
                "chat": {"id": chat_id, "chat_type": "PRIVATE"},
            },
        }
        if self.bot_webhook_url:
            self._emit_bot(update)
        else:
            self._bot_updates.put_nowait(update)
        return chat_id

    # ---------------------------------------------------------------- recording helpers

    def calls_to(self, endpoint: str) -> list[ApiCall]:
        """Calls whose endpoint equals or ends with ``endpoint``."""
        return [c for c in self.calls if c.endpoint == endpoint or c.endpoint.endswith(endpoint)]

    def transcript(self, user_id: str) -> list[OaMessage]:
        """OA messages successfully sent to ``user_id``, oldest first."""
        return [m for m in self.oa_messages.values() if m.user_id == user_id]

    def last_oa_message(self, user_id: str) -> OaMessage:
        """The latest OA message sent to ``user_id`` (IndexError if none)."""
        return self.transcript(user_id)[-1]

    def zns_sent_to(self, phone: str) -> list[ZnsMessage]:
        """ZNS messages accepted for ``phone``."""
        return [m for m in self.zns_messages if m.phone == phone]

    def bot_messages(self, chat_id: str) -> list[BotMessage]:
        """Messages the bot sent to ``chat_id``."""
        return [m for m in self.bot_sent if m.chat_id == chat_id]

    def webhooks_named(self, event_name: str) -> list[WebhookRecord]:
        """Webhook records (delivered, dropped or failed) with this ``event_name``."""
        return [w for w in self.webhooks if w.event_name == event_name]


def _due_key(record: WebhookRecord) -> int:
    return record.due_ms if record.due_ms is not None else 0


def _button_payload_str(button: dict[str, Any]) -> str:
    """Flatten a button payload for transcripts: query text, url, phone code or sms content."""
    value = button.get("payload")
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("url", "content", "phone_code"):
            if isinstance(value.get(key), str):
                return str(value[key])
    return json.dumps(value, ensure_ascii=False)


def _webhook_url_ok(url: str, allow_http: bool) -> bool:
    """HTTPS is required by Zalo; plain HTTP only when explicitly allowed for local runs."""
    parts = urlsplit(url)
    if not parts.netloc:
        return False
    return parts.scheme == "https" or (allow_http and parts.scheme == "http")


def vn_epoch_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """Epoch ms of a Vietnam local time, handy with :meth:`ZaloEmulator.set_time_ms`."""
    return int(datetime(year, month, day, hour, minute, tzinfo=VN_TZ).timestamp() * 1000)


def utc_now_ms() -> int:
    """Real wall-clock epoch ms (for comparing with the emulator's virtual clock)."""
    return int(datetime.now(UTC).timestamp() * 1000)
