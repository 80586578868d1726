"""The web chat simulator's channel: messages land in a per-session mailbox the page polls.

It exists so anyone can try a survey with no chat account at all. Session ids are random strings
made by the server; the mailboxes (``mailboxes``: process memory, or Redis when the deployment
has one, so any process can deliver to a session another opened) expire, since a simulator
conversation is worth nothing after the tab is closed.
"""

from __future__ import annotations

from typing import Any

from bot.adapters.web.mailboxes import Mailboxes, MemoryMailboxes
from bot.channels import Capabilities, DeliveryError, OutboundMessage

CAPABILITIES = Capabilities(
    buttons=True, max_text_chars=4096, max_buttons=12, edits=True, reminders=True
)
#: ``OutboundMessage.extra`` key the service sets on the last message of a conversation (the
#: thank-you, the /stop and /delete replies): the mailbox then forgets what the page has read.
FORGET = "forget"


class WebChannel:
    """Delivers to the mailboxes; ``send`` to an unknown session is a permanent failure."""

    name = "web"
    capabilities = CAPABILITIES

    def __init__(self, mailboxes: Mailboxes | None = None) -> None:
        self.mailboxes: Mailboxes = mailboxes if mailboxes is not None else MemoryMailboxes()

    async def open_session(self) -> str:
        return await self.mailboxes.open()

    async def exists(self, session: str) -> bool:
        """Whether the session is open (its mailbox's expiry starts again)."""
        return await self.mailboxes.touch(session)

    async def send(self, address: str, message: OutboundMessage) -> None:
        closing = FORGET in message.extra
        if await self.mailboxes.append(address, message.to_dict(), closing=closing) is None:
            raise DeliveryError("simulator session closed", permanent=True)

    async def poll(self, session: str, after: int) -> list[dict[str, Any]]:
        """The messages after ``after``; none for an unknown session."""
        return await self.mailboxes.poll(session, after) or []
