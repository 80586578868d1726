"""The outbound channel port: what a channel can render, and how it delivers one message.

The survey engine speaks in ``Prompt``s; each channel declares its capabilities and
``render`` turns a prompt into what that channel can show (buttons, or a numbered list the
citizen answers by typing). Adapters never decide survey logic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.flows.engine import Prompt
from bot.i18n import gettext


@dataclass(frozen=True, slots=True)
class Capabilities:
    buttons: bool
    max_text_chars: int
    max_buttons: int = 10
    max_button_data_bytes: int = 64
    #: The channel can edit a sent question to show the chosen answer with no live buttons.
    edits: bool = False
    #: The channel asks a survey of its own instead of ours (a platform template the citizen
    #: rates in the app, e.g. the ZNS stars): a start there switches the invitation to that
    #: survey and sends one templated message carrying a tracking id (``TRACKING_ID``) and
    #: ``TEMPLATE_PARAMS``; no reminder follows; the answer comes back as a tracked rating.
    template_survey: str | None = None
    #: The address is only needed to send: it is deleted once the channel accepted the message,
    #: and ``delivered`` waits for the platform's receipt (or the rating).
    forget_address_once_sent: bool = False
    #: The channel may carry the survey's one follow-up (``usecases.lifecycle.send_reminders``,
    #: ``SURVEYBOT_REMINDER_AFTER_HOURS`` after an unanswered invitation): a chat the citizen
    #: can answer in. Off unless a channel declares it, and off on a one-message template
    #: channel (ZNS, see ``bot/adapters/zalo/zns.py``). Sent at most once per survey, whatever
    #: channel fallbacks happen.
    reminders: bool = False


@dataclass(slots=True)
class OutboundMessage:
    """What a channel sends: text plus optional buttons as (label, payload) pairs."""

    text: str
    buttons: list[tuple[str, str]] = field(default_factory=list)
    #: The question this message asks, so a channel can edit it once answered.
    question_id: str | None = None
    update: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    #: Sent inside a running conversation (the dispatcher's reply lane; never stored): a channel
    #: whose rate is shared by every send lets it go before invitations and reminders.
    reply: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "buttons": [list(b) for b in self.buttons],
            "question_id": self.question_id,
            "update": self.update,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OutboundMessage:
        return cls(
            text=data["text"],
            buttons=[(b[0], b[1]) for b in data.get("buttons", [])],
            question_id=data.get("question_id"),
            update=bool(data.get("update")),
            extra=dict(data.get("extra") or {}),
        )


#: Keys of ``OutboundMessage.extra`` on a templated invitation (their historical names: the
#: outbox may hold such messages across an upgrade).
TRACKING_ID = "zns_tracking_id"
TEMPLATE_PARAMS = "zns_params"


class DeliveryError(Exception):
    """A send that failed; ``retry_after`` set when the channel asked us to wait, ``permanent``
    when retrying cannot help (the citizen blocked the bot, the address is gone), ``paused`` when
    the whole channel is on hold (e.g. Zalo's OAuth grant needs an admin): such a failure does not
    count as an attempt, so a long pause loses no message."""

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        permanent: bool = False,
        paused: bool = False,
    ):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.permanent = permanent
        self.paused = paused


class Channel(Protocol):
    name: str
    capabilities: Capabilities

    async def send(self, address: str, message: OutboundMessage) -> None:
        """Deliver one message to a raw address (``<channel>:<id>``) or raise DeliveryError."""


def render(prompt: Prompt, capabilities: Capabilities, language: str) -> OutboundMessage:
    """A prompt as buttons where the channel has them, else as a numbered list to reply to."""
    text = prompt.text
    if not prompt.options:
        return OutboundMessage(_fit(text, capabilities), question_id=prompt.question_id)
    if capabilities.buttons and len(prompt.options) <= capabilities.max_buttons:
        buttons = [(("✅ " if o.selected else "") + o.label, o.payload) for o in prompt.options]
        return OutboundMessage(
            _fit(text, capabilities), buttons, question_id=prompt.question_id, update=prompt.update
        )
    if prompt.free_text:
        hint = gettext(language, "Type your answer, or reply 0 to skip.")
        return OutboundMessage(
            _fit(f"{text}\n{hint}", capabilities), question_id=prompt.question_id
        )
    choices = [o for o in prompt.options if not o.payload.endswith((":-done", ":-skip"))]
    lines = [f"{i}. {('✅ ' if o.selected else '')}{o.label}" for i, o in enumerate(choices, 1)]
    if prompt.multi:
        hint = gettext(
            language,
            "Reply with one or more numbers from 1 to {n}, for example: 1, 3. Reply 0 when done.",
            n=len(choices),
        )
    else:
        hint = gettext(language, "Reply with a number from 1 to {n}.", n=len(choices))
    body = "\n".join([text, *lines, hint])
    return OutboundMessage(_fit(body, capabilities), question_id=prompt.question_id)


def _fit(text: str, capabilities: Capabilities) -> str:
    limit = capabilities.max_text_chars
    return text if len(text) <= limit else text[: limit - 1] + "…"
