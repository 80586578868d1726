"""A fourth chat channel, written as a channel package would be: this module is its whole
package (``bot/adapters/<channel>/__init__.py`` in real life). It proves the seam: nothing
outside it knows this channel, and one line registers it (``packages=(*REGISTRY, PACKAGE)``).

The platform it stands for is text only (no buttons), signs nothing but sends a shared secret
header, and redelivers an event until it gets a 2xx; each event carries its own id.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from bot.adapters import gate
from bot.adapters.base import ChannelPackage, ChannelServices, NoLoops
from bot.channels import Capabilities, Channel, OutboundMessage
from bot.http_errors import error_response

NAME = "fakechat"
SECRET = "fake-shared-secret"
SECRET_HEADER = "X-Fakechat-Secret"


class FakeChat:
    """The delivery port: what was sent, by chat."""

    name = NAME
    capabilities = Capabilities(buttons=False, max_text_chars=1000)

    def __init__(self) -> None:
        self.sent: dict[str, list[OutboundMessage]] = defaultdict(list)

    async def send(self, address: str, message: OutboundMessage) -> None:
        self.sent[address].append(message)


class FakePlugin(NoLoops):
    def __init__(self, services: ChannelServices) -> None:
        self.channel = FakeChat()
        self.funnel = services.funnel
        self.inbox = services.inbox
        self.inbox.handle(NAME, self.process)
        self.max_depth = services.settings.max_json_depth
        self.processed = 0

    @property
    def channels(self) -> Mapping[str, Channel]:
        return {NAME: self.channel}

    def routes(self) -> Sequence[web.RouteDef]:
        return [web.post("/webhooks/fakechat", self.webhook, name="fakechat_webhook")]

    async def webhook(self, request: web.Request) -> web.Response:
        if not gate.secret_matches(request.headers.get(SECRET_HEADER), SECRET):
            return error_response(401, "invalid_secret", f"{SECRET_HEADER} does not match")
        event = await gate.read_event(request, self.max_depth)
        if not isinstance(event, dict) or not isinstance(event.get("id"), str):
            return error_response(400, "not_an_event", "an event has an id")
        chat = str(event.get("chat", ""))

        def answer(result: object) -> dict[str, Any]:
            if result is gate.DUPLICATE:
                return {"ok": True, "duplicate": True}
            return {"ok": True, "outcome": str(result)}

        return await self.inbox.take(NAME, NAME, event["id"], chat, event, answer)

    async def process(self, event: dict[str, Any]) -> str:
        """One stored event, from the inbox."""
        self.processed += 1
        chat, text = str(event.get("chat", "")), str(event.get("text", ""))
        return (await self.funnel.text(NAME, chat, text)).kind


PACKAGE = ChannelPackage(NAME, ("max_json_depth",), FakePlugin)
