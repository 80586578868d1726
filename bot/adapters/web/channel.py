"""The web chat simulator's channel: messages land in a per-session mailbox the page polls.

It exists so anyone can try a survey with no chat account at all. Session ids are random strings
made by the server; mailboxes live in process memory and expire, since a simulator conversation
is worth nothing after the tab is closed.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from bot.channels import Capabilities, DeliveryError, OutboundMessage

CAPABILITIES = Capabilities(
    buttons=True, max_text_chars=4096, max_buttons=12, edits=True, reminders=True
)
MAILBOX_TTL_SECONDS = 6 * 3600
MAX_MAILBOXES = 10_000


@dataclass
class Mailbox:
    messages: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=500))
    touched: float = field(default_factory=time.monotonic)


class WebChannel:
    """Delivers to in-memory mailboxes; ``send`` to an unknown session is a permanent failure."""

    name = "web"
    capabilities = CAPABILITIES

    def __init__(self) -> None:
        self._boxes: dict[str, Mailbox] = {}
        self._ids = itertools.count(1)

    def open_session(self) -> str:
        self._expire()
        session = secrets.token_urlsafe(18)
        self._boxes[session] = Mailbox()
        return session

    def exists(self, session: str) -> bool:
        return session in self._boxes

    async def send(self, address: str, message: OutboundMessage) -> None:
        box = self._boxes.get(address)
        if box is None:
            raise DeliveryError("simulator session closed", permanent=True)
        box.touched = time.monotonic()
        box.messages.append({"id": next(self._ids), **message.to_dict()})

    def poll(self, session: str, after: int) -> list[dict[str, Any]]:
        box = self._boxes.get(session)
        if box is None:
            return []
        box.touched = time.monotonic()
        return [m for m in box.messages if m["id"] > after]

    def _expire(self) -> None:
        cutoff = time.monotonic() - MAILBOX_TTL_SECONDS
        for key in [k for k, box in self._boxes.items() if box.touched < cutoff]:
            del self._boxes[key]
        while len(self._boxes) >= MAX_MAILBOXES:
            self._boxes.pop(next(iter(self._boxes)))
