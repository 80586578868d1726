"""Turning what a citizen sent on any channel into a service call.

Every channel funnels through here, so commands, deep-link binding and button payloads behave the
same on Telegram, Zalo and the simulator.
"""

from __future__ import annotations

from bot.flows.engine import Choice, Reply, parse_payload
from bot.service import Outcome, SurveyService

COMMANDS = {"help", "privacy", "stop", "delete", "lang", "language"}


async def route_text(
    service: SurveyService, channel: str, address: str, text: str, language: str | None = None
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


async def route_button(service: SurveyService, channel: str, address: str, data: str) -> Outcome:
    """A tapped button. Unknown or forged data is treated as a stale button: a polite re-ask."""
    if data.startswith("cmd:"):
        _, name, arg = [*data.split(":", 2), "", ""][:3]
        if name in COMMANDS:
            return await service.command(channel, address, name, arg)
    choice = parse_payload(data) or Choice(tag="-", question_id="-", value="-")
    return await service.handle(channel, address, choice)
