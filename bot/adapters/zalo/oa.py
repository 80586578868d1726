"""Zalo Official Account channel: consultation (CS) messages with ``oa.query.hide`` buttons.

A tapped query button reaches us as an ordinary ``user_send_text`` whose text is the button
payload, so buttons carry our compact answer payloads (``a:<tag>:<qid>:<value>``) and the webhook
routes such texts as taps. Zalo allows few buttons per message, so a question with more options
is sent as numbered text (``render`` already does this from the capabilities; ``send`` also
degrades any over-long button list). CS messages only reach a citizen who interacted in the last
7 days: -230/-232 is a permanent refusal that lets the invitation fall back to another channel.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from bot.adapters.zalo.http import ZaloHttp, ZaloTransportError, zalo_error
from bot.adapters.zalo.tokens import TokenUnavailable, ZaloTokens
from bot.channels import Capabilities, DeliveryError, OutboundMessage

MAX_TEXT_CHARS = 2000
MAX_TITLE_CHARS = 100
MAX_PAYLOAD_CHARS = 1000
TOKEN_ERRORS = frozenset({-216, -220, -124})
#: The citizen cannot be reached on the OA now or for good: fall back, never retry.
UNREACHABLE = frozenset({-213, -217, -227, -230, -232, -244})
RATE_LIMITED = frozenset({-32})
OUT_OF_QUOTA = frozenset({-211, -218})


def capabilities(max_buttons: int) -> Capabilities:
    return Capabilities(
        buttons=True,
        max_text_chars=MAX_TEXT_CHARS,
        max_buttons=max_buttons,
        max_button_data_bytes=MAX_PAYLOAD_CHARS,
        # A CS message inside the 7-day window of the citizen's last interaction (free within
        # 48 h; ../reference/zalo.md section 6): the reminder follows 24 h after the invitation.
        reminders=True,
    )


def oa_delivery_error(code: int, message: str) -> DeliveryError:
    """Map an OA/ZNS ``error`` code to how the dispatcher should treat it."""
    if code in UNREACHABLE:
        return DeliveryError(f"zalo {code}: citizen not reachable", permanent=True)
    if code in RATE_LIMITED:
        return DeliveryError(f"zalo {code}: rate limited", retry_after=60.0)
    if code in OUT_OF_QUOTA:
        return DeliveryError(f"zalo {code}: out of quota", retry_after=3600.0)
    if code == -201 or code == -233:
        return DeliveryError(f"zalo {code}: refused as invalid", permanent=True)
    return DeliveryError(f"zalo {code}: {message[:80]}")


class ZaloOAChannel:
    """Sends CS messages through ``POST /v3.0/oa/message/cs`` with the shared OA token."""

    name = "zalo_oa"

    def __init__(
        self, http: ZaloHttp, tokens: ZaloTokens, openapi_base_url: str, max_buttons: int = 5
    ) -> None:
        self.http = http
        self.tokens = tokens
        self.url = openapi_base_url.rstrip("/") + "/v3.0/oa/message/cs"
        self.capabilities = capabilities(max_buttons)

    def build(self, user_id: str, message: OutboundMessage) -> dict[str, Any]:
        """The CS request body: text, plus query buttons when they fit Zalo's limits."""
        text = unicodedata.normalize("NFC", message.text).strip() or "…"
        buttons = [
            (label, payload)
            for label, payload in message.buttons
            if 1 <= len(payload) <= MAX_PAYLOAD_CHARS
        ]
        body: dict[str, Any] = {"recipient": {"user_id": user_id}, "message": {}}
        if buttons and len(buttons) <= self.capabilities.max_buttons:
            body["message"]["attachment"] = {
                "type": "template",
                "payload": {
                    "buttons": [
                        {
                            "title": (label.strip() or "…")[:MAX_TITLE_CHARS],
                            "type": "oa.query.hide",
                            "payload": payload,
                        }
                        for label, payload in buttons
                    ]
                },
            }
        elif buttons:
            lines = [f"{i}. {label}" for i, (label, _) in enumerate(buttons, 1)]
            text = "\n".join([text, *lines])
        body["message"]["text"] = _fit(text)
        return body

    async def send(self, address: str, message: OutboundMessage) -> None:
        body = self.build(address, message)
        try:
            token = await self.tokens.access_token()
            answer = await self._post(token, body)
            code = zalo_error(answer)
            if code in TOKEN_ERRORS:
                token = await self.tokens.invalidate(token)
                answer = await self._post(token, body)
                code = zalo_error(answer)
        except TokenUnavailable as exc:
            raise DeliveryError(exc.reason, retry_after=exc.retry_after, paused=True) from None
        except ZaloTransportError as exc:
            raise DeliveryError(f"zalo transport: {exc}") from None
        if code != 0:
            raise oa_delivery_error(code, str(answer.get("message", "")))

    async def _post(self, token: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.http.call(
            "POST", self.url, json_body=body, headers={"access_token": token}
        )


def _fit(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 1] + "…"
