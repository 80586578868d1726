"""Strict local emulator of the Telegram Bot API, for tests and ``surveybot demo``.

Why it exists: the real Bot API refuses things that python-telegram-bot happily builds
(65-byte ``callback_data``, edits to identical content, messages to users who never pressed
Start, bursts above the flood limits).  If our tests talk to a lenient fake, those bugs only
show up in production.  This emulator therefore mirrors the *failure* behaviour of Telegram as
closely as we know it (see ``/work/shared/reference/telegram.md``): real HTTP status codes,
real ``{"ok": false, "error_code", "description", "parameters"}`` bodies, real update shapes.

It is a single aiohttp server speaking ``/bot<token>/<method>``, so it is used with an
unmodified client::

    emulator = TelegramEmulator(token="123456789:TEST", local_mode=True)
    await emulator.start()
    bot = telegram.Bot(emulator.token, base_url=emulator.base_url)

Citizens are simulated from Python (``open_deep_link``, ``send_text``, ``tap_button``) and the
resulting updates are delivered either to a webhook (with secret header, retries with backoff
and per-chat head-of-line blocking like Telegram's own server) or through ``getUpdates``.

Only ``aiohttp`` (and the standard library) may be imported here: the module is shipped to the
``surveybot demo`` command as well as used by the test-suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import json
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from aiohttp import web
from yarl import URL

JSONDict = dict[str, Any]
FaultKind = Literal["429", "500", "502", "timeout", "timeout_before"]

# Exact wording of Telegram's error descriptions we reproduce.  Kept as constants so that the
# adapter's error handling and our tests can refer to one place.
ERR_UNAUTHORIZED = "Unauthorized"
ERR_NOT_FOUND = "Not Found"
ERR_CHAT_NOT_FOUND = "Bad Request: chat not found"
ERR_BLOCKED = "Forbidden: bot was blocked by the user"
ERR_CANT_INITIATE = "Forbidden: bot can't initiate conversation with a user"
ERR_TEXT_EMPTY = "Bad Request: message text is empty"
ERR_TEXT_TOO_LONG = "Bad Request: message is too long"
ERR_CAPTION_TOO_LONG = "Bad Request: message caption is too long"
ERR_BUTTON_DATA = "Bad Request: BUTTON_DATA_INVALID"
ERR_BUTTON_URL = "Bad Request: BUTTON_URL_INVALID"
ERR_BUTTON_TEXT = "Bad Request: BUTTON_TEXT_INVALID"
ERR_MARKUP_TOO_LONG = "Bad Request: reply markup is too long"
ERR_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
ERR_EDIT_NOT_FOUND = "Bad Request: message to edit not found"
ERR_CANT_EDIT = "Bad Request: message can't be edited"
ERR_DELETE_NOT_FOUND = "Bad Request: message to delete not found"
ERR_QUERY_INVALID = (
    "Bad Request: query is too old and response timeout expired or query ID is invalid"
)
ERR_WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
ERR_TERMINATED_BY_WEBHOOK = "Conflict: terminated by setWebhook request"
ERR_TERMINATED_BY_OTHER = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
ERR_SECRET_TOKEN = "Bad Request: secret token contains unallowed characters"  # noqa: S105 - an error text
ERR_SECRET_TOKEN_LENGTH = "Bad Request: secret token must be 1-256 characters long"  # noqa: S105 - an error text
ERR_NO_PHOTO = "Bad Request: there is no photo in the request"

#: Characters allowed in deep-link payloads and webhook secret tokens.
_SAFE_CHARS = re.compile(r"^[A-Za-z0-9_-]*$")
_PATH = re.compile(r"^/bot([^/]+)/([A-Za-z0-9_]+)/?$")
_HTML_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "code",
        "pre",
        "blockquote",
        "tg-emoji",
    }
)
_MDV2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!\\")
#: Update types Telegram sends when ``allowed_updates`` is not specified.
_DEFAULT_EXCLUDED_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
#: Methods that create or change visible messages and so count against flood limits.
DEFAULT_RATE_LIMITED_METHODS = frozenset(
    {"sendmessage", "sendphoto", "editmessagetext", "editmessagereplymarkup"}
)


#: The ports the public Bot API server delivers webhooks to (reference/telegram.md §1.1).
PUBLIC_WEBHOOK_PORTS = frozenset({443, 80, 88, 8443})


class TelegramApiError(Exception):
    """A Bot API error: turned into the HTTP status + JSON body Telegram would send.

    PTB maps errors by HTTP status (403 → Forbidden, 400 → BadRequest, 429 with
    ``parameters.retry_after`` → RetryAfter ...), so status and body must agree.
    """

    def __init__(self, status: int, description: str, parameters: JSONDict | None = None):
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def body(self) -> JSONDict:
        """The JSON body in Telegram's failure shape."""
        body: JSONDict = {"ok": False, "error_code": self.status, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def bad_request(description: str) -> TelegramApiError:
    """Shortcut for the very common 400 error."""
    return TelegramApiError(400, description)


# --------------------------------------------------------------------------------------------
# Records exposed for assertions
# --------------------------------------------------------------------------------------------


@dataclass
class MessageSnapshot:
    """One historical version of a message (kept so tests can assert on edit sequences)."""

    text: str | None
    reply_markup: JSONDict | None
    at: float


@dataclass
class ChatMessage:
    """A message as the citizen currently sees it in the private chat."""

    message_id: int
    chat_id: int
    from_bot: bool
    date: int
    text: str | None = None
    caption: str | None = None
    parse_mode: str | None = None
    raw_text: str | None = None
    reply_markup: JSONDict | None = None
    photo_bytes: bytes | None = None
    photo_ref: str | None = None
    edit_date: int | None = None
    deleted: bool = False
    history: list[MessageSnapshot] = field(default_factory=list)
    entities: list[JSONDict] | None = None

    @property
    def keyboard(self) -> list[list[tuple[str, str | None]]]:
        """Inline keyboard rows as ``(text, callback_data)``; url buttons have ``None`` data."""
        if not self.reply_markup or "inline_keyboard" not in self.reply_markup:
            return []
        return [
            [(str(b.get("text", "")), b.get("callback_data")) for b in row]
            for row in self.reply_markup["inline_keyboard"]
        ]

    @property
    def buttons(self) -> list[tuple[str, str | None]]:
        """All inline buttons flattened, in reading order."""
        return [button for row in self.keyboard for button in row]

    @property
    def body(self) -> str | None:
        """Text or caption, whichever the message has."""
        return self.text if self.text is not None else self.caption

    @property
    def edited(self) -> bool:
        """True once the bot edited the message at least once."""
        return len(self.history) > 1

    def button_data(self, label: str) -> str:
        """The callback_data of the button with this label (KeyError if absent)."""
        for text, data in self.buttons:
            if text == label and data is not None:
                return data
        raise KeyError(f"no callback button {label!r} on message {self.message_id}")


@dataclass
class Citizen:
    """A simulated Telegram user talking to the bot in a private chat."""

    user_id: int
    first_name: str
    username: str | None = None
    last_name: str | None = None
    language_code: str | None = "vi"
    started: bool = False
    blocked: bool = False

    def as_user(self) -> JSONDict:
        """The Telegram ``User`` object."""
        user: JSONDict = {"id": self.user_id, "is_bot": False, "first_name": self.first_name}
        if self.last_name:
            user["last_name"] = self.last_name
        if self.username:
            user["username"] = self.username
        if self.language_code:
            user["language_code"] = self.language_code
        return user

    def as_chat(self) -> JSONDict:
        """The private ``Chat`` object (chat id == user id)."""
        chat: JSONDict = {"id": self.user_id, "type": "private", "first_name": self.first_name}
        if self.last_name:
            chat["last_name"] = self.last_name
        if self.username:
            chat["username"] = self.username
        return chat


@dataclass
class ApiCall:
    """One request the bot made to the emulator, with the answer it got."""

    method: str
    params: JSONDict
    status: int
    response: JSONDict | str
    at: float
    fault: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the call succeeded (2xx)."""
        return 200 <= self.status < 300


@dataclass
class WebhookAttempt:
    """One POST of an update to the bot's webhook."""

    update_id: int
    chat_id: int | None
    url: str
    status: int | None
    error: str | None
    at: float

    @property
    def ok(self) -> bool:
        """Whether Telegram would consider the update delivered."""
        return self.status is not None and 200 <= self.status < 300


@dataclass
class CallbackQueryRecord:
    """A button tap and what the bot answered (the toast the citizen sees)."""

    id: str
    user_id: int
    message_id: int
    data: str
    created: float
    answered: bool = False
    answer_text: str | None = None
    show_alert: bool = False


@dataclass
class _Fault:
    method: str | None
    kind: FaultKind
    remaining: int
    retry_after: int


@dataclass
class _PendingUpdate:
    update_id: int
    chat_key: int | None
    payload: JSONDict
    attempts: int = 0


# --------------------------------------------------------------------------------------------
# Request parameter decoding
# --------------------------------------------------------------------------------------------


class _Params:
    """Parameters of one request, whichever encoding the client used.

    PTB sends ``application/x-www-form-urlencoded`` (or multipart when uploading) with every
    value as a string and nested objects JSON-encoded; other clients send a JSON body with
    native types.  The accessors accept both and raise Telegram-style 400s on nonsense.
    """

    def __init__(self, values: JSONDict, files: dict[str, tuple[str, bytes]]):
        self.values = values
        self.files = files

    def for_record(self) -> JSONDict:
        """Params as recorded: nested JSON decoded where possible, files summarised."""
        out: JSONDict = {}
        for key, value in self.values.items():
            if isinstance(value, str) and value[:1] in "{[":
                try:
                    out[key] = json.loads(value)
                    continue
                except ValueError:
                    pass
            out[key] = value
        for key, (name, data) in self.files.items():
            out[key] = f"<file {name!r}, {len(data)} bytes>"
        return out

    def has(self, name: str) -> bool:
        return name in self.values or name in self.files

    def get_str(self, name: str) -> str | None:
        value = self.values.get(name)
        if value is None:
            return None
        if isinstance(value, (dict, list)):
            raise bad_request(f'Bad Request: field "{name}" must be of type String')
        return value if isinstance(value, str) else json.dumps(value)

    def get_int(self, name: str) -> int | None:
        value = self.values.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            raise bad_request(f'Bad Request: field "{name}" must be of type Integer')
        if isinstance(value, int):
            return value
        try:
            return int(str(value))
        except ValueError:
            raise bad_request(f'Bad Request: field "{name}" must be of type Integer') from None

    def get_float(self, name: str) -> float | None:
        value = self.values.get(name)
        if value is None or value == "":
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad_request(f'Bad Request: field "{name}" must be of type Number') from None

    def get_bool(self, name: str) -> bool:
        value = self.values.get(name)
        if isinstance(value, bool):
            return value
        if value is None:
            return False
        return str(value).lower() in ("true", "1")

    def get_json(self, name: str) -> Any:
        value = self.values.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise bad_request(f"Bad Request: can't parse {name} JSON object") from None
        return value

    def chat_id(self) -> int:
        value = self.values.get("chat_id")
        if value is None or value == "":
            raise bad_request("Bad Request: chat_id is empty")
        try:
            return int(str(value))
        except ValueError:
            # "@channelusername" style ids: we only emulate private chats.
            raise bad_request(ERR_CHAT_NOT_FOUND) from None


# --------------------------------------------------------------------------------------------
# Text parsing (entities), so that limits apply to what the user sees
# --------------------------------------------------------------------------------------------


def _utf16_len(text: str) -> int:
    """Length in UTF-16 code units: how Telegram measures text (emoji count as 2)."""
    return len(text.encode("utf-16-le")) // 2


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


def _parse_html(text: str) -> str:
    """Strip Telegram-HTML markup, refusing what Telegram refuses (unknown or unclosed tags)."""
    out: list[str] = []
    stack: list[str] = []
    pos = 0
    tag_re = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[^<>]*)?)\s*/?>")
    while True:
        lt = text.find("<", pos)
        chunk = text[pos:] if lt < 0 else text[pos:lt]
        out.append(html.unescape(chunk))
        if lt < 0:
            break
        match = tag_re.match(text, lt)
        offset = _byte_offset(text, lt)
        if match is None:
            raise bad_request(
                f"Bad Request: can't parse entities: Unsupported start tag at byte offset {offset}"
            )
        closing, name = match.group(1) == "/", match.group(2).lower()
        if name not in _HTML_TAGS:
            raise bad_request(
                f'Bad Request: can\'t parse entities: Unsupported start tag "{name}" '
                f"at byte offset {offset}"
            )
        if closing:
            if not stack or stack[-1] != name:
                expected = f'expected "</{stack[-1]}>", ' if stack else ""
                raise bad_request(
                    f"Bad Request: can't parse entities: Unmatched end tag at byte offset "
                    f'{offset}, {expected}found "</{name}>"'
                )
            stack.pop()
        else:
            stack.append(name)
        pos = match.end()
    if stack:
        raise bad_request(
            "Bad Request: can't parse entities: Can't find end tag corresponding to start tag "
            f'"{stack[-1]}"'
        )
    return "".join(out)


def _parse_markdown_v2(text: str) -> str:
    """Strip MarkdownV2 markup; unescaped reserved characters are an error, as in Telegram."""
    out: list[str] = []
    open_marks: list[tuple[str, int]] = []
    i = 0
    at_line_start = True
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 < len(text):
                out.append(text[i + 1])
                i += 2
                at_line_start = False
                continue
            out.append(ch)
            i += 1
            continue
        if ch == "`":
            fence = "```" if text.startswith("```", i) else "`"
            end = text.find(fence, i + len(fence))
            if end < 0:
                raise bad_request(
                    "Bad Request: can't parse entities: Can't find end of Code entity at byte "
                    f"offset {_byte_offset(text, i)}"
                )
            out.append(text[i + len(fence) : end].replace("\\`", "`").replace("\\\\", "\\"))
            i = end + len(fence)
            continue
        if ch in "*_~|":
            mark = ch
            if text.startswith("__", i) or text.startswith("||", i):
                mark = ch * 2
            elif ch == "|":
                raise bad_request(
                    "Bad Request: can't parse entities: Character '|' is reserved and must be "
                    "escaped with the preceding '\\'"
                )
            if open_marks and open_marks[-1][0] == mark:
                open_marks.pop()
            else:
                open_marks.append((mark, i))
            i += len(mark)
            continue
        if ch == "[":
            close = text.find("](", i)
            end = text.find(")", close) if close >= 0 else -1
            if close < 0 or end < 0:
                raise bad_request(
                    "Bad Request: can't parse entities: Character '[' is reserved and must be "
                    "escaped with the preceding '\\'"
                )
            out.append(_parse_markdown_v2(text[i + 1 : close]))
            i = end + 1
            continue
        if ch == ">" and at_line_start:
            i += 1
            continue
        if ch in _MDV2_RESERVED:
            raise bad_request(
                f"Bad Request: can't parse entities: Character '{ch}' is reserved and must be "
                "escaped with the preceding '\\'"
            )
        out.append(ch)
        at_line_start = ch == "\n"
        i += 1
    if open_marks:
        mark, start = open_marks[-1]
        raise bad_request(
            "Bad Request: can't parse entities: Can't find end of the entity starting at byte "
            f"offset {_byte_offset(text, start)}"
        )
    return "".join(out)


def _parse_markdown_legacy(text: str) -> str:
    """Strip legacy Markdown (``*bold* _italic_ `code` [text](url)``)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in "*_`":
            end = text.find(ch, i + 1)
            if end < 0:
                raise bad_request(
                    "Bad Request: can't parse entities: Can't find end of the entity starting at "
                    f"byte offset {_byte_offset(text, i)}"
                )
            out.append(text[i + 1 : end])
            i = end + 1
        elif ch == "[" and (close := text.find("](", i)) >= 0 and text.find(")", close) >= 0:
            out.append(text[i + 1 : close])
            i = text.find(")", close) + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def render_text(text: str, parse_mode: str | None) -> str:
    """The plain text the citizen sees after Telegram parses ``parse_mode`` entities.

    Leading/trailing whitespace is trimmed as Telegram does, which is why a whitespace-only
    message counts as empty.
    """
    mode = (parse_mode or "").lower()
    if mode == "html":
        plain = _parse_html(text)
    elif mode == "markdownv2":
        plain = _parse_markdown_v2(text)
    elif mode == "markdown":
        plain = _parse_markdown_legacy(text)
    elif mode:
        raise bad_request(f"Bad Request: unsupported parse_mode {parse_mode!r}")
    else:
        plain = text
    return plain.strip()


# --------------------------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------------------------

_Handler = Callable[[_Params], Awaitable[Any]]


class TelegramEmulator:
    """A strict, in-process Telegram Bot API server for one bot.

    All knobs are constructor arguments so that tests can make the emulator harsher (e.g.
    ``per_chat_limit=1, per_chat_window=1.0``) or faster (short ``webhook_backoff``) than
    the real service, while the defaults approximate api.telegram.org.
    """

    def __init__(
        self,
        token: str = "123456789:TEST-emulator-token",  # noqa: S107 - fake token
        *,
        bot_username: str = "SurveyTestBot",
        bot_first_name: str = "Survey Test Bot",
        per_chat_limit: int | None = 3,
        per_chat_window: float = 3.0,
        global_limit: int | None = 30,
        global_window: float = 1.0,
        rate_limited_methods: Iterable[str] = DEFAULT_RATE_LIMITED_METHODS,
        timeout_delay: float = 6.0,
        webhook_backoff: Sequence[float] = (0.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0),
        webhook_max_attempts: int | None = None,
        webhook_timeout: float = 60.0,
        callback_answer_window: float = 10.0,
        local_mode: bool = False,
        max_buttons_per_row: int = 8,
        max_buttons: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Configure the bot identity, limits and timings.

        Args:
            token: the only accepted bot token; any other gets 401 Unauthorized.
            per_chat_limit / per_chat_window: at most ``per_chat_limit`` rate-limited calls per
                chat in any sliding ``per_chat_window`` seconds (default 3 in 3 s ≈ 1 msg/s with
                a small burst allowance, like Telegram's "short bursts").  ``None`` disables.
            global_limit / global_window: same for the whole bot (default 30/s).
            rate_limited_methods: method names (case-insensitive) counted by the limits.
            timeout_delay: how long "timeout" faults keep the client waiting; must exceed the
                client's read timeout (PTB default 5 s).
            webhook_backoff: delay before the n-th redelivery of a failed update (the last value
                repeats).  Telegram retries at once, then 2, 4, 8 ... s.
            webhook_max_attempts: drop an update after this many failed POSTs (None = never).
            webhook_timeout: seconds to wait for the webhook's answer (Telegram: 60).
            callback_answer_window: seconds during which answerCallbackQuery is accepted. Not
                documented; reports say 10-15 s (../shared/reference/telegram.md §1.4), so the
                default is the short end: a client that answers later fails here first.
            local_mode: behave as a local Bot API server (``telegram-bot-api --local``), which
                accepts a plain-HTTP webhook on any port. Off, ``setWebhook`` holds the public
                server's rule: HTTPS on port 443, 80, 88 or 8443 (reference §1.1, TBAS
                ``WebhookActor``), so a URL production would refuse is refused here too.
            clock: monotonic time source for limits and windows (injectable for tests).
        """
        self.token = token
        self.bot_id = int(token.split(":", 1)[0]) if token.split(":", 1)[0].isdigit() else 1
        self.bot_username = bot_username
        self.bot_first_name = bot_first_name
        self.per_chat_limit = per_chat_limit
        self.per_chat_window = per_chat_window
        self.global_limit = global_limit
        self.global_window = global_window
        self.rate_limited_methods = frozenset(m.lower() for m in rate_limited_methods)
        self.timeout_delay = timeout_delay
        self.webhook_backoff = tuple(webhook_backoff) or (0.0,)
        self.webhook_max_attempts = webhook_max_attempts
        self.webhook_timeout = webhook_timeout
        self.callback_answer_window = callback_answer_window
        self.local_mode = local_mode
        self.max_buttons_per_row = max_buttons_per_row
        self.max_buttons = max_buttons
        self.clock = clock

        # Public records for assertions.
        self.calls: list[ApiCall] = []
        self.webhook_attempts: list[WebhookAttempt] = []
        self.dropped_updates: list[JSONDict] = []
        self.sent_updates: list[JSONDict] = []
        self.callback_queries: dict[str, CallbackQueryRecord] = {}
        self.citizens: dict[int, Citizen] = {}

        # Internal state.
        self._messages: dict[int, list[ChatMessage]] = {}
        self._next_message_id: dict[int, int] = {}
        self._update_ids = itertools.count(secrets.randbelow(10**6) + 10**8)
        self._user_ids = itertools.count(7_100_000_001)
        self._pending: list[_PendingUpdate] = []
        self._faults: list[_Fault] = []
        self._chat_sends: dict[int, deque[float]] = {}
        self._global_sends: deque[float] = deque()
        self._webhook_url: str | None = None
        self._webhook_secret: str | None = None
        self._webhook_max_connections = 40
        self._allowed_updates: list[str] | None = None
        self._last_error_date: int | None = None
        self._last_error_message: str | None = None
        self._workers: dict[int | None, asyncio.Task[None]] = {}
        self._delivery_slots: asyncio.Semaphore | None = None
        self._poll_waiter: asyncio.Future[str] | None = None
        self._closing = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._host = "127.0.0.1"
        self._methods: dict[str, _Handler] = {
            "getme": self._get_me,
            "sendmessage": self._send_message,
            "sendphoto": self._send_photo,
            "editmessagetext": self._edit_message_text,
            "editmessagereplymarkup": self._edit_message_reply_markup,
            "deletemessage": self._delete_message,
            "sendchataction": self._send_chat_action,
            "answercallbackquery": self._answer_callback_query,
            "setwebhook": self._set_webhook,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._get_webhook_info,
            "getupdates": self._get_updates,
        }

    # ---------------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (0 = any free port) and open the webhook client session."""
        self._closing = asyncio.Event()
        app = web.Application(client_max_size=60 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self._host = host
        self._port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession()
        self._delivery_slots = asyncio.Semaphore(self._webhook_max_connections)
        if self._webhook_url:
            self._start_all_workers()

    async def stop(self) -> None:
        """Stop delivering, abort sleeping handlers and long polls, close the server."""
        self._closing.set()
        self._wake_poller("closing")
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        for task in workers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._workers.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> TelegramEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The TCP port the server listens on (after ``start``)."""
        if self._port is None:
            raise RuntimeError("emulator not started")
        return self._port

    @property
    def base_url(self) -> str:
        """Value for PTB's ``Bot(token, base_url=...)``: PTB appends ``<token>/<method>``."""
        return f"http://{self._host}:{self.port}/bot"

    @property
    def api_url(self) -> str:
        """Full API prefix including the token, for clients that want ``{api_url}/{method}``."""
        return f"{self.base_url}{self.token}"

    @property
    def bot_user(self) -> JSONDict:
        """The bot's ``User`` object, as in getMe and ``message.from``."""
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.bot_first_name,
            "username": self.bot_username,
        }

    @property
    def webhook_url(self) -> str | None:
        """The currently set webhook URL, if any."""
        return self._webhook_url

    @property
    def pending_update_count(self) -> int:
        """Updates not yet delivered (webhook) or not yet confirmed (getUpdates)."""
        return len(self._pending)

    @property
    def long_polling(self) -> bool:
        """A ``getUpdates`` call is waiting for updates now (tests wait for this, not a while)."""
        return self._poll_waiter is not None and not self._poll_waiter.done()

    # ---------------------------------------------------------------- fault injection & control

    def inject(
        self,
        method: str | None,
        kind: FaultKind,
        count: int = 1,
        retry_after: int = 1,
    ) -> None:
        """Make the next ``count`` calls of ``method`` (any method if None) fail.

        Kinds: ``"429"`` (flood error with ``retry_after``), ``"500"``, ``"502"`` (HTML body
        like a proxy), ``"timeout"`` (the call IS executed but the answer comes only after
        ``timeout_delay`` — the ambiguous case that requires idempotent clients) and
        ``"timeout_before"`` (nothing executed; the client times out).
        """
        if kind not in ("429", "500", "502", "timeout", "timeout_before"):
            raise ValueError(f"unknown fault kind {kind!r}")
        if count < 1:
            raise ValueError("count must be >= 1")
        self._faults.append(
            _Fault(method.lower() if method else None, kind, count, max(1, int(retry_after)))
        )

    def clear_faults(self) -> None:
        """Drop all not-yet-triggered injected faults."""
        self._faults.clear()

    def reset_rate_limits(self) -> None:
        """Forget past sends, e.g. between test phases."""
        self._chat_sends.clear()
        self._global_sends.clear()

    def new_user_id(self) -> int:
        """A fresh 10-digit user id (above 2**32, to catch int32 storage bugs)."""
        return next(self._user_ids)

    def register_user(
        self,
        user_id: int,
        first_name: str = "Citizen",
        username: str | None = None,
        language_code: str | None = "vi",
    ) -> Citizen:
        """Make a user known without them having started the bot (sends then get 403)."""
        citizen = self.citizens.get(user_id)
        if citizen is None:
            citizen = Citizen(user_id, first_name, username, language_code=language_code)
            self.citizens[user_id] = citizen
        return citizen

    def block_user(self, user_id: int) -> None:
        """The citizen blocks the bot: later sends give 403, a my_chat_member update is sent."""
        citizen = self._require_citizen(user_id)
        if citizen.blocked:
            return
        citizen.blocked = True
        self._enqueue_chat_member(citizen, "member", "kicked")

    def unblock_user(self, user_id: int) -> None:
        """The citizen unblocks the bot (Telegram sends my_chat_member kicked → member)."""
        citizen = self._require_citizen(user_id)
        if not citizen.blocked:
            return
        citizen.blocked = False
        self._enqueue_chat_member(citizen, "kicked", "member")

    # ---------------------------------------------------------------- simulated citizens

    async def open_deep_link(
        self,
        user_id: int,
        payload: str | None,
        username: str | None = None,
        first_name: str = "Citizen",
        language_code: str | None = "vi",
    ) -> JSONDict:
        """The citizen opens ``t.me/<bot>?start=<payload>`` and presses Start.

        The bot receives ``/start <payload>`` (again on every opening, so handlers must be
        idempotent).  A blocked bot gets unblocked first, as pressing Restart does.
        Returns the update that was queued.
        """
        if payload and (len(payload) > 64 or not _SAFE_CHARS.match(payload)):
            raise ValueError("deep-link payload must be 1-64 characters of A-Za-z0-9_-")
        citizen = self.register_user(user_id, first_name, username, language_code)
        if username is not None:
            citizen.username = username
        if citizen.blocked:
            self.unblock_user(user_id)
        citizen.started = True
        text = f"/start {payload}" if payload else "/start"
        return self._user_message(citizen, text)

    def deep_link(self, payload: str) -> str:
        """The t.me link a citizen would open for this payload."""
        return f"https://t.me/{self.bot_username}?start={payload}"

    async def send_text(self, user_id: int, text: str) -> JSONDict:
        """The citizen types a message.  Requires that they started and did not block the bot."""
        citizen = self._require_active(user_id)
        if not text.strip() or _utf16_len(text) > 4096:
            raise ValueError("message text must be 1-4096 characters")
        return self._user_message(citizen, text)

    async def tap_button(
        self, user_id: int, message_id: int, callback_data: str, *, force: bool = False
    ) -> JSONDict:
        """The citizen taps an inline button; the bot receives a callback_query update.

        Without ``force`` the button must currently exist on that bot message (as in a real
        client).  ``force=True`` forges the query (stale/edited-away buttons, tampered data,
        deleted messages) to exercise the bot's validation of untrusted ``callback_data``.
        Returns the update; its query id is ``update["callback_query"]["id"]``.
        """
        citizen = self._require_citizen(user_id)
        message = self._find_message(user_id, message_id)
        if not force:
            if not citizen.started or citizen.blocked:
                raise ValueError(f"user {user_id} has not started the bot or blocked it")
            if message is None or message.deleted or not message.from_bot:
                raise ValueError(f"no bot message {message_id} in chat {user_id}")
            if callback_data not in [data for _, data in message.buttons]:
                raise ValueError(
                    f"message {message_id} has no button with callback_data {callback_data!r}"
                )
        query_id = str(secrets.randbelow(9 * 10**18) + 10**18)
        msg_obj: JSONDict
        if message is not None and not message.deleted:
            msg_obj = self._message_json(message)
        else:
            # InaccessibleMessage: date 0 tells PTB the message is gone.
            msg_obj = {"chat": citizen.as_chat(), "message_id": message_id, "date": 0}
        self.callback_queries[query_id] = CallbackQueryRecord(
            query_id, user_id, message_id, callback_data, self.clock()
        )
        query = {
            "id": query_id,
            "from": citizen.as_user(),
            "message": msg_obj,
            "chat_instance": str(user_id * 7919 % 10**12),
            "data": callback_data,
        }
        return self._enqueue("callback_query", query, user_id)

    async def tap_button_text(
        self, user_id: int, label: str, message_id: int | None = None
    ) -> JSONDict:
        """Tap the button labelled ``label`` on ``message_id`` (default: newest bot message
        that has such a button).  Convenient for demos and readable tests."""
        candidates = [m for m in self.bot_messages_for(user_id) if m.buttons]
        if message_id is not None:
            candidates = [m for m in candidates if m.message_id == message_id]
        for message in reversed(candidates):
            for text, data in message.buttons:
                if text == label and data is not None:
                    return await self.tap_button(user_id, message.message_id, data)
        raise ValueError(f"no button labelled {label!r} in chat {user_id}")

    # ---------------------------------------------------------------- recording helpers

    def messages_for(self, user_id: int) -> list[ChatMessage]:
        """Messages currently visible in the private chat (both directions, oldest first)."""
        return [m for m in self._messages.get(user_id, []) if not m.deleted]

    def bot_messages_for(self, user_id: int) -> list[ChatMessage]:
        """Visible messages sent by the bot in this chat."""
        return [m for m in self.messages_for(user_id) if m.from_bot]

    def last_message(self, user_id: int) -> ChatMessage | None:
        """The newest visible message *from the bot* in this chat, or None."""
        messages = self.bot_messages_for(user_id)
        return messages[-1] if messages else None

    def all_messages_for(self, user_id: int) -> list[ChatMessage]:
        """Every message ever in the chat, including deleted ones (``deleted=True``)."""
        return list(self._messages.get(user_id, []))

    def calls_to(self, method: str) -> list[ApiCall]:
        """Recorded calls of one method (case-insensitive)."""
        wanted = method.lower()
        return [c for c in self.calls if c.method.lower() == wanted]

    def callback_answer(self, query_id: str) -> CallbackQueryRecord:
        """What the bot answered to a tap (``answered``, ``answer_text``, ``show_alert``)."""
        return self.callback_queries[query_id]

    def reset_records(self) -> None:
        """Clear call and webhook logs (chat transcripts are kept)."""
        self.calls.clear()
        self.webhook_attempts.clear()

    async def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until every queued update is delivered (webhook) or confirmed (getUpdates).

        Raises TimeoutError otherwise — e.g. when the webhook keeps failing.
        """
        await self.wait_until(lambda: not self._pending, timeout)

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float = 5.0,
    ) -> None:
        """Poll ``predicate`` until it holds; TimeoutError after ``timeout`` seconds.

        Useful because a bot that acks webhooks before processing answers asynchronously.
        """
        async with asyncio.timeout(timeout):
            while not predicate():  # noqa: ASYNC110 - arbitrary predicates, no event
                await asyncio.sleep(0.005)

    async def wait_for_bot_messages(
        self,
        user_id: int,
        count: int,
        timeout: float = 5.0,
    ) -> list[ChatMessage]:
        """Wait until the chat holds at least ``count`` visible bot messages; return them."""
        await self.wait_until(lambda: len(self.bot_messages_for(user_id)) >= count, timeout)
        return self.bot_messages_for(user_id)

    # ---------------------------------------------------------------- HTTP entry point

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """Route ``/bot<token>/<method>``, apply faults, run the method, record the call."""
        match = _PATH.match(request.path)
        if match is None:
            return _json_response(TelegramApiError(404, ERR_NOT_FOUND).body(), 404)
        token, method = match.groups()
        if not secrets.compare_digest(token.encode(), self.token.encode()):
            return _json_response(TelegramApiError(401, ERR_UNAUTHORIZED).body(), 401)
        try:
            params = await _read_params(request)
        except TelegramApiError as exc:
            self._record(method, _Params({}, {}), exc.status, exc.body())
            return _json_response(exc.body(), exc.status)
        handler = self._methods.get(method.lower())
        if handler is None:
            body = TelegramApiError(404, ERR_NOT_FOUND).body()
            self._record(method, params, 404, body)
            return _json_response(body, 404)

        fault = self._take_fault(method)
        if fault is not None and fault.kind != "timeout":
            return await self._apply_fault(method, params, fault)

        try:
            result = await handler(params)
            status, body = 200, {"ok": True, "result": result}
        except TelegramApiError as exc:
            status, body = exc.status, exc.body()
        self._record(method, params, status, body, fault.kind if fault else None)
        if fault is not None:  # "timeout": executed, but the answer is lost in the network
            await self._sleep_unless_closing(self.timeout_delay)
        return _json_response(body, status)

    async def _apply_fault(self, method: str, params: _Params, fault: _Fault) -> web.Response:
        """Answer like an overloaded or broken Telegram would, without executing the call."""
        if fault.kind == "429":
            exc = TelegramApiError(
                429,
                f"Too Many Requests: retry after {fault.retry_after}",
                {"retry_after": fault.retry_after},
            )
            self._record(method, params, 429, exc.body(), fault.kind)
            return _json_response(exc.body(), 429)
        if fault.kind == "500":
            body = TelegramApiError(500, "Internal Server Error").body()
            self._record(method, params, 500, body, fault.kind)
            return _json_response(body, 500)
        if fault.kind == "502":
            text = "<html><head><title>502 Bad Gateway</title></head></html>"
            self._record(method, params, 502, text, fault.kind)
            return web.Response(status=502, text=text, content_type="text/html")
        # timeout_before: the request never reaches the API; the proxy gives up eventually.
        self._record(method, params, 504, "timeout", fault.kind)
        await self._sleep_unless_closing(self.timeout_delay)
        return web.Response(status=504, text="Gateway Timeout")

    def _take_fault(self, method: str) -> _Fault | None:
        wanted = method.lower()
        for fault in self._faults:
            if fault.method is None or fault.method == wanted:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    async def _sleep_unless_closing(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    def _record(
        self,
        method: str,
        params: _Params,
        status: int,
        response: JSONDict | str,
        fault: str | None = None,
    ) -> None:
        self.calls.append(
            ApiCall(method, params.for_record(), status, response, time.time(), fault)
        )

    # ---------------------------------------------------------------- validation helpers

    def _require_citizen(self, user_id: int) -> Citizen:
        citizen = self.citizens.get(user_id)
        if citizen is None:
            raise ValueError(f"unknown user {user_id}; call open_deep_link first")
        return citizen

    def _require_active(self, user_id: int) -> Citizen:
        citizen = self._require_citizen(user_id)
        if not citizen.started or citizen.blocked:
            raise ValueError(f"user {user_id} has not started the bot or blocked it")
        return citizen

    def _writable_chat(self, chat_id: int) -> Citizen:
        """The chat the bot wants to write to, or the error Telegram gives."""
        citizen = self.citizens.get(chat_id)
        if citizen is None:
            raise bad_request(ERR_CHAT_NOT_FOUND)
        if citizen.blocked:
            raise TelegramApiError(403, ERR_BLOCKED)
        if not citizen.started:
            raise TelegramApiError(403, ERR_CANT_INITIATE)
        return citizen

    def _check_text(self, text: str | None, parse_mode: str | None) -> str:
        if text is None or text == "":
            raise bad_request(ERR_TEXT_EMPTY)
        plain = render_text(text, parse_mode)
        if not plain:
            raise bad_request(ERR_TEXT_EMPTY)
        if _utf16_len(plain) > 4096:
            raise bad_request(ERR_TEXT_TOO_LONG)
        return plain

    def _check_markup(self, params: _Params, *, inline_only: bool) -> JSONDict | None:
        markup = params.get_json("reply_markup")
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise bad_request("Bad Request: can't parse reply keyboard markup JSON object")
        if "inline_keyboard" not in markup:
            if inline_only:
                raise bad_request("Bad Request: inline keyboard expected")
            if not any(k in markup for k in ("keyboard", "remove_keyboard", "force_reply")):
                raise bad_request("Bad Request: can't parse reply keyboard markup JSON object")
            return markup
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise bad_request('Bad Request: field "inline_keyboard" must be an Array of Arrays')
        total = 0
        for row in rows:
            if len(row) > self.max_buttons_per_row:
                raise bad_request(ERR_MARKUP_TOO_LONG)
            for button in row:
                total += 1
                self._check_button(button)
        if total > self.max_buttons:
            raise bad_request(ERR_MARKUP_TOO_LONG)
        return markup

    @staticmethod
    def _check_button(button: Any) -> None:
        if not isinstance(button, dict):
            raise bad_request("Bad Request: can't parse inline keyboard button: object expected")
        text = button.get("text")
        if not isinstance(text, str) or not text.strip():
            raise bad_request(ERR_BUTTON_TEXT)
        actions = [
            k
            for k in (
                "callback_data",
                "url",
                "login_url",
                "switch_inline_query",
                "switch_inline_query_current_chat",
                "web_app",
                "pay",
                "copy_text",
                "callback_game",
            )
            if k in button
        ]
        if not actions:
            raise bad_request(
                "Bad Request: can't parse inline keyboard button: "
                "Text buttons are unallowed in the inline keyboard"
            )
        if len(actions) > 1:
            raise bad_request(
                "Bad Request: can't parse inline keyboard button: "
                "only one of the optional fields must be used"
            )
        if "callback_data" in button:
            data = button["callback_data"]
            if not isinstance(data, str) or not 1 <= len(data.encode("utf-8")) <= 64:
                raise bad_request(ERR_BUTTON_DATA)
        if "url" in button:
            url = button["url"]
            if not isinstance(url, str) or not re.match(r"^(https?|tg)://\S+$", url):
                raise bad_request(ERR_BUTTON_URL)

    def _check_rate(self, method: str, chat_id: int) -> None:
        """Sliding-window flood control; records the send when allowed."""
        if method.lower() not in self.rate_limited_methods:
            return
        now = self.clock()
        waits: list[float] = []
        chat_q = self._chat_sends.setdefault(chat_id, deque())
        for queue, limit, window in (
            (chat_q, self.per_chat_limit, self.per_chat_window),
            (self._global_sends, self.global_limit, self.global_window),
        ):
            if limit is None:
                continue
            while queue and queue[0] <= now - window:
                queue.popleft()
            if len(queue) >= limit:
                waits.append(queue[len(queue) - limit] + window - now)
        if waits:
            retry = max(1, math.ceil(max(waits)))
            raise TelegramApiError(
                429, f"Too Many Requests: retry after {retry}", {"retry_after": retry}
            )
        chat_q.append(now)
        self._global_sends.append(now)

    # ---------------------------------------------------------------- message helpers

    def _find_message(self, chat_id: int, message_id: int) -> ChatMessage | None:
        for message in self._messages.get(chat_id, []):
            if message.message_id == message_id:
                return message
        return None

    def _new_message(self, chat_id: int, *, from_bot: bool, **fields: Any) -> ChatMessage:
        # Private chats number messages per chat, so ids are not globally unique.
        message_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = message_id + 1
        message = ChatMessage(message_id, chat_id, from_bot, int(time.time()), **fields)
        message.history.append(MessageSnapshot(message.body, message.reply_markup, time.time()))
        self._messages.setdefault(chat_id, []).append(message)
        return message

    def _message_json(self, message: ChatMessage) -> JSONDict:
        citizen = self.citizens[message.chat_id]
        data: JSONDict = {
            "message_id": message.message_id,
            "from": self.bot_user if message.from_bot else citizen.as_user(),
            "chat": citizen.as_chat(),
            "date": message.date,
        }
        if message.edit_date is not None:
            data["edit_date"] = message.edit_date
        if message.text is not None:
            data["text"] = message.text
        if message.entities:
            data["entities"] = message.entities
        if message.photo_ref is not None:
            data["photo"] = _photo_sizes(message.photo_ref, len(message.photo_bytes or b""))
            if message.caption is not None:
                data["caption"] = message.caption
        # Telegram echoes only inline keyboards back in Message objects.
        if message.reply_markup and "inline_keyboard" in message.reply_markup:
            data["reply_markup"] = message.reply_markup
        return data

    def _user_message(self, citizen: Citizen, text: str) -> JSONDict:
        entities = None
        command = re.match(r"^/[A-Za-z0-9_]+(@[A-Za-z0-9_]+)?", text)
        if command:
            entities = [{"type": "bot_command", "offset": 0, "length": _utf16_len(command[0])}]
        message = self._new_message(
            citizen.user_id, from_bot=False, text=text, raw_text=text, entities=entities
        )
        return self._enqueue("message", self._message_json(message), citizen.user_id)

    def _editable(self, params: _Params) -> ChatMessage:
        if params.has("inline_message_id"):
            raise bad_request("Bad Request: MESSAGE_ID_INVALID")
        chat_id = params.chat_id()
        self._writable_chat(chat_id)
        message_id = params.get_int("message_id")
        if message_id is None:
            raise bad_request("Bad Request: message identifier is not specified")
        message = self._find_message(chat_id, message_id)
        if message is None or message.deleted:
            raise bad_request(ERR_EDIT_NOT_FOUND)
        if not message.from_bot:
            raise bad_request(ERR_CANT_EDIT)
        return message

    def _apply_edit(
        self,
        message: ChatMessage,
        method: str,
        *,
        text: str | None,
        raw_text: str | None,
        parse_mode: str | None,
        markup: JSONDict | None,
    ) -> JSONDict:
        same_text = text == message.text and (
            (raw_text, parse_mode) == (message.raw_text, message.parse_mode)
            or (not parse_mode and not message.parse_mode)
        )
        if same_text and markup == message.reply_markup:
            raise bad_request(ERR_NOT_MODIFIED)
        self._check_rate(method, message.chat_id)
        message.text, message.raw_text, message.parse_mode = text, raw_text, parse_mode
        message.reply_markup = markup
        message.edit_date = int(time.time())
        message.history.append(MessageSnapshot(message.body, markup, time.time()))
        return self._message_json(message)

    # ---------------------------------------------------------------- Bot API methods

    async def _get_me(self, params: _Params) -> JSONDict:
        return {
            **self.bot_user,
            "can_join_groups": False,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _send_message(self, params: _Params) -> JSONDict:
        chat_id = params.chat_id()
        parse_mode = params.get_str("parse_mode")
        raw = params.get_str("text")
        plain = self._check_text(raw, parse_mode)
        markup = self._check_markup(params, inline_only=False)
        self._writable_chat(chat_id)
        self._check_rate("sendMessage", chat_id)
        message = self._new_message(
            chat_id,
            from_bot=True,
            text=plain,
            raw_text=raw,
            parse_mode=parse_mode,
            reply_markup=markup,
        )
        return self._message_json(message)

    async def _send_photo(self, params: _Params) -> JSONDict:
        chat_id = params.chat_id()
        photo_bytes: bytes | None = None
        if "photo" in params.files:
            name, photo_bytes = params.files["photo"]
            ref = f"upload:{name}"
        else:
            photo = params.get_str("photo")
            if not photo:
                raise bad_request(ERR_NO_PHOTO)
            if photo.startswith("attach://"):
                attached = params.files.get(photo.removeprefix("attach://"))
                if attached is None:
                    raise bad_request(ERR_NO_PHOTO)
                photo_bytes = attached[1]
            ref = photo
        if photo_bytes is not None and not photo_bytes:
            raise bad_request("Bad Request: IMAGE_PROCESS_FAILED")
        caption_raw = params.get_str("caption")
        parse_mode = params.get_str("parse_mode")
        caption = render_text(caption_raw, parse_mode) if caption_raw else None
        if caption is not None and _utf16_len(caption) > 1024:
            raise bad_request(ERR_CAPTION_TOO_LONG)
        markup = self._check_markup(params, inline_only=False)
        self._writable_chat(chat_id)
        self._check_rate("sendPhoto", chat_id)
        message = self._new_message(
            chat_id,
            from_bot=True,
            caption=caption or None,
            raw_text=caption_raw,
            parse_mode=parse_mode,
            reply_markup=markup,
            photo_bytes=photo_bytes,
            photo_ref=ref,
        )
        return self._message_json(message)

    async def _edit_message_text(self, params: _Params) -> JSONDict:
        message = self._editable(params)
        if message.text is None:
            raise bad_request("Bad Request: there is no text in the message to edit")
        parse_mode = params.get_str("parse_mode")
        raw = params.get_str("text")
        plain = self._check_text(raw, parse_mode)
        # Omitting reply_markup removes the inline keyboard, exactly like Telegram.
        markup = self._check_markup(params, inline_only=True)
        return self._apply_edit(
            message,
            "editMessageText",
            text=plain,
            raw_text=raw,
            parse_mode=parse_mode,
            markup=markup,
        )

    async def _edit_message_reply_markup(self, params: _Params) -> JSONDict:
        message = self._editable(params)
        markup = self._check_markup(params, inline_only=True)
        return self._apply_edit(
            message,
            "editMessageReplyMarkup",
            text=message.text,
            raw_text=message.raw_text,
            parse_mode=message.parse_mode,
            markup=markup,
        )

    async def _delete_message(self, params: _Params) -> bool:
        chat_id = params.chat_id()
        if chat_id not in self.citizens:
            raise bad_request(ERR_CHAT_NOT_FOUND)
        message_id = params.get_int("message_id")
        message = self._find_message(chat_id, message_id) if message_id is not None else None
        if message is None or message.deleted:
            raise bad_request(ERR_DELETE_NOT_FOUND)
        message.deleted = True
        return True

    async def _send_chat_action(self, params: _Params) -> bool:
        self._writable_chat(params.chat_id())
        if not params.get_str("action"):
            raise bad_request("Bad Request: action is empty")
        return True

    async def _answer_callback_query(self, params: _Params) -> bool:
        query_id = params.get_str("callback_query_id") or ""
        record = self.callback_queries.get(query_id)
        if (
            record is None
            or record.answered
            or self.clock() - record.created > self.callback_answer_window
        ):
            raise bad_request(ERR_QUERY_INVALID)
        text = params.get_str("text")
        if text is not None and _utf16_len(text) > 200:
            raise bad_request("Bad Request: MESSAGE_TOO_LONG")
        record.answered = True
        record.answer_text = text
        record.show_alert = params.get_bool("show_alert")
        return True

    async def _set_webhook(self, params: _Params) -> bool:
        url = params.get_str("url") or ""
        if not url:
            return await self._delete_webhook(params)
        parsed = URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise bad_request("Bad Request: bad webhook: invalid webhook URL specified")
        if not self.local_mode:  # the public server's rule (reference/telegram.md §1.1)
            if parsed.scheme != "https":
                raise bad_request(
                    "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
                )
            if parsed.port not in PUBLIC_WEBHOOK_PORTS:
                raise bad_request(
                    "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443"
                )
        secret = params.get_str("secret_token")
        if secret is not None and secret != "":
            if len(secret) > 256:
                raise bad_request(ERR_SECRET_TOKEN_LENGTH)
            if not _SAFE_CHARS.match(secret):
                raise bad_request(ERR_SECRET_TOKEN)
        max_connections = params.get_int("max_connections")
        if max_connections is not None and not 1 <= max_connections <= 100:
            raise bad_request("Bad Request: bad webhook: max_connections must be 1-100")
        allowed = params.get_json("allowed_updates")
        if allowed is not None:
            if not isinstance(allowed, list):
                raise bad_request("Bad Request: can't parse allowed_updates JSON object")
            self._allowed_updates = [str(a) for a in allowed] or None
        if params.get_bool("drop_pending_updates"):
            self._pending.clear()
        self._webhook_url = url
        self._webhook_secret = secret or None
        self._webhook_max_connections = max_connections or 40
        self._delivery_slots = asyncio.Semaphore(self._webhook_max_connections)
        self._wake_poller("webhook")
        self._start_all_workers()
        return True

    async def _delete_webhook(self, params: _Params) -> bool:
        self._webhook_url = None
        self._webhook_secret = None
        for task in self._workers.values():
            task.cancel()
        self._workers.clear()
        if params.get_bool("drop_pending_updates"):
            self._pending.clear()
        return True

    async def _get_webhook_info(self, params: _Params) -> JSONDict:
        info: JSONDict = {
            "url": self._webhook_url or "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._pending),
        }
        if self._webhook_url:
            info["max_connections"] = self._webhook_max_connections
            if self._allowed_updates:
                info["allowed_updates"] = self._allowed_updates
            if self._last_error_date is not None:
                info["last_error_date"] = self._last_error_date
                info["last_error_message"] = self._last_error_message
        return info

    async def _get_updates(self, params: _Params) -> list[JSONDict]:
        if self._webhook_url:
            raise TelegramApiError(409, ERR_WEBHOOK_ACTIVE)
        offset = params.get_int("offset")
        limit = params.get_int("limit") or 100
        limit = min(max(limit, 1), 100)
        timeout = max(0.0, params.get_float("timeout") or 0.0)
        allowed = params.get_json("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = [str(a) for a in allowed] or None
        self._wake_poller("other")  # a newer getUpdates terminates an older long poll
        self._confirm(offset)
        if not self._pending and timeout > 0:
            waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._poll_waiter = waiter
            try:
                reason = await asyncio.wait_for(asyncio.shield(waiter), timeout)
            except TimeoutError:
                reason = "timeout"
            finally:
                if self._poll_waiter is waiter:
                    self._poll_waiter = None
            if reason == "webhook":
                raise TelegramApiError(409, ERR_TERMINATED_BY_WEBHOOK)
            if reason == "other":
                raise TelegramApiError(409, ERR_TERMINATED_BY_OTHER)
        return [u.payload for u in self._pending[:limit]]

    def _confirm(self, offset: int | None) -> None:
        """Apply getUpdates' offset: forget updates below it (negative = keep the last -N)."""
        if offset is None or offset == 0:
            return
        if offset < 0:
            self._pending = self._pending[offset:]
            return
        for update in self._pending:
            if update.update_id < offset:
                self.sent_updates.append(update.payload)
        self._pending = [u for u in self._pending if u.update_id >= offset]

    def _wake_poller(self, reason: str) -> None:
        waiter = self._poll_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(reason)
        self._poll_waiter = None

    # ---------------------------------------------------------------- update queue & webhook

    def _enqueue(self, kind: str, obj: JSONDict, chat_key: int | None) -> JSONDict:
        update_id = next(self._update_ids)
        update: JSONDict = {"update_id": update_id, kind: obj}
        allowed = self._allowed_updates
        if (allowed and kind not in allowed) or (not allowed and kind in _DEFAULT_EXCLUDED_UPDATES):
            self.dropped_updates.append(update)
            return update
        self._pending.append(_PendingUpdate(update_id, chat_key, update))
        self._wake_poller("update")
        if self._webhook_url:
            self._ensure_worker(chat_key)
        return update

    def _enqueue_chat_member(self, citizen: Citizen, old: str, new: str) -> None:
        member: JSONDict = {"user": self.bot_user, "status": new}
        if new == "kicked":
            member["until_date"] = 0
        event = {
            "chat": citizen.as_chat(),
            "from": citizen.as_user(),
            "date": int(time.time()),
            "old_chat_member": {"user": self.bot_user, "status": old}
            | ({"until_date": 0} if old == "kicked" else {}),
            "new_chat_member": member,
        }
        self._enqueue("my_chat_member", event, citizen.user_id)

    def _start_all_workers(self) -> None:
        for key in {u.chat_key for u in self._pending}:
            self._ensure_worker(key)

    def _ensure_worker(self, chat_key: int | None) -> None:
        """One delivery task per chat keeps per-chat order while other chats proceed."""
        if self._session is None:
            return  # not started yet: start() launches the workers
        task = self._workers.get(chat_key)
        if task is None or task.done():
            self._workers[chat_key] = asyncio.create_task(self._chat_worker(chat_key))

    async def _chat_worker(self, chat_key: int | None) -> None:
        try:
            while self._webhook_url and not self._closing.is_set():
                head = next((u for u in self._pending if u.chat_key == chat_key), None)
                if head is None:
                    return
                if await self._deliver(head):
                    self._pending.remove(head)
                    self.sent_updates.append(head.payload)
                    continue
                head.attempts += 1
                if self.webhook_max_attempts and head.attempts >= self.webhook_max_attempts:
                    self._pending.remove(head)
                    self.dropped_updates.append(head.payload)
                    continue
                delay = self.webhook_backoff[min(head.attempts - 1, len(self.webhook_backoff) - 1)]
                await asyncio.sleep(delay)
        finally:
            if self._workers.get(chat_key) is asyncio.current_task():
                del self._workers[chat_key]

    async def _deliver(self, update: _PendingUpdate) -> bool:
        """POST one update; True on 2xx.  Errors are kept for getWebhookInfo like Telegram."""
        url = self._webhook_url
        if url is None or self._session is None or self._delivery_slots is None:
            return False
        headers = {"Content-Type": "application/json"}
        if self._webhook_secret:
            headers["X-Telegram-Bot-Api-Secret-Token"] = self._webhook_secret
        status: int | None = None
        error: str | None = None
        async with self._delivery_slots:
            try:
                async with self._session.post(
                    url,
                    data=json.dumps(update.payload),
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.webhook_timeout),
                ) as response:
                    await response.read()
                    status = response.status
                    if not 200 <= status < 300:
                        error = f"Wrong response from the webhook: {status} {response.reason}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = f"Connection error: {exc.__class__.__name__}"
        self.webhook_attempts.append(
            WebhookAttempt(update.update_id, update.chat_key, url, status, error, time.time())
        )
        if error is not None:
            self._last_error_date = int(time.time())
            self._last_error_message = error
            return False
        return True


# --------------------------------------------------------------------------------------------
# Module helpers
# --------------------------------------------------------------------------------------------


async def _read_params(request: web.Request) -> _Params:
    """Decode query string + JSON, urlencoded or multipart bodies into one parameter set."""
    values: JSONDict = dict(request.query)
    files: dict[str, tuple[str, bytes]] = {}
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise bad_request("Bad Request: can't parse JSON body") from None
            if not isinstance(body, dict):
                raise bad_request("Bad Request: JSON body must be an object")
            values.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    files[key] = (value.filename or key, value.file.read())
                else:
                    values[key] = value
    return _Params(values, files)


def _json_response(body: JSONDict, status: int) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))


def _photo_sizes(ref: str, size: int) -> list[JSONDict]:
    """PhotoSize list as Telegram returns for a sent photo (thumbnail + full size)."""
    unique = abs(hash(ref)) % 10**10
    return [
        {
            "file_id": f"AgAD{unique}s",
            "file_unique_id": f"AQAD{unique}s",
            "width": 90,
            "height": 90,
            "file_size": max(1, size // 10),
        },
        {
            "file_id": f"AgAD{unique}m",
            "file_unique_id": f"AQAD{unique}m",
            "width": 512,
            "height": 512,
            "file_size": max(1, size),
        },
    ]
