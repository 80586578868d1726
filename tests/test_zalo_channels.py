"""The Zalo channels over real HTTP against the emulator, on SQLite and PostgreSQL.

Why these scenarios: they are the issue's "done when" (an OA citizen answers mot-cua with buttons,
a phone-only citizen rates through the ZNS template, a citizen outside the OA window is reached
by the fallback) plus the ways Zalo breaks adapters in production: lost webhooks, forged or
replayed webhooks, and single-use refresh tokens expiring in the middle of a batch.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from bot.adapters.zalo.ratings import reconcile
from bot.app import create_app
from bot.emulators.zalo import CS_WINDOW_MS, ZNS_PHONE_FORMS, ZaloEmulator, sign_event
from bot.runtime import Runtime
from storage import export
from storage.models import (
    AuditEntry,
    DossierContact,
    InboxEvent,
    OutboxMessage,
    Response,
    SurveyLedger,
    ZaloToken,
    utcnow,
)
from storage.pseudonym import KeyRing
from tests.conftest import REDIS_URL, _truncate, add_test_agency, make_settings, today
from tests.helpers import dump_database, dump_redis

BOT_SECRET = "bot-webhook-secret-1"
START_MS = 1_793_000_000_000  # a fixed instant (Nov 2026), daytime in Vietnam


class Zalo:
    """The emulator, the app under test, an HTTP client and an agency API key, wired together."""

    def __init__(self, emu: ZaloEmulator, rt: Runtime, client: TestClient[Any, Any], key: str):
        self.emu, self.rt, self.client = emu, rt, client
        self.headers = {"Authorization": f"Bearer {key}"}

    async def settle(self) -> None:
        """Let webhooks arrive and the outbox drain until both are quiet."""
        for _ in range(12):
            await self.emu.wait_idle()
            await self.rt.dispatcher.drain()
            await self.emu.wait_idle()
            async with self.rt.sessions() as session:
                pending = await session.scalar(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(
                        OutboxMessage.status.in_(("pending", "sending")),
                        OutboxMessage.available_at <= utcnow(),
                    )
                )
            if not pending:
                return

    async def register(self, code: str, **extra: Any) -> str:
        body = {
            "dossier_code": code,
            "procedure_code": "1.001234",
            "official_code": "CB01",
            **extra,
        }
        response = await self.client.post("/api/v1/dossiers", headers=self.headers, json=body)
        assert response.status == 201, await response.text()
        return str((await response.json())["rating_token"])

    async def report(self, *items: dict[str, Any]) -> dict[str, Any]:
        results = [{"returned_at": today().isoformat(), **item} for item in items]
        response = await self.client.post(
            "/api/v1/results", headers=self.headers, json={"results": results}
        )
        assert response.status == 200, await response.text()
        return dict(await response.json())

    async def oa_citizen(self, token: str) -> str:
        """A citizen follows the OA and sends the receipt's code: the chat is bound."""
        uid = await self.emu.follow()
        await self.emu.user_send_text(uid, f"#{token}")
        await self.settle()
        return uid

    async def answer_oa(self, uid: str, texts: dict[str, str] | None = None) -> None:
        """Tap the first query button of each question (or type a text) until the thank-you."""
        for _ in range(20):
            await self.settle()
            last = self.emu.last_oa_message(uid)
            if last.text.startswith("Cảm ơn Ông/Bà đã đánh giá"):
                return
            payloads = last.button_payloads()
            if payloads:
                await self.emu.tap_query_button(uid, last.msg_id, payloads[0])
            else:
                await self.emu.user_send_text(uid, (texts or {}).get("*", "Tốt"))
        raise AssertionError("the survey did not finish")

    async def export_rows(self) -> list[dict[str, str]]:
        text = (await export.export_csv(self.rt.sessions)).lstrip("\ufeff")
        return list(csv.DictReader(io.StringIO(text)))


def virtual_sleep(emu: ZaloEmulator) -> Callable[[float], Awaitable[None]]:
    """A sleep that moves the emulator's virtual clock instead of waiting (backoff in tests)."""

    async def sleep(seconds: float) -> None:
        emu.advance(seconds)

    return sleep


@contextlib.asynccontextmanager
async def zalo_stack(
    tmp_path: Path,
    database_url: str,
    keyring: KeyRing,
    redis_prefix: str,
    **emulator_options: Any,
) -> AsyncIterator[Zalo]:
    """The emulator (``emulator_options`` pick its readings) and our service wired to it."""
    options: dict[str, Any] = {"start_time_ms": START_MS, "clock_runs": False, "seed": 7}
    emu = ZaloEmulator(**(options | emulator_options))
    await emu.start()
    settings = make_settings(
        tmp_path,
        database_url,
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
        zalo_app_id=emu.app_id,
        zalo_app_secret=emu.app_secret_key,
        zalo_oa_secret=emu.oa_secret,
        zalo_refresh_token="emulator-refresh-token-0",
        zalo_oauth_base_url=emu.oauth_url,
        zalo_openapi_base_url=emu.openapi_url,
        zalo_business_base_url=emu.business_url,
        zalo_http_timeout_seconds=3.0,
        zalo_zns_rating_template_id="355330",
        zalo_zns_template_data=json.dumps(
            {"customer_name": "Ông/Bà", "dossier_code": "hồ sơ tại {agency}"}
        ),
        zalo_bot_token=emu.bot_token,
        zalo_bot_api_base_url=emu.bot_url,
        zalo_bot_webhook_secret=BOT_SECRET,
    )
    rt = await Runtime.create(settings, keyring=keyring)
    await _truncate(rt)
    assert rt.zalo is not None
    rt.zalo.clock = lambda: emu.now_ms() / 1000
    rt.zalo.sleep = virtual_sleep(emu)
    await add_test_agency(rt)
    key = await rt.service.create_api_key("ubnd-test", "tests")
    async with TestClient(TestServer(create_app(rt, background=False))) as client:
        emu.set_oa_webhook(str(client.make_url("/webhooks/zalo/oa")))
        yield Zalo(emu, rt, client, key)
        await emu.wait_idle()
    await emu.stop()
    await rt.close()


@pytest.fixture
async def zalo(
    tmp_path: Path, database_url: str, keyring: KeyRing, redis_prefix: str
) -> AsyncIterator[Zalo]:
    async with zalo_stack(tmp_path, database_url, keyring, redis_prefix) as stack:
        yield stack


async def count(rt: Runtime, model: Any) -> int:
    async with rt.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


# ------------------------------------------------------------------------------ the scenarios
async def test_oa_zns_and_fallback_citizens_all_pseudonymised(
    zalo: Zalo, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emu = zalo.emu
    codes = ["000.00.12.H29-261124-0101", "000.00.12.H29-261124-0102",
             "000.00.12.H29-261124-0103", "000.00.12.H29-261124-0104"]  # fmt: skip
    phones = {"zns": "0912 345 678", "lost": "+84 987 654 321", "fallback": "0903123456"}

    # 1. A citizen bound through the OA answers mot-cua with buttons.
    token = await zalo.register(codes[0])
    oa_user = await zalo.oa_citizen(token)
    outcome = await zalo.report({"dossier_code": codes[0]})
    assert outcome["items"][0]["survey_status"] == "sent"
    await zalo.answer_oa(oa_user)
    first_question = next(m for m in emu.transcript(oa_user) if m.raw_buttons)
    assert all(b["type"] == "oa.query.hide" for b in first_question.raw_buttons)
    assert all(b["payload"].startswith("a:") for b in first_question.raw_buttons)

    # 2. A citizen who left only a phone number rates through the ZNS template (webhook).
    await zalo.register(codes[1], phone=phones["zns"])
    await zalo.report({"dossier_code": codes[1]})
    await zalo.settle()
    [zns] = emu.zns_sent_to("84912345678")
    assert len(zns.tracking_id) == 32 and "912345678" not in zns.tracking_id
    assert zns.template_data["dossier_code"] == "hồ sơ tại UBND phường Thử nghiệm"
    await emu.zns_rate(zns.msg_id, 4, ["Cán bộ nhiệt tình", "Thông tin rõ ràng", "quảng cáo"],
                       "Gọi tôi 0912 345 678 nhé")  # fmt: skip
    await zalo.settle()

    # 3. The same through reconciliation when Zalo loses the user_feedback webhook.
    await zalo.report({"dossier_code": codes[2], "phone": phones["lost"]})
    await zalo.settle()
    [lost] = emu.zns_sent_to("84987654321")
    emu.drop_next_webhook(event_name="user_feedback")
    await emu.zns_rate(lost.msg_id, 2)
    await zalo.settle()
    assert await count(zalo.rt, Response) == 2
    assert await reconcile(zalo.rt.zalo, zalo.rt.service) == 1
    assert await reconcile(zalo.rt.zalo, zalo.rt.service) == 0  # idempotent

    # 4. A citizen outside the OA window is reached by the ZNS fallback; one survey only.
    token = await zalo.register(codes[3], phone=phones["fallback"])
    stale_user = await zalo.oa_citizen(token)
    emu.users[stale_user].last_interaction_ms = emu.now_ms() - CS_WINDOW_MS - 60_000
    await zalo.report({"dossier_code": codes[3]})
    await zalo.settle()
    assert not [m for m in emu.transcript(stale_user) if m.raw_buttons]
    [fallback] = emu.zns_sent_to("84903123456")
    await emu.zns_rate(fallback.msg_id, 5)
    await zalo.settle()

    async with zalo.rt.sessions() as session:
        ledgers = (await session.execute(select(SurveyLedger))).scalars().all()
        contacts = await session.scalar(select(func.count()).select_from(DossierContact))
    assert sorted(str(ledger.channel) for ledger in ledgers) == ["zalo_oa", "zns", "zns", "zns"]
    assert all(ledger.completed and ledger.delivered for ledger in ledgers)
    assert contacts == 0  # phones and chat ids are gone once the surveys closed

    rows = await zalo.export_rows()
    by_channel = sorted(rows, key=lambda r: (r["channel"], r["satisfaction"]))
    assert [(r["channel"], r["survey"], r["satisfaction"]) for r in by_channel] == [
        ("zalo_oa", "mot-cua", "5"),
        ("zns", "zns-5-star", "2"),
        ("zns", "zns-5-star", "4"),
        ("zns", "zns-5-star", "5"),
    ]
    rated4 = by_channel[2]
    assert rated4["q_chips"] == "attitude|info" and rated4["q_stars"] == "4"
    assert "[số]" in rated4["q_note"] and "0912" not in rated4["q_note"]

    # Confidentiality: no Zalo user id, phone (any spelling) or dossier code anywhere.
    haystack = "\n".join(
        [
            await dump_database(zalo.rt),
            await dump_redis(redis_prefix),
            caplog.text,
            await export.export_csv(zalo.rt.sessions),
        ]
    )
    needles = [oa_user, stale_user, emu.users[oa_user].user_id_by_app, *codes]
    for phone in ("912345678", "987654321", "903123456"):
        needles += [phone, "0" + phone, "84" + phone, "+84" + phone,
                    f"{phone[:3]} {phone[3:6]} {phone[6:]}"]  # fmt: skip
    for needle in needles:
        assert needle not in haystack, f"raw identifier {needle[:3]}… leaked"


@pytest.mark.parametrize("forms", sorted(ZNS_PHONE_FORMS))
async def test_zns_reaches_a_phone_however_the_agency_wrote_it(
    tmp_path: Path, database_url: str, keyring: KeyRing, redis_prefix: str, forms: str
) -> None:
    """Under either reading of which phone forms ZNS accepts (zalo.md §4.1), we send ``84…``."""
    async with zalo_stack(
        tmp_path, database_url, keyring, redis_prefix, zns_phone_forms=forms
    ) as zalo:
        written = ["0912 345 678", "+84 912 345 679", "912.345.670", "84912345671"]
        codes = [f"000.00.12.H29-261124-08{i:02d}" for i in range(len(written))]
        items = [{"dossier_code": c, "phone": p} for c, p in zip(codes, written, strict=True)]
        await zalo.report(*items)
        await zalo.settle()
        sent = sorted(m.phone_as_sent for m in zalo.emu.zns_messages)
        assert sent == ["84912345670", "84912345671", "84912345678", "84912345679"]
        assert all(c.error == 0 for c in zalo.emu.calls_to("/message/template"))


async def test_forged_stale_and_replayed_webhooks_refused(zalo: Zalo) -> None:
    emu = zalo.emu
    token = await zalo.register("000.00.12.H29-261124-0201")
    uid = await zalo.oa_citizen(token)
    await zalo.report({"dossier_code": "000.00.12.H29-261124-0201"})
    await zalo.settle()
    question = emu.last_oa_message(uid)

    def event(text: str, timestamp: int) -> bytes:
        return json.dumps(
            {
                "app_id": emu.app_id,
                "event_name": "user_send_text",
                "timestamp": str(timestamp),
                "sender": {"id": uid},
                "recipient": {"id": emu.oa_id},
                "message": {"msg_id": emu.new_id(), "text": text},
            }
        ).encode()

    async def post(raw: bytes, signature: str | None) -> int:
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers["X-ZEvent-Signature"] = signature
        response = await zalo.client.post("/webhooks/zalo/oa", data=raw, headers=headers)
        body = await response.json()
        assert "error" in body or body.get("ok") is True
        return response.status

    async def stored() -> tuple[int, int, int]:
        return (await count(zalo.rt, Response), await count(zalo.rt, OutboxMessage),
                await count(zalo.rt, InboxEvent))  # fmt: skip

    before = await stored()
    now = emu.now_ms()
    tap = question.button_payloads()[0]
    good = event(tap, now)
    signature = sign_event(emu.app_id, good, str(now), emu.oa_secret)
    assert await post(good, None) == 401
    assert await post(good, sign_event(emu.app_id, good, str(now), "wrong-secret")) == 401
    assert await post(good, signature.replace("mac=", "mac=0")[:-1]) == 401
    assert await post(event(tap + "x", now), signature) == 401  # body changed after signing
    past_ladder = now - 4 * 3600_000  # older than Zalo's whole redelivery ladder (~1 h 51 min)
    old = event(tap, past_ladder)
    assert await post(old, sign_event(emu.app_id, old, str(past_ladder), emu.oa_secret)) == 401
    ahead = now + 3600_000  # stamped an hour in the future: no clock is that far off
    early = event(tap, ahead)
    assert await post(early, sign_event(emu.app_id, early, str(ahead), emu.oa_secret)) == 401
    assert await post(b"{not json", signature) == 401  # the MAC is checked before any parsing
    assert await stored() == before  # nothing stored for any of them

    assert await post(good, signature.removeprefix("mac=")) == 200  # accepted without "mac="
    after_first = await stored()
    assert after_first[0] == before[0] + 1
    assert await post(good, signature) == 200  # a replay: acknowledged, no effect
    assert await stored() == after_first


@pytest.mark.parametrize("expired_code", [-220, -216])  # expired, or "invalid" (zalo.md §1.5)
async def test_token_expiring_mid_batch_loses_and_doubles_nothing(
    zalo: Zalo, expired_code: int
) -> None:
    emu = zalo.emu
    emu.expired_token_code = expired_code
    users: list[str] = []
    codes = [f"000.00.12.H29-261124-03{i:02d}" for i in range(6)]
    for code in codes:
        users.append(await zalo.oa_citizen(await zalo.register(code)))
    await zalo.report(*({"dossier_code": c} for c in codes[:3]))
    await zalo.settle()
    refreshes = emu.refresh_count
    emu.advance(90_000)  # the access token has now expired
    for uid in users:  # keep the citizens inside the 7-day window
        emu.users[uid].last_interaction_ms = emu.now_ms()
    emu.inject("/v3.0/oa/message/cs", "expired_token")  # and Zalo also says so once
    await zalo.report(*({"dossier_code": c} for c in codes[3:]))
    await zalo.settle()
    for uid in users:
        texts = [m.text for m in emu.transcript(uid)]
        surveys = [t for t in texts if "Kính chào" in t]
        assert len(surveys) == 1, texts
        assert len([m for m in emu.transcript(uid) if m.raw_buttons]) == 1
    assert emu.refresh_count - refreshes <= 2
    [told] = [c for c in emu.calls_to("/v3.0/oa/message/cs") if c.fault == "expired_token"]
    assert told.error == expired_code  # refreshed and retried once: every survey went out
    async with zalo.rt.sessions() as session:
        row = await session.get(ZaloToken, emu.app_id)
        dead = await session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.status == "dead")
        )
    assert row is not None and row.status == "ok" and dead == 0
    assert emu.valid_refresh_tokens == [zalo.rt.keyring.open(row.refresh_sealed or "")]


async def test_refused_refresh_alerts_admins_and_pauses_sends(zalo: Zalo) -> None:
    emu = zalo.emu
    uid = await zalo.oa_citizen(await zalo.register("000.00.12.H29-261124-0401"))
    assert zalo.rt.zalo is not None and zalo.rt.zalo.tokens is not None
    tokens = zalo.rt.zalo.tokens
    await tokens.install("RT.revoked-by-zalo")
    await zalo.report({"dossier_code": "000.00.12.H29-261124-0401"})
    await zalo.rt.dispatcher.drain()
    async with zalo.rt.sessions() as session:
        waiting = (await session.execute(select(OutboxMessage))).scalars().all()
        alerts = (await session.execute(select(AuditEntry))).scalars().all()
    start = [m for m in waiting if m.invitation_id]
    assert start and all(m.status == "pending" for m in start)  # paused, not lost
    assert all(m.attempts == 0 for m in start)  # a pause of any length never exhausts retries
    assert [a.action for a in alerts] == ["zalo.token_refresh_failed"]
    before = len(emu.transcript(uid))

    _, fresh_refresh = emu.issue_tokens()  # the admin re-consents
    await tokens.install(fresh_refresh)
    async with zalo.rt.sessions() as session:
        for message in start:
            row = await session.get(OutboxMessage, message.id)
            assert row is not None
            row.available_at = row.created_at
        await session.commit()
    await zalo.settle()
    assert any("Kính chào" in m.text for m in emu.transcript(uid)[before:])


@pytest.mark.parametrize("wrapped", [True, False], ids=["ok-result-body", "bare-update-body"])
async def test_zalo_bot_text_only_survey_by_webhook(zalo: Zalo, wrapped: bool) -> None:
    emu = zalo.emu
    emu.bot_webhook_wrapped = wrapped  # zalo.md §5: which body Zalo posts is not settled
    assert zalo.rt.zalo is not None and zalo.rt.zalo.bot is not None
    bot = zalo.rt.zalo.bot
    url = str(zalo.client.make_url("/webhooks/zalo/bot"))
    assert (await bot.call("setWebhook", {"url": url, "secret_token": BOT_SECRET}))["ok"]
    token = await zalo.register("000.00.12.H29-261124-0501")
    chat = await emu.bot_user_send_text(None, f"/start {token}")
    await zalo.settle()
    await zalo.report({"dossier_code": "000.00.12.H29-261124-0501"})
    for _ in range(20):
        await zalo.settle()
        last = emu.bot_messages(chat)[-1].text
        if last.startswith("Cảm ơn Ông/Bà đã đánh giá"):
            break
        await emu.bot_user_send_text(chat, "1" if "\n1. " in last else "0")
    else:
        raise AssertionError("the bot survey did not finish")
    [row] = await zalo.export_rows()
    assert row["channel"] == "zalo_bot" and row["q_overall"] == "rat_hai_long"
    bodies = [json.loads(w.body) for w in emu.webhooks if w.target == "bot"]
    assert bodies and all(("result" in b) is wrapped for b in bodies)
    assert all(w.delivered and w.statuses == [200] for w in emu.webhooks if w.target == "bot")

    forged = await zalo.client.post(
        "/webhooks/zalo/bot", json={"message": {}}, headers={"X-Bot-Api-Secret-Token": "nope"}
    )
    assert forged.status == 401


async def test_zalo_bot_polling_delivers_updates(zalo: Zalo) -> None:
    from bot.adapters.zalo import ZaloPlugin
    from bot.adapters.zalo.webhooks import bot_update

    plugin = zalo.rt.plugins["zalo"]
    assert isinstance(plugin, ZaloPlugin)
    assert zalo.rt.zalo is not None and zalo.rt.zalo.bot is not None
    bot = zalo.rt.zalo.bot
    zalo.emu.bot_poll_time_scale = 0.01
    chat = await zalo.emu.bot_user_send_text(None, "/help")
    update = await bot.poll_once()
    assert update is not None
    await bot_update(plugin.inbound, update)
    await zalo.settle()
    assert "/privacy" in zalo.emu.bot_messages(chat)[-1].text
    assert await bot.poll_once() is None  # an empty long poll (408) is not an error
    assert hashlib.sha256(chat.encode()).hexdigest() not in await dump_database(zalo.rt)
