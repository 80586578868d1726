"""Turning what a citizen sent on any channel into a service call.

Every channel funnels through here, so commands, deep-link binding and button payloads behave the
same on Telegram, Zalo and the simulator. Channel packages hold a :class:`Funnel` (given in
``ChannelServices``), never the conversation service itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from bot.flows.definition import SurveyDefinition
from bot.flows.engine import AnswerEvent, Choice, Input, Reply, parse_payload
from bot.service import Outcome

COMMANDS = {"help", "privacy", "stop", "delete", "lang", "language"}


class Conversation(Protocol):
    """The use cases an inbound message can reach."""

    async def bind(self, token: str, channel: str, address: str, language: str | None) -> Outcome:
        """Bind a chat to the dossier of a rating token."""

    async def handle(self, channel: str, address: str, event: Input) -> Outcome:
        """Step the open survey of this chat."""

    async def command(self, channel: str, address: str, name: str, arg: str = "") -> Outcome:
        """Run a citizen's command."""


class TrackedRatings(Protocol):
    """Ratings a platform collects itself (a template the citizen rates in the app), keyed by
    the tracking id we sent with the invitation."""

    async def record_rating(
        self,
        channel: str,
        tracking_id: str,
        rater: str,
        answers: Callable[[SurveyDefinition], Sequence[AnswerEvent]],
    ) -> bool:
        """Store the rating as the invitation's completed response; False when unknown or
        already stored."""

    async def record_receipt(self, tracking_id: str) -> bool:
        """The platform's delivery receipt: the ledger records that the invitation arrived."""


async def route_text(
    service: Conversation, channel: str, address: str, text: str, language: str | None = None
) -> Outcome:
    """Typed text: ``/start <token>`` binds, ``/command`` runs, anything else answers."""
    stripped = text.strip()
    if stripped.startswith("/"):
        head, _, rest = stripped[1:].partition(" ")
        name = head.split("@", 1)[0].lower()
        if name == "start":
            token = rest.strip()
            if token:
                return await service.bind(token, channel, address, language)
            return await service.handle(channel, address, Reply(""))
        if name in COMMANDS:
            return await service.command(
                channel, address, "lang" if name == "language" else name, rest.strip().lower()
            )
    return await service.handle(channel, address, Reply(text))


async def route_button(service: Conversation, channel: str, address: str, data: str) -> Outcome:
    """A tapped button. Unknown or forged data is treated as a stale button: a polite re-ask."""
    if data.startswith("cmd:"):
        _, name, arg = [*data.split(":", 2), "", ""][:3]
        if name in COMMANDS:
            return await service.command(channel, address, name, arg)
    choice = parse_payload(data) or Choice(tag="-", question_id="-", value="-")
    return await service.handle(channel, address, choice)


class Funnel:
    """The one funnel, bound to the conversation use cases: what channels are handed."""

    def __init__(self, conversation: Conversation) -> None:
        self._conversation = conversation

    async def bind(
        self, token: str, channel: str, address: str, language: str | None = None
    ) -> Outcome:
        """A rating token from a link the channel opened directly (not typed as ``/start``)."""
        return await self._conversation.bind(token, channel, address, language)

    async def text(
        self, channel: str, address: str, text: str, language: str | None = None
    ) -> Outcome:
        return await route_text(self._conversation, channel, address, text, language)

    async def button(self, channel: str, address: str, data: str) -> Outcome:
        return await route_button(self._conversation, channel, address, data)

    async def command(self, channel: str, address: str, name: str, arg: str = "") -> Outcome:
        return await self._conversation.command(channel, address, name, arg)
