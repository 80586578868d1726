"""Tests of the local Zalo emulator over real HTTP.

Why: adapters are tested against this emulator, so the emulator itself must provably enforce the
documented rules (token rotation, 7-day window, signatures, ZNS checks, Bot long-poll semantics).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.emulators.zalo import (
    CS_WINDOW_MS,
    ZNS_PHONE_FORMS,
    ZaloEmulator,
    ZnsTemplate,
    sign_event,
    verify_event_signature,
    vn_epoch_ms,
)

START_MS = vn_epoch_ms(2026, 11, 2, 10, 0)  # a Monday, 10:00 in Vietnam
ACCESS = "AT-test-initial"
RATING_TID = "355330"


class Receiver:
    """A tiny webhook endpoint that records raw requests and answers as scripted."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses: deque[int] = deque()
        self.delays: deque[float] = deque()
        self.url = ""
        self._runner: web.AppRunner | None = None
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.requests.append((dict(request.headers), raw))
        self.arrived.set()
        if self.delays:
            await asyncio.sleep(self.delays.popleft())
        status = self.statuses.popleft() if self.statuses else 200
        return web.Response(status=status, text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for _, raw in self.requests]

    def named(self, name: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, raw) for h, raw in self.requests if json.loads(raw).get("event_name") == name]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    await rec.start()
    yield rec
    await rec.stop()


@pytest.fixture
async def emu(receiver: Receiver) -> AsyncIterator[ZaloEmulator]:
    emulator = ZaloEmulator(
        access_token=ACCESS,
        refresh_token="RT-initial",
        webhook_url=receiver.url,
        start_time_ms=START_MS,
        clock_runs=False,
        seed=42,
        webhook_timeout=0.3,
        client_timeout=0.2,
        bot_poll_time_scale=0.01,
        rating_template_id=RATING_TID,
        rating_template_params=("customer_name", "dossier_code"),
        zns_admin_phones=["84900000001"],
    )
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post_json(
    http: aiohttp.ClientSession, url: str, body: Any, token: str | None = ACCESS
) -> tuple[int, dict[str, Any]]:
    headers = {"access_token": token} if token else {}
    async with http.post(url, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def get_json(
    http: aiohttp.ClientSession, url: str, params: dict[str, str], token: str | None = ACCESS
) -> tuple[int, dict[str, Any]]:
    headers = {"access_token": token} if token else {}
    async with http.get(url, params=params, headers=headers) as resp:
        return resp.status, await resp.json()


def cs_body(user_id: str, text: str, buttons: list[dict[str, Any]] | None = None) -> dict:
    message: dict[str, Any] = {"text": text}
    if buttons is not None:
        message["attachment"] = {"type": "template", "payload": {"buttons": buttons}}
    return {"recipient": {"user_id": user_id}, "message": message}


RATE_BUTTONS: list[dict[str, Any]] = [
    {"title": "Rất hài lòng", "type": "oa.query.hide", "payload": "#rate_5"},
    {"title": "Hài lòng", "type": "oa.query.show", "payload": "#rate_4"},
    {"title": "Xem kết quả", "type": "oa.open.url", "payload": {"url": "https://dvc.example/x"}},
]


# ------------------------------------------------------------------------------ OAuth


EXPIRED_ANSWERS = {
    -220: {"error": -220, "message": "access_token is expired or removed"},
    -216: {"error": -216, "message": "Access token is invalid"},
}


def test_an_expired_token_is_minus_220_by_default() -> None:
    assert ZaloEmulator().expired_token_code == -220  # zalo.md §1.5: "expired or removed"


@pytest.mark.parametrize("expired_code", list(EXPIRED_ANSWERS))
async def test_token_refresh_rotation_reuse_and_expiry(
    emu: ZaloEmulator, http: aiohttp.ClientSession, expired_code: int
) -> None:
    emu.expired_token_code = expired_code
    url = emu.oauth_url + "/v4/oa/access_token"
    form = {"refresh_token": "RT-initial", "app_id": emu.app_id, "grant_type": "refresh_token"}

    async with http.post(url, data=form, headers={"secret_key": "wrong"}) as resp:
        body = await resp.json()
    assert resp.status == 200 and "access_token" not in body and body["error"] < 0

    async with http.post(url, data=form, headers={"secret_key": emu.app_secret_key}) as resp:
        tokens = await resp.json()
    assert resp.status == 200
    assert tokens["expires_in"] == "90000"
    assert tokens["refresh_token"] != "RT-initial"
    new_access, new_refresh = tokens["access_token"], tokens["refresh_token"]

    # The old refresh token is single-use.
    async with http.post(url, data=form, headers={"secret_key": emu.app_secret_key}) as resp:
        reused = await resp.json()
    assert "access_token" not in reused and reused["error"] == -14014

    # JSON instead of a form is refused.
    form2 = dict(form, refresh_token=new_refresh)
    async with http.post(url, json=form2, headers={"secret_key": emu.app_secret_key}) as resp:
        assert "access_token" not in await resp.json()

    status, oa = await get_json(http, emu.openapi_url + "/v2.0/oa/getoa", {}, new_access)
    assert status == 200 and oa["error"] == 0 and oa["data"]["oa_id"] == emu.oa_id

    emu.advance(90_000 - 1)
    _, oa = await get_json(http, emu.openapi_url + "/v2.0/oa/getoa", {}, new_access)
    assert oa["error"] == 0
    emu.advance(1)
    _, oa = await get_json(http, emu.openapi_url + "/v2.0/oa/getoa", {}, new_access)
    assert oa == EXPIRED_ANSWERS[expired_code]
    _, oa = await get_json(http, emu.openapi_url + "/v2.0/oa/getoa", {}, None)
    assert oa == EXPIRED_ANSWERS[-216]  # no token at all is "invalid" under both readings
    _, zns = await get_json(http, emu.business_url + "/message/quota", {}, new_access)
    assert zns["error"] == -124

    # The rotated refresh token still works after the access token expired.
    async with http.post(url, data=form2, headers={"secret_key": emu.app_secret_key}) as resp:
        again = await resp.json()
    assert again["expires_in"] == "90000"
    _, oa = await get_json(http, emu.openapi_url + "/v2.0/oa/getoa", {}, again["access_token"])
    assert oa["error"] == 0
    assert emu.refresh_count == 2


@pytest.mark.parametrize("revoke", [True, False])
async def test_a_refresh_revokes_the_access_token_it_replaces(
    http: aiohttp.ClientSession, revoke: bool
) -> None:
    emu = ZaloEmulator(
        access_token=ACCESS,
        refresh_token="RT-initial",
        start_time_ms=START_MS,
        clock_runs=False,
        seed=5,
        revoke_replaced_access_token=revoke,
    )
    await emu.start()
    try:
        form = {"refresh_token": "RT-initial", "app_id": emu.app_id, "grant_type": "refresh_token"}
        async with http.post(
            emu.oauth_url + "/v4/oa/access_token",
            data=form,
            headers={"secret_key": emu.app_secret_key},
        ) as resp:
            fresh = (await resp.json())["access_token"]
        getoa = emu.openapi_url + "/v2.0/oa/getoa"
        _, old = await get_json(http, getoa, {}, ACCESS)
        _, zns = await get_json(http, emu.business_url + "/message/quota", {}, ACCESS)
        _, new = await get_json(http, getoa, {}, fresh)
        assert new["error"] == 0
        if revoke:
            assert old["error"] == emu.expired_token_code and zns["error"] == -124
        else:
            assert old["error"] == 0 and zns["error"] == 0
    finally:
        await emu.stop()


# ------------------------------------------------------------------------------ OA messaging


async def test_cs_buttons_then_tap_gives_signed_user_send_text(
    emu: ZaloEmulator, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    uid = await emu.follow(display_name="Nguyễn Văn A")
    status, resp = await post_json(
        http, emu.openapi_url + "/v3.0/oa/message/cs", cs_body(uid, "Đánh giá?", RATE_BUTTONS)
    )
    assert status == 200 and resp["error"] == 0, resp
    data = resp["data"]
    msg_id = data["message_id"]
    assert isinstance(msg_id, str) and msg_id.isdigit() and 18 <= len(msg_id) <= 19
    assert data["user_id"] == uid and data["sent_time"] == str(START_MS)
    assert data["quota"]["quota_type"] == "reply"

    last = emu.last_oa_message(uid)
    assert last.buttons == [
        ("Rất hài lòng", "#rate_5"),
        ("Hài lòng", "#rate_4"),
        ("Xem kết quả", "https://dvc.example/x"),
    ]
    with pytest.raises(ValueError):
        await emu.tap_query_button(uid, msg_id, "#rate_1")
    with pytest.raises(ValueError):  # url buttons are not query buttons
        await emu.tap_query_button(uid, msg_id, "https://dvc.example/x")

    await emu.tap_query_button(uid, msg_id, "#rate_5")
    await emu.wait_idle()

    names = [e["event_name"] for e in receiver.events()]
    assert names == ["follow", "oa_send_text", "user_send_text"]
    headers, raw = receiver.named("user_send_text")[0]
    event = json.loads(raw)
    assert event["message"]["text"] == "#rate_5"
    assert event["sender"]["id"] == uid and event["recipient"]["id"] == emu.oa_id
    assert event["app_id"] == emu.app_id and isinstance(event["timestamp"], str)
    expected = sign_event(emu.app_id, raw, event["timestamp"], emu.oa_secret)
    assert headers["X-ZEvent-Signature"] == expected
    assert expected.startswith("mac=") and len(expected) == 68
    assert verify_event_signature(headers["X-ZEvent-Signature"], raw, emu.oa_secret)
    assert not verify_event_signature(headers["X-ZEvent-Signature"], raw, "other-secret")
    assert "num_retry" not in headers
    for h, body in receiver.requests:
        assert verify_event_signature(h["X-ZEvent-Signature"], body, emu.oa_secret)

    follow = receiver.events()[0]
    assert follow["follower"]["id"] == uid and follow["oa_id"] == emu.oa_id
    echo = receiver.events()[1]
    assert echo["sender"]["id"] == emu.oa_id and echo["message"]["msg_id"] == msg_id


async def test_seven_day_window_and_validation(
    emu: ZaloEmulator, http: aiohttp.ClientSession
) -> None:
    url = emu.openapi_url + "/v3.0/oa/message/cs"
    old = emu.add_user(last_interaction_ms=START_MS - CS_WINDOW_MS - 1)
    mid = emu.add_user(last_interaction_ms=START_MS - 3 * 86_400_000)
    fresh = emu.add_user(last_interaction_ms=START_MS)

    _, r = await post_json(http, url, cs_body(old.user_id, "hi"))
    assert r == {"error": -230, "message": "User has not interacted with the OA in the past 7 days"}
    _, r = await post_json(http, url, cs_body(mid.user_id, "hi"))
    assert r["error"] == 0 and r["data"]["quota"]["quota_type"] == "purchase_quota"
    assert emu.last_oa_message(mid.user_id).billed

    # The window closes exactly after 7 days (the 25 h access token has expired by then).
    emu.advance(7 * 86_400)
    token, _ = emu.issue_tokens()
    _, r = await post_json(http, url, cs_body(fresh.user_id, "hi"), token)
    assert r["error"] == 0
    emu.advance(1)
    _, r = await post_json(http, url, cs_body(fresh.user_id, "hi"), token)
    assert r["error"] == -230
    await emu.user_send_text(fresh.user_id, "xin chào")  # re-opens it
    _, r = await post_json(http, url, cs_body(fresh.user_id, "hi"), token)
    assert r["error"] == 0

    _, r = await post_json(http, url, cs_body(fresh.user_id, "x" * 2000), token)
    assert r["error"] == 0
    _, r = await post_json(http, url, cs_body(fresh.user_id, "x" * 2001), token)
    assert r["error"] == -201
    _, r = await post_json(http, url, cs_body("1234567890123456789", "hi"), token)
    assert r["error"] == -201
    _, r = await post_json(http, url, cs_body(int(fresh.user_id), "hi"), token)  # type: ignore[arg-type]
    assert r["error"] == -201  # ids must be strings
    bad = [{"title": "x", "type": "oa.click", "payload": "y"}]
    _, r = await post_json(http, url, cs_body(fresh.user_id, "hi", bad), token)
    assert r["error"] == -201
    too_many = [{"title": str(i), "type": "oa.query.hide", "payload": f"#{i}"} for i in range(6)]
    _, r = await post_json(http, url, cs_body(fresh.user_id, "hi", too_many), token)
    assert r["error"] == -201
    body = cs_body(fresh.user_id, "hi", RATE_BUTTONS)
    body["message"]["attachment"]["payload"]["template_type"] = "list"
    _, r = await post_json(http, url, body, token)
    assert r["error"] == -233
    body["message"]["attachment"]["payload"]["template_type"] = "button"
    _, r = await post_json(http, url, body, token)
    assert r["error"] == 0
    _, r = await post_json(http, url, cs_body(fresh.user_id, "hi"), None)
    assert r["error"] == -216
    async with http.post(
        url, json=cs_body(fresh.user_id, "hi"), headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        assert (await resp.json())["error"] == -216
    _, r = await post_json(
        http, emu.openapi_url + "/v2.0/oa/message", cs_body(fresh.user_id, "x"), token
    )
    assert r["error"] == -240


async def test_user_detail_and_quota(emu: ZaloEmulator, http: aiohttp.ClientSession) -> None:
    uid = await emu.follow(display_name="Trần Thị B", phone="84912345678")
    _, r = await get_json(
        http, emu.openapi_url + "/v3.0/oa/user/detail", {"data": json.dumps({"user_id": uid})}
    )
    assert r["error"] == 0
    assert r["data"]["display_name"] == "Trần Thị B"
    assert r["data"]["user_is_follower"] is True
    assert r["data"]["user_last_interaction_date"] == "02/11/2026"
    assert r["data"]["shared_info"]["phone"] == "84912345678"
    _, r = await post_json(http, emu.openapi_url + "/v3.0/oa/quota/message", {"user_id": uid})
    assert r["data"]["last_interaction"] == str(START_MS)
    await emu.unfollow(uid)
    _, r = await get_json(
        http, emu.openapi_url + "/v3.0/oa/user/detail", {"data": json.dumps({"user_id": uid})}
    )
    assert r["data"]["user_is_follower"] is False


# ------------------------------------------------------------------------------ ZNS


async def test_zns_send_rate_feedback_and_rating_get(
    emu: ZaloEmulator, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    url = emu.business_url + "/message/template"
    body = {
        "phone": "84987654321",
        "template_id": RATING_TID,
        "template_data": {"customer_name": "Lê Văn C", "dossier_code": "HS-001"},
        "tracking_id": "dossier-001",
    }
    _, r = await post_json(http, url, body)
    assert r["error"] == 0, r
    msg_id = r["data"]["msg_id"]
    assert msg_id.isdigit() and 18 <= len(msg_id) <= 19
    assert r["data"]["quota"] == {"dailyQuota": "500", "remainingQuota": "499"}
    sent = emu.zns_sent_to("84987654321")[0]
    assert (sent.template_id, sent.tracking_id, sent.msg_id) == (RATING_TID, "dossier-001", msg_id)

    _, st = await get_json(http, emu.business_url + "/message/status", {"message_id": msg_id})
    assert st["data"]["status"] == 0

    emu.advance(60)
    await emu.zns_rate(msg_id, 4, ["Nhân viên nhiệt tình"], "Nhanh")
    await emu.wait_idle()
    names = [e["event_name"] for e in receiver.events()]
    assert names == ["user_received_message", "user_feedback"]
    delivery = receiver.events()[0]
    assert delivery["recipient"]["id"] == "84987654321"
    assert delivery["message"]["tracking_id"] == "dossier-001"
    headers, raw = receiver.named("user_feedback")[0]
    assert verify_event_signature(headers["X-ZEvent-Signature"], raw, emu.oa_secret)
    fb = json.loads(raw)["message"]
    assert fb["msg_id"] == msg_id and fb["tracking_id"] == "dossier-001"
    assert fb["rate"] == 4 and fb["feedbacks"] == ["Nhân viên nhiệt tình"] and fb["note"] == "Nhanh"

    params = {
        "template_id": RATING_TID,
        "from_time": str(START_MS),
        "to_time": str(START_MS + 3_600_000),
        "offset": "0",
        "limit": "100",
    }
    _, rg = await get_json(http, emu.business_url + "/rating/get", params)
    assert rg["error"] == 0 and rg["data"]["total"] == 1
    item = rg["data"]["data"][0]
    assert item["msgId"] == msg_id and item["trackingId"] == "dossier-001" and item["rate"] == 4
    assert item["submitDate"] == str(START_MS + 60_000)
    _, rg_post = await post_json(http, emu.business_url + "/rating/get", params)
    assert rg_post == rg
    _, st = await get_json(http, emu.business_url + "/message/status", {"message_id": msg_id})
    assert st["data"]["status"] == 1


async def test_lost_feedback_webhook_still_in_rating_get(
    emu: ZaloEmulator, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    body = {
        "phone": "84987654322",
        "template_id": RATING_TID,
        "template_data": {"customer_name": "D", "dossier_code": "HS-2"},
        "tracking_id": "dossier-2",
    }
    _, r = await post_json(http, emu.business_url + "/message/template", body)
    emu.drop_next_webhook(event_name="user_feedback")
    await emu.zns_rate(r["data"]["msg_id"], 2)
    await emu.wait_idle()
    assert [e["event_name"] for e in receiver.events()] == ["user_received_message"]
    assert emu.webhooks_named("user_feedback")[0].dropped
    params = {"template_id": RATING_TID, "from_time": "0", "to_time": str(START_MS + 1)}
    _, rg = await get_json(http, emu.business_url + "/rating/get", params)
    assert [i["trackingId"] for i in rg["data"]["data"]] == ["dossier-2"]


async def test_zns_validation(http: aiohttp.ClientSession) -> None:
    emu = ZaloEmulator(
        access_token=ACCESS,
        zns_phone_forms="country_code_only",  # the strict reading of zalo.md §4.1 / §8
        start_time_ms=vn_epoch_ms(2026, 11, 2, 23, 0),
        clock_runs=False,
        zns_daily_quota=1,
        zns_templates=[
            ZnsTemplate("1001", ("name",)),
            ZnsTemplate("1002", ("name",), night_restricted=True, template_type=1),
        ],
        zns_admin_phones=["84900000001"],
    )
    await emu.start()
    try:
        url = emu.business_url + "/message/template"

        def body(**kw: Any) -> dict[str, Any]:
            base: dict[str, Any] = {
                "phone": "84987654321",
                "template_id": "1001",
                "template_data": {"name": "A"},
                "tracking_id": "t1",
            }
            base.update(kw)
            return base

        for phone in ("0987654321", "+84987654321", "987654321"):
            assert (await post_json(http, url, body(phone=phone)))[1]["error"] == -108
        assert (await post_json(http, url, body(template_id="9999")))[1]["error"] == -109
        assert (await post_json(http, url, body(template_data={})))[1]["error"] == -111
        assert (await post_json(http, url, body(template_data={"x": "1"})))[1]["error"] == -1122
        r = (await post_json(http, url, body(template_data={"name": "A", "x": "1"})))[1]
        assert r["error"] == -112
        assert (await post_json(http, url, body(mode="development")))[1]["error"] == -127
        assert (await post_json(http, url, body(template_id="1002")))[1]["error"] == -133
        _, ok = await post_json(http, url, body())
        assert ok["error"] == 0 and ok["data"]["quota"]["remainingQuota"] == "0"
        assert (await post_json(http, url, body()))[1]["error"] == -144
        emu.advance(86_400)  # next Vietnam day: quota resets
        assert (await post_json(http, url, body()))[1]["error"] == 0
        _, info = await get_json(
            http, emu.business_url + "/template/info/v2", {"template_id": "1001"}
        )
        assert info["data"]["status"] == "ENABLE"
        assert [p["name"] for p in info["data"]["listParams"]] == ["name"]
        with pytest.raises(ValueError):  # template 1001 is a rating template, 1002 is not
            msg = emu.zns_messages[0]
            msg.template_id = "1002"
            await emu.zns_rate(msg.msg_id, 5)
    finally:
        await emu.stop()


@pytest.mark.parametrize("forms", sorted(ZNS_PHONE_FORMS))
async def test_zns_phone_forms(http: aiohttp.ClientSession, forms: str) -> None:
    """zalo.md §4.1: ``84…`` always; ``0…`` and bare national digits on the error page's (S6)
    reading; anything else is -108 (§4.4)."""
    emu = ZaloEmulator(access_token=ACCESS, start_time_ms=START_MS, clock_runs=False, seed=3,
                       zns_phone_forms=forms)  # fmt: skip
    await emu.start()
    try:
        url = emu.business_url + "/message/template"
        accepted = ["84987654321", "0987654321", "987654321"]
        if forms == "country_code_only":
            accepted = accepted[:1]
        for phone in ["84987654321", "0987654321", "987654321", "+84987654321", "84087654321"]:
            body = {"phone": phone, "template_id": RATING_TID, "tracking_id": "t",
                    "template_data": {"customer_name": "A", "dossier_code": "B"}}  # fmt: skip
            _, answer = await post_json(http, url, body)
            assert answer["error"] == (0 if phone in accepted else -108), phone
        sent = emu.zns_sent_to("84987654321")
        assert [m.phone_as_sent for m in sent] == accepted  # each recorded as 84…
        assert emu.zns_messages == sent
    finally:
        await emu.stop()


# ------------------------------------------------------------------------------ Bot platform


async def test_bot_polling_and_webhook(
    emu: ZaloEmulator, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    base = f"{emu.bot_url}/bot{emu.bot_token}"
    async with http.post(base + "/getMe", json={}) as resp:
        me = await resp.json()
    assert me["ok"] and me["result"]["id"] == emu.bot_token.split(":")[0]
    async with http.post(f"{emu.bot_url}/bot123:nope/getMe", json={}) as resp:
        assert resp.status == 401 and (await resp.json())["error_code"] == 401

    async with http.post(base + "/getUpdates", json={"timeout": "30"}) as resp:
        empty = await resp.json()
    assert empty["ok"] is False and empty["error_code"] == 408

    chat = await emu.bot_user_send_text(None, "xin chào")
    async with http.post(base + "/getUpdates", json={"timeout": "30"}) as resp:
        upd = await resp.json()
    assert upd["ok"] and isinstance(upd["result"], dict)
    assert upd["result"]["event_name"] == "message.text.received"
    assert upd["result"]["message"]["chat"]["id"] == chat
    assert upd["result"]["message"]["text"] == "xin chào"

    async with http.post(base + "/sendMessage", json={"chat_id": chat, "text": "Chọn 1-5"}) as r:
        sent = await r.json()
    assert sent["ok"] and sent["result"]["message_id"].isdigit()
    assert [m.text for m in emu.bot_messages(chat)] == ["Chọn 1-5"]
    async with http.post(base + "/sendMessage", json={"chat_id": chat, "text": ""}) as r:
        assert (await r.json())["ok"] is False
    async with http.post(base + "/sendMessage", json={"chat_id": chat, "text": "x" * 2001}) as r:
        assert (await r.json())["ok"] is False
    async with http.post(base + "/sendMessage", json={"chat_id": "42", "text": "x"}) as r:
        assert (await r.json())["ok"] is False
    async with http.post(base + "/sendChatAction", json={"chat_id": chat, "action": "typing"}) as r:
        assert await r.json() == {"ok": True}

    hook = {"url": receiver.url, "secret_token": "s3cret-token"}
    async with http.post(base + "/setWebhook", json=dict(hook, secret_token="short")) as r:
        assert (await r.json())["ok"] is False
    async with http.post(base + "/setWebhook", json=hook) as r:
        assert (await r.json())["ok"]
    async with http.post(base + "/getWebhookInfo", json={}) as r:
        assert (await r.json())["result"]["url"] == receiver.url
    async with http.post(base + "/getUpdates", json={"timeout": "1"}) as r:
        assert (await r.json())["ok"] is False  # polling refused while a webhook is set

    await emu.bot_user_send_text(chat, "5")
    await emu.wait_idle()
    headers, raw = receiver.requests[-1]
    assert headers["X-Bot-Api-Secret-Token"] == "s3cret-token"
    assert json.loads(raw)["message"]["text"] == "5"

    async with http.post(base + "/deleteWebhook", json={}) as r:
        assert (await r.json())["ok"]
    await emu.bot_user_send_text(chat, "4")
    async with http.post(base + "/getUpdates", json={"timeout": "30"}) as r:
        assert (await r.json())["result"]["message"]["text"] == "4"


# ------------------------------------------------------------------------------ faults & limits


async def test_fault_injection(emu: ZaloEmulator, http: aiohttp.ClientSession) -> None:
    uid = await emu.follow()
    url = emu.openapi_url + "/v3.0/oa/message/cs"
    emu.inject("/v3.0/oa/message/cs", "500")
    async with http.post(url, json=cs_body(uid, "a"), headers={"access_token": ACCESS}) as resp:
        assert resp.status == 500
    emu.inject("message/cs", "expired_token")
    assert (await post_json(http, url, cs_body(uid, "a")))[1]["error"] == -220
    emu.inject(None, "rate_limit")
    assert (await post_json(http, url, cs_body(uid, "a")))[1]["error"] == -32
    emu.inject("/message/template", "quota", count=2)
    zns = {
        "phone": "84987654321",
        "template_id": RATING_TID,
        "template_data": {"customer_name": "A", "dossier_code": "B"},
    }
    for _ in range(2):
        assert (await post_json(http, emu.business_url + "/message/template", zns))[1][
            "error"
        ] == -144
    assert (await post_json(http, emu.business_url + "/message/template", zns))[1]["error"] == 0
    emu.inject("sendMessage", "rate_limit")
    chat = await emu.bot_user_send_text(None, "hi")
    async with http.post(
        f"{emu.bot_url}/bot{emu.bot_token}/sendMessage", json={"chat_id": chat, "text": "x"}
    ) as resp:
        assert (await resp.json())["error_code"] == 429

    emu.inject("message/cs", "timeout")
    with pytest.raises(asyncio.TimeoutError):
        await http.post(
            url,
            json=cs_body(uid, "late"),
            headers={"access_token": ACCESS},
            timeout=aiohttp.ClientTimeout(total=emu.client_timeout),
        )
    await emu.wait_idle()
    # The request was processed anyway, as a real timed-out request may be.
    assert emu.last_oa_message(uid).text == "late"
    assert [c.fault for c in emu.calls_to("message/cs")] == [
        "500",
        "expired_token",
        "rate_limit",
        "timeout",
    ]
    with pytest.raises(ValueError):
        emu.inject(None, "nonsense")


async def test_oauth_faults(emu: ZaloEmulator, http: aiohttp.ClientSession) -> None:
    url = emu.oauth_url + "/v4/oa/access_token"
    form = {"refresh_token": "RT-initial", "app_id": emu.app_id, "grant_type": "refresh_token"}
    headers = {"secret_key": emu.app_secret_key}
    emu.inject("/v4/oa/access_token", "429")
    async with http.post(url, data=form, headers=headers) as resp:
        assert resp.status == 429 and await resp.text() == "Too Many Requests"
    for kind, code in [("rate_limit", -32), ("unknown_error", -14099), ("bad_secret", -14005),
                       ("expired_token", -14014)]:  # fmt: skip
        emu.inject("/v4/oa/access_token", kind)
        async with http.post(url, data=form, headers=headers) as resp:
            body = await resp.json()
        assert resp.status == 200 and body["error"] == code and "access_token" not in body
    async with http.post(url, data=form, headers=headers) as resp:
        assert "access_token" in await resp.json()  # no fault consumed the refresh token
    assert emu.refresh_count == 1


async def test_rate_limit_per_minute(http: aiohttp.ClientSession) -> None:
    emu = ZaloEmulator(
        access_token=ACCESS, rate_limit_per_minute=3, clock_runs=False, start_time_ms=START_MS
    )
    await emu.start()
    try:
        url = emu.openapi_url + "/v2.0/oa/getoa"
        for expected in (0, 0, 0, -32):
            async with http.get(url, headers={"access_token": ACCESS}) as resp:
                assert (await resp.json())["error"] == expected
                assert resp.headers["X-RateLimit-Limit"] == "3"
        emu.advance(60)
        assert (await get_json(http, url, {}))[1]["error"] == 0
    finally:
        await emu.stop()


async def test_webhook_redelivery_with_num_retry(emu: ZaloEmulator, receiver: Receiver) -> None:
    receiver.statuses.extend([500])
    receiver.delays.extend([0.0, 0.5])  # second attempt is slower than webhook_timeout (0.3 s)
    uid = await emu.follow()
    await emu.wait_idle()
    assert len(receiver.requests) == 1  # the ladder runs on the virtual clock: nothing yet
    [pending] = emu.pending_redeliveries
    assert pending.due_ms == emu.now_ms() + 30_000
    emu.advance(29)
    await emu.wait_idle()
    assert len(receiver.requests) == 1
    emu.advance(1)  # 30 s: the first rung
    await emu.wait_idle()
    assert len(receiver.requests) == 2
    emu.advance(300)  # 5 min later: the second rung
    await emu.wait_idle()
    assert len(receiver.requests) == 3 and not emu.pending_redeliveries
    assert [h.get("num_retry") for h, _ in receiver.requests] == [None, "1", "2"]
    assert len({raw for _, raw in receiver.requests}) == 1  # identical body on redelivery
    record = emu.webhooks_named("follow")[0]
    assert record.delivered and record.attempts == 3 and record.statuses[:2] == [500, "timeout"]
    assert json.loads(receiver.requests[0][1])["follower"]["id"] == uid


async def test_ids_are_long_decimal_strings(emu: ZaloEmulator) -> None:
    ids = {emu.new_id() for _ in range(200)}
    assert all(i.isdigit() and 18 <= len(i) <= 19 and int(i) > 2**53 for i in ids)
    assert len(ids) == 200
    assert sign_event("1", b"{}", "2", "s") == sign_event("1", b"{}", "2", "s")


@pytest.mark.parametrize("retry_on", ["connect", "non_200"])
async def test_retry_trigger_readings(receiver: Receiver, retry_on: str) -> None:
    """A 503 is redelivered only under the "any non-200" reading; a timeout under both."""
    emu = ZaloEmulator(
        webhook_url=receiver.url,
        start_time_ms=START_MS,
        clock_runs=False,
        webhook_timeout=0.3,
        retry_on=retry_on,
    )
    await emu.start()
    try:
        receiver.statuses.extend([503])
        await emu.follow()
        await emu.wait_idle()
        assert len(emu.pending_redeliveries) == (1 if retry_on == "non_200" else 0)
        await emu.run_ladder()
        assert len(receiver.requests) == (2 if retry_on == "non_200" else 1)
        receiver.delays.extend([0.5])  # slower than the deadline: retried in both readings
        await emu.follow()
        await emu.wait_idle()
        [late] = emu.pending_redeliveries
        assert late.statuses == ["timeout"]
        await emu.run_ladder()
        assert late.delivered and late.attempts == 2
    finally:
        await emu.stop()


async def test_the_ladder_gives_up_after_its_last_rung(receiver: Receiver) -> None:
    emu = ZaloEmulator(
        webhook_url=receiver.url, start_time_ms=START_MS, clock_runs=False, retry_on="non_200"
    )
    await emu.start()
    try:
        receiver.statuses.extend([500] * 10)
        await emu.follow()
        start = emu.now_ms()
        await emu.run_ladder()
        [record] = emu.webhooks
        assert record.gave_up and record.attempts == 6
        assert emu.now_ms() - start == 6_630_000  # 30 s + 5 + 15 + 30 min + 1 h
        assert [h.get("num_retry") for h, _ in receiver.requests] == [None, "1", "2", "3", "4", "5"]
        assert len({raw for _, raw in receiver.requests}) == 1  # the same body and timestamp
    finally:
        await emu.stop()
