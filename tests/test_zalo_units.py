"""Zalo adapter pieces with no network: signatures, button limits, rating mapping, phone input.

Why: these are the rules most easily broken by a refactor (a signature compared with ``==``, a
question with six options sent as six buttons, a chip text stored raw, a phone echoed in an error).
"""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp.test_utils import TestClient

from bot.adapters.zalo.http import ZaloHttp
from bot.adapters.zalo.oa import ZaloOAChannel, capabilities
from bot.adapters.zalo.ratings import rating_answers
from bot.adapters.zalo.webhooks import TOKEN_TEXT, verify_signature
from bot.adapters.zalo.zns import Rating, parse_rating
from bot.channels import OutboundMessage, render
from bot.flows.definition import builtin_catalog
from bot.flows.engine import Prompt, PromptOption


def test_signature_with_or_without_prefix_and_nothing_else() -> None:
    body = b'{"app_id":"1","timestamp":"2"}'
    digest = hashlib.sha256(b"1" + body + b"2" + b"secret").hexdigest()
    assert verify_signature("mac=" + digest, body, "1", "2", "secret")
    assert verify_signature(digest, body, "1", "2", "secret")
    assert verify_signature("MAC=" + digest.upper(), body, "1", "2", "secret")
    assert not verify_signature(None, body, "1", "2", "secret")
    assert not verify_signature("mac=" + digest, body + b" ", "1", "2", "secret")
    assert not verify_signature("mac=" + digest, body, "1", "3", "secret")
    assert not verify_signature("mac=" + digest, body, "1", "2", "other")


def test_too_many_options_become_numbered_text() -> None:
    channel = ZaloOAChannel(ZaloHttp(1.0), None, "http://x", max_buttons=3)  # type: ignore[arg-type]
    options = [PromptOption(f"a:t:q:{i}", f"Lựa chọn {i}") for i in range(5)]
    message = render(Prompt("Câu hỏi?", "question", "q", options), channel.capabilities, "vi")
    assert not message.buttons and "5. Lựa chọn 4" in message.text
    body = channel.build("123", OutboundMessage("Hỏi", [(f"L{i}", f"a:t:q:{i}") for i in range(4)]))
    assert "attachment" not in body["message"] and "4. L3" in body["message"]["text"]
    body = channel.build("123", OutboundMessage("Hỏi", [("x" * 150, "a:t:q:1")]))
    [button] = body["message"]["attachment"]["payload"]["buttons"]
    assert button["type"] == "oa.query.hide" and len(button["title"]) == 100
    assert capabilities(5).max_buttons == 5


def test_rating_maps_stars_chips_and_scrubbed_note() -> None:
    survey = builtin_catalog().latest("zns-5-star")
    rating = Rating(
        "9" * 19, "t" * 32, 3, ["Hồ sơ đơn giản", "NHANH, ĐÚNG HẸN", "spam"], "email a@b.vn"
    )
    answers = {a.question_id: a for a in rating_answers(survey, rating, 1000)}
    assert answers["stars"].value == "3" and answers["stars"].satisfaction == 3
    assert answers["chips"].value == ["dossier", "time_cost"]
    assert answers["note"].text == "email [email]"
    assert parse_rating({"msgId": 1, "trackingId": "x", "rate": "6"}) is None
    assert parse_rating({"msgId": "1", "trackingId": "x", "rate": "5"}) is not None
    listed = parse_rating(
        {"msgId": "1", "trackingId": "x", "rate": 5, "submitDate": "1659750276218"}
    )
    hooked = parse_rating(
        {"msg_id": "1", "tracking_id": "x", "rate": 5, "submit_time": "1659750276218"}
    )
    assert listed is not None and hooked is not None
    assert listed.submit_ms == hooked.submit_ms == 1_659_750_276_218


def test_binding_texts() -> None:
    assert TOKEN_TEXT.match("#abcdefghijklmnop1234")
    assert TOKEN_TEXT.match("/start abcdefghijklmnop1234")
    assert not TOKEN_TEXT.match("hai long")


async def test_bad_phone_is_a_422_that_does_not_echo_it(
    client: TestClient[Any, Any], api_key: str
) -> None:
    response = await client.post(
        "/api/v1/results",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"dossier_code": "H29-1", "returned_at": "2026-11-20", "phone": "12345 999"},
    )
    assert response.status == 422
    text = await response.text()
    assert "phone" in text and "12345" not in text
