"""Logging: one JSON object per line (or the classic text line), never a raw identifier.

``configure_logging`` installs one stream handler on the root logger, formatted by
``SURVEYBOT_LOG_FORMAT`` (``json`` by default in production, ``text`` elsewhere), and puts the
``Redact`` filter on it and on every other handler the root logger already has. The filter
rewrites each record before any handler formats it:

* the message with its arguments merged (``record.getMessage()``), the traceback, the stack
  and every string "extra" field pass through ``redact``;
* ``redact`` first replaces the secrets whose shape this project knows (an API key ``sbk_…``,
  a ``Bearer`` credential, a Telegram bot token ``<digits>:<secret>``, a rating token after
  ``/r/``, ``start=``, ``token=``, ``/start`` or Zalo's ``#``, any other query secret, and any
  long mixed-case URL-safe token such as a session id), then Telegram and Zalo chat ids (a run
  of 7 digits or more, what ``-100…`` group ids also are), then hands the rest to the comment
  scrubber (``bot.flows.scrub.scrub_contacts``: phones in every Vietnamese spelling, identity and
  account numbers, dossier codes, e-mails, handles, profile links);
* lower-case hex of 32+ characters (row ids, digests, keyed hashes: no raw identifier) is kept;
* an integer extra of 7 digits or more becomes ``"[id]"``.

Whatever is left (the logger's words, counts, channel names, exception class names) is kept as
written. ``tests/test_logs.py`` logs through the real loggers and reads the handler's output.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from typing import Any, Literal, TextIO

from bot.flows.scrub import scrub_contacts

LogFormat = Literal["json", "text"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_SECRETS: tuple[tuple[re.Pattern[str], str], ...] = (
    # The agency API's keys (bot/usecases/reception.py: "sbk_" + token_urlsafe(32)).
    (re.compile(r"sbk_[A-Za-z0-9_-]{4,128}"), "[api key]"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}"), r"\1 [secret]"),
    # A Telegram bot token, also inside an API URL (".../bot123456:AA.../sendMessage").
    (re.compile(r"(?<![A-Za-z0-9])(?:bot)?\d{5,16}:[A-Za-z0-9_-]{20,}"), "[bot token]"),
    # Rating tokens (storage/pseudonym.py new_token: token_urlsafe(24)) wherever links carry one.
    (
        re.compile(r"(/r/|/start[ =]|[?&#](?:start|token|session)=)[A-Za-z0-9_-]{4,128}"),
        r"\1[token]",
    ),
    (re.compile(r"(?<![\w&])#[A-Za-z0-9_-]{16,128}"), "#[token]"),
    (
        re.compile(
            r"(?i)([?&](?:access_token|refresh_token|code|secret|key|api_key|password|sig|signature)=)"
            r"[^&\s\"'#]+"
        ),
        r"\1[secret]",
    ),
    # Any other token: 20+ URL-safe characters mixing upper and lower case with a digit, "-" or
    # "_" (session ids, CSRF tokens, secrets), so CamelCase exception names stay. Hex digests and
    # ids (lower case only) are pseudonyms or random row ids, kept.
    (
        re.compile(
            r"(?<![A-Za-z0-9_-])(?=[A-Za-z0-9_-]*[a-z])(?=[A-Za-z0-9_-]*[A-Z])"
            r"(?=[A-Za-z0-9_-]*[\d_-])[A-Za-z0-9_-]{20,256}(?![A-Za-z0-9_-])"
        ),
        "[token]",
    ),
    # Vietnamese phones written without separators (the scrubber below reads the others).
    (re.compile(r"(?<![A-Za-z0-9_])(?:\+84|84|0)[1-9]\d{8}(?![A-Za-z0-9_])"), "[phone]"),
    # Chat ids: Telegram users and groups, Zalo user ids (the scrubber keeps 7-8 digits alone).
    (re.compile(r"(?<![A-Za-z0-9_])\d{7,}(?![A-Za-z0-9_])"), "[id]"),
)
#: The attributes every LogRecord has; anything else on a record is an "extra" field.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


#: Random row ids (uuid4 hex), digests and keyed hashes (lower-case hex, 32+ characters): kept
#: as written, and not shown to the scrubber, which would read their digits as a code.
_HEX = re.compile(r"(?<![A-Za-z0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{32,128}(?![A-Za-z0-9])")


def redact(text: str) -> str:
    """``text`` without secrets, chat ids, phones, e-mails and the other identifiers above."""
    for pattern, marker in _SECRETS:
        text = pattern.sub(marker, text)
    parts, position = [], 0
    for match in _HEX.finditer(text):
        parts += [scrub_contacts(text[position : match.start()]), match.group()]
        position = match.end()
    parts.append(scrub_contacts(text[position:]))
    return "".join(parts)


class Redact(logging.Filter):
    """Scrubs a record in place before it is formatted (idempotent: several handlers may run
    it on one record); never drops a record."""

    _tracebacks = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_surveybot_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the template, never the arguments
            message = f"{record.msg} [arguments withheld]"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._tracebacks.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name, value in list(record.__dict__.items()):
            if name not in _STANDARD and not name.startswith("_"):
                record.__dict__[name] = _redact_value(value)
        record._surveybot_redacted = True
        return True


def _redact_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return "[id]" if len(str(abs(value))) >= 7 else value
    return redact(value if isinstance(value, str) else str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    ``exception`` and ``stack`` when there are, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_") and name not in entry:
                entry[name] = value
        return json.dumps(entry, ensure_ascii=False, default=str)


def make_handler(log_format: LogFormat, stream: TextIO | None = None) -> logging.Handler:
    """A stream handler in ``log_format`` with the redaction filter on it."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    handler.addFilter(Redact())
    handler._surveybot = True  # type: ignore[attr-defined]
    return handler


#: Libraries whose INFO lines are their own working notes (fpdf2's font subsetting).
QUIET_LIBRARIES = ("fontTools",)


def configure_logging(
    level: str, log_format: LogFormat = "text", stream: TextIO | None = None
) -> logging.Handler | None:
    """The root logger writes through one handler of ours (replaced on a second call) at
    ``level``, and every handler it has gets the redaction filter. Like ``logging.basicConfig``,
    when someone else already put handlers on the root logger (a test runner, an embedding
    program) and no ``stream`` is given, those are left to write, redacted, with their level:
    nothing is added. Returns our handler, if one was installed."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_surveybot", False)]:
        root.removeHandler(old)
    handler = None
    if stream is not None or not root.handlers:
        handler = make_handler(log_format, stream)
        root.addHandler(handler)
        root.setLevel(level.upper())
    for other in root.handlers:
        if not any(isinstance(f, Redact) for f in other.filters):
            other.addFilter(Redact())
    for chatty in QUIET_LIBRARIES:  # a line per font table at INFO says nothing to an operator
        logging.getLogger(chatty).setLevel(logging.WARNING)
    return handler
