"""Zalo Bot platform channel: a Telegram-like Bot API with no buttons.

Surveys arrive as numbered text (``render`` does it from ``buttons=False``) and answers are typed
digits, which the survey parser already understands. Command buttons (e.g. /delete's
confirmation) are shown as the command to type. Updates come by webhook (secret header checked in
``bot.adapters.zalo.webhooks``) or by long polling (``poll_once``), never both: Zalo refuses that.
"""

from __future__ import annotations

from typing import Any

from bot.adapters.zalo.http import ZaloHttp, ZaloTransportError
from bot.channels import Capabilities, DeliveryError, OutboundMessage

CAPABILITIES = Capabilities(buttons=False, max_text_chars=2000, max_buttons=0, reminders=True)
POLL_TIMEOUT_SECONDS = 30


class ZaloBotChannel:
    name = "zalo_bot"
    capabilities = CAPABILITIES

    def __init__(self, http: ZaloHttp, token: str, api_base_url: str) -> None:
        self.http = http
        self._base = f"{api_base_url.rstrip('/')}/bot{token}/"

    def text_of(self, message: OutboundMessage) -> str:
        text = message.text.strip() or "…"
        hints = []
        for label, payload in message.buttons:
            if payload.startswith("cmd:"):
                parts = [p for p in payload.split(":")[1:] if p]
                hints.append(f"• {label}: /{' '.join(parts)}")
            else:
                hints.append(f"• {label}")
        text = "\n".join([text, *hints])
        return text if len(text) <= 2000 else text[:1999] + "…"

    async def send(self, address: str, message: OutboundMessage) -> None:
        try:
            answer = await self.call(
                "sendMessage", {"chat_id": address, "text": self.text_of(message)}
            )
        except ZaloTransportError as exc:
            raise DeliveryError(f"zalo bot transport: {exc}") from None
        if answer.get("ok") is True:
            return
        code = answer.get("error_code", answer.get("errorCode"))
        if code == 429:
            raise DeliveryError("zalo bot rate limited", retry_after=5.0)
        if code in (400, 403, 404):
            raise DeliveryError(f"zalo bot {code}: chat not reachable", permanent=True)
        raise DeliveryError(f"zalo bot {code}")

    async def call(
        self, method: str, body: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        return await self.http.call("POST", self._base + method, json_body=body, timeout=timeout)

    async def poll_once(self) -> dict[str, Any] | None:
        """One long poll: an update, or None when nothing arrived (error 408)."""
        answer = await self.call(
            "getUpdates", {"timeout": str(POLL_TIMEOUT_SECONDS)}, timeout=POLL_TIMEOUT_SECONDS + 10
        )
        if answer.get("ok") is True and isinstance(answer.get("result"), dict):
            return dict(answer["result"])
        code = answer.get("error_code", answer.get("errorCode"))
        if code == 408:
            return None
        raise ZaloTransportError(f"getUpdates error {code}")
