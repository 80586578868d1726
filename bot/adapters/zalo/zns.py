"""ZNS: the service-rating template sent by phone number, and polling its ratings back.

Why a channel: the template is one outbox message like any other (durable, retried, recorded on
the ledger), addressed to the sealed ``84…`` phone. It needs no prior interaction with the OA,
which makes it the fallback when the OA's 7-day window is closed. The ``tracking_id`` is a random
id of ours (never the dossier code or the phone); ratings come back on the ``user_feedback``
webhook and, for webhooks Zalo lost, through ``rating/get`` (see ``fetch_ratings``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.adapters.zalo.http import ZaloHttp, ZaloTransportError, zalo_error
from bot.adapters.zalo.oa import TOKEN_ERRORS
from bot.adapters.zalo.tokens import TokenUnavailable, ZaloTokens
from bot.channels import Capabilities, DeliveryError, OutboundMessage

#: The rating template is its own survey, answered in the Zalo app (``bot/adapters/zalo/ratings``).
SURVEY = "zns-5-star"
CAPABILITIES = Capabilities(
    buttons=False,
    max_text_chars=2000,
    max_buttons=0,
    template_survey=SURVEY,
    forget_address_once_sent=True,
    # No follow-up: the service-rating template is one notification, rated inside it (stars,
    # chips, a note) with the answer coming back on ``user_feedback`` (../reference/zalo.md
    # section 4.2); a "reminder" would be a second template message, billed against the OA's
    # daily ZNS quota (section 6, ``-144``) and carrying no question of ours to answer, to a
    # phone that never chose to talk to the OA (a CS follow-up needs an interaction in the
    # last 7 days, section 0.1). The phone itself is forgotten once the template is accepted.
    reminders=False,
)
#: Refusals about the recipient or our configuration: retrying cannot help.
PERMANENT = frozenset(
    {-108, -109, -111, -112, -113, -1121, -1122, -1124, -114, -117, -118, -119, -131,
     -135, -139, -141, -146, -127}
)  # fmt: skip
#: Daily or night limits: try again later, the message stays in the outbox.
LATER = frozenset({-115, -133, -144, -147, -1441, -32})
PAGE_SIZE = 100
#: Refreshes one ``fetch_ratings`` run may make on token errors before it gives up: a Zalo that
#: keeps refusing fresh tokens must not make us burn through refresh after refresh.
MAX_REFRESHES_PER_RUN = 1


class RatingsUnavailable(Exception):
    """``rating/get`` could not be read this run (the reason names no identifier)."""


@dataclass(frozen=True, slots=True)
class Rating:
    """One rating as Zalo reports it (webhook or ``rating/get``)."""

    msg_id: str
    tracking_id: str
    rate: int
    feedbacks: list[str] = field(default_factory=list)
    note: str = ""
    #: When the citizen submitted it (epoch ms; 0 when Zalo did not say).
    submit_ms: int = 0


def parse_rating(item: Mapping[str, Any]) -> Rating | None:
    """Read either the webhook's snake_case or ``rating/get``'s camelCase; None if unusable."""
    msg_id = item.get("msg_id", item.get("msgId"))
    tracking = item.get("tracking_id", item.get("trackingId"))
    try:
        rate = int(item.get("rate", 0))
    except (TypeError, ValueError):
        return None
    feedbacks = item.get("feedbacks") or []
    note = item.get("note") or ""
    if not isinstance(msg_id, str | int) or not isinstance(tracking, str) or not 1 <= rate <= 5:
        return None
    if not isinstance(feedbacks, list) or not isinstance(note, str):
        return None
    submitted = item.get("submit_time", item.get("submitDate"))
    submit_ms = (
        int(submitted) if isinstance(submitted, str | int) and str(submitted).isdigit() else 0
    )
    return Rating(
        str(msg_id), tracking, rate, [str(f) for f in feedbacks][:10], note[:2000], submit_ms
    )


class ZnsChannel:
    """Sends the configured rating template; the message's ``extra`` carries the tracking id."""

    name = "zns"
    capabilities = CAPABILITIES

    def __init__(
        self,
        http: ZaloHttp,
        tokens: ZaloTokens,
        business_base_url: str,
        template_id: str,
        template_data: str = "{}",
        mode: str | None = None,
    ) -> None:
        self.http = http
        self.tokens = tokens
        self.base = business_base_url.rstrip("/")
        self.template_id = template_id
        try:
            data = json.loads(template_data or "{}")
        except ValueError:
            raise ValueError("SURVEYBOT_ZALO_ZNS_TEMPLATE_DATA is not a JSON object") from None
        if not isinstance(data, dict):
            raise ValueError("SURVEYBOT_ZALO_ZNS_TEMPLATE_DATA is not a JSON object")
        self.template_data = {str(k): str(v) for k, v in data.items()}
        self.mode = mode or None

    def build(self, phone: str, message: OutboundMessage) -> dict[str, Any]:
        tracking = message.extra.get("zns_tracking_id")
        if not isinstance(tracking, str) or not tracking:
            raise DeliveryError("zns message without a tracking id", permanent=True)
        params = {str(k): str(v) for k, v in (message.extra.get("zns_params") or {}).items()}
        data = {k: _format(v, params) for k, v in self.template_data.items()}
        body: dict[str, Any] = {
            "phone": phone,
            "template_id": self.template_id,
            "template_data": data,
            "tracking_id": tracking,
        }
        if self.mode:
            body["mode"] = self.mode
        return body

    async def send(self, address: str, message: OutboundMessage) -> None:
        body = self.build(address, message)
        url = self.base + "/message/template"
        try:
            token = await self.tokens.access_token()
            answer = await self.http.call(
                "POST", url, json_body=body, headers={"access_token": token}
            )
            code = zalo_error(answer)
            if code in TOKEN_ERRORS:
                token = await self.tokens.invalidate(token)
                answer = await self.http.call(
                    "POST", url, json_body=body, headers={"access_token": token}
                )
                code = zalo_error(answer)
        except TokenUnavailable as exc:
            raise DeliveryError(exc.reason, retry_after=exc.retry_after, paused=True) from None
        except ZaloTransportError as exc:
            raise DeliveryError(f"zns transport: {exc}") from None
        if code == 0:
            return
        if code in PERMANENT:
            raise DeliveryError(f"zns {code}: refused", permanent=True)
        if code in LATER:
            raise DeliveryError(
                f"zns {code}: limit reached", retry_after=3600.0 if code != -32 else 60.0
            )
        raise DeliveryError(f"zns {code}")

    async def fetch_ratings(
        self, from_ms: int, to_ms: int, max_refreshes: int = MAX_REFRESHES_PER_RUN
    ) -> list[Rating]:
        """Every rating of our template submitted in the window, page by page. Raises
        ``RatingsUnavailable`` when a page keeps failing, e.g. the token is still refused after
        ``max_refreshes`` refreshes (``TokenUnavailable`` and ``ZaloTransportError`` pass)."""
        url = self.base + "/rating/get"
        out: list[Rating] = []
        offset = 0
        refreshes = 0
        token = await self.tokens.access_token()
        for _ in range(1000):
            params = {
                "template_id": self.template_id,
                "from_time": str(from_ms),
                "to_time": str(to_ms),
                "offset": str(offset),
                "limit": str(PAGE_SIZE),
            }
            answer = await self.http.call(
                "GET", url, params=params, headers={"access_token": token}
            )
            code = zalo_error(answer)
            if code in TOKEN_ERRORS:
                if refreshes >= max_refreshes:
                    raise RatingsUnavailable(f"token still refused (error {code})")
                refreshes += 1
                token = await self.tokens.invalidate(token)
                continue
            if code != 0:
                raise RatingsUnavailable(f"rating/get error {code}")
            data = answer.get("data") or {}
            items = data.get("data") if isinstance(data, dict) else None
            if not isinstance(items, list) or not items:
                break
            out += [r for r in (parse_rating(i) for i in items if isinstance(i, dict)) if r]
            offset += len(items)
            total = data.get("total")
            if isinstance(total, int | str) and str(total).isdigit() and offset >= int(total):
                break
        return out


def _format(template: str, params: Mapping[str, str]) -> str:
    """Fill {agency}/{procedure}; an unknown placeholder is left as written."""
    out = template
    for key, value in params.items():
        out = out.replace("{" + key + "}", value)
    return out
