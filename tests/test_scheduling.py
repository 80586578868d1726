"""When the service may speak first (issue 12, item 3): the one reminder, quiet hours, and how
often one citizen is invited. Driven on the service's and the dispatcher's clock, on SQLite and
PostgreSQL; what is asserted is what a citizen's phone shows and what the coverage page says."""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from bot.adapters.telegram.channel import CAPABILITIES as TELEGRAM
from bot.adapters.zalo.bot import CAPABILITIES as ZALO_BOT
from bot.adapters.zalo.zns import CAPABILITIES as ZNS
from bot.channels import Capabilities, DeliveryError, OutboundMessage
from bot.dashboard import auth
from bot.flows.engine import Reply
from bot.i18n import gettext
from bot.inbound import route_button, route_text
from bot.runtime import Runtime
from bot.schemas import DossierRegistration, ResultBatch, ResultReport
from bot.usecases.lifecycle import REMINDER
from settings import SettingsError, load_settings
from storage import releases, schedule
from storage.models import Agency, InviteCap, SurveyLedger, utcnow
from storage.stats import Thresholds
from tests.adminseed import add_agency, release
from tests.test_dashboard import login

REMINDED = gettext("vi", REMINDER)


class ChatStub:
    """Stands in for a platform's delivery port, declaring that channel's real capabilities:
    records what reached each chat, or refuses for good (the citizen blocked the bot)."""

    def __init__(self, name: str, capabilities: Capabilities) -> None:
        self.name = name
        self.capabilities = capabilities
        self.sent: dict[str, list[OutboundMessage]] = defaultdict(list)
        self.refusing = False
        self.refused = 0

    async def send(self, address: str, message: OutboundMessage) -> None:
        if self.refusing:
            self.refused += 1
            raise DeliveryError("blocked by the user", permanent=True)
        self.sent[address].append(message)

    def texts(self, address: str) -> list[str]:
        return [m.text for m in self.sent[address]]


def plug(runtime: Runtime, name: str, capabilities: Capabilities) -> ChatStub:
    stub = ChatStub(name, capabilities)
    runtime.channels[name] = stub
    runtime.service.capabilities = {**runtime.service.capabilities, name: capabilities}
    return stub


def at(runtime: Runtime, when: dt.datetime) -> None:
    """Both clocks at ``when``: the service stamps and schedules on it, the dispatcher sends
    what is due on it."""
    runtime.service.clock = lambda: when
    runtime.dispatcher.clock = lambda: when


async def bind(runtime: Runtime, agency: Agency, code: str, channel: str, chat: str) -> None:
    reg = await runtime.service.register_dossier(agency, DossierRegistration(dossier_code=code))
    await runtime.service.bind(reg.rating_token, channel, chat, "vi")


async def report(runtime: Runtime, agency: Agency, code: str) -> str | None:
    when = runtime.service.clock().date()
    outcome = await runtime.service.report_results(
        agency, ResultBatch(results=[ResultReport(dossier_code=code, returned_at=when)])
    )
    return outcome.items[0].survey_status


async def web_texts(runtime: Runtime, session: str) -> list[str]:
    return [m["text"] for m in await runtime.web.poll(session, 0)]


async def test_one_reminder_after_the_delay_on_telegram_and_web_and_none_on_zns(
    runtime: Runtime, agency: Agency
) -> None:
    telegram = plug(runtime, "telegram", TELEGRAM)
    zns = plug(runtime, "zns", ZNS)
    start = utcnow()
    at(runtime, start)
    web = await runtime.web.open_session()
    await bind(runtime, agency, "HS-R1", "web", web)
    await bind(runtime, agency, "HS-R2", "telegram", "7001")
    registration = DossierRegistration(dossier_code="HS-R3", phone="0912345678")
    await runtime.service.register_dossier(agency, registration)
    for code in ("HS-R1", "HS-R2", "HS-R3"):
        assert await report(runtime, agency, code) == "sent"
    await runtime.dispatcher.drain()
    assert await web_texts(runtime, web) and telegram.texts("7001")
    [template] = [m for sent in zns.sent.values() for m in sent]  # the ZNS rating template
    delay = dt.timedelta(hours=runtime.settings.reminder_after_hours)

    at(runtime, start + delay - dt.timedelta(minutes=1))
    assert await runtime.service.send_reminders() == 0
    at(runtime, start + delay + dt.timedelta(minutes=1))
    assert await runtime.service.send_reminders() == 2  # web and Telegram, not ZNS
    await runtime.dispatcher.drain()
    at(runtime, start + 3 * delay)
    assert await runtime.service.send_reminders() == 0
    await runtime.dispatcher.drain()

    assert sum(REMINDED in t for t in await web_texts(runtime, web)) == 1
    assert sum(REMINDED in t for t in telegram.texts("7001")) == 1
    # The open question comes again with the reminder (on Telegram as buttons).
    first_question = next(m for m in telegram.sent["7001"] if m.buttons)
    assert telegram.sent["7001"][-1].buttons == first_question.buttons
    assert [m for sent in zns.sent.values() for m in sent] == [template]


async def test_a_survey_that_falls_back_after_its_reminder_is_not_reminded_again(
    runtime: Runtime, agency: Agency
) -> None:
    telegram = plug(runtime, "telegram", TELEGRAM)
    zalo_bot = plug(runtime, "zalo_bot", ZALO_BOT)
    start = utcnow()
    at(runtime, start)
    # The citizen bound Telegram and the Zalo bot to one dossier: Telegram comes first.
    await bind(runtime, agency, "HS-R4", "telegram", "7002")
    await bind(runtime, agency, "HS-R4", "zalo_bot", "z-7002")
    assert await report(runtime, agency, "HS-R4") == "sent"
    await runtime.dispatcher.drain()
    greeted = len(zalo_bot.sent["z-7002"])  # "you will receive a short survey" on binding
    assert len(telegram.texts("7002")) > 1 and greeted == 1
    delay = dt.timedelta(hours=runtime.settings.reminder_after_hours)

    at(runtime, start + delay + dt.timedelta(minutes=1))
    assert await runtime.service.send_reminders() == 1
    telegram.refusing = True  # blocked the bot: the reminder is refused, the survey moves on
    await runtime.dispatcher.drain()  # a round that only failed ends the drain
    assert telegram.refused == 1
    await runtime.dispatcher.drain()
    assert len(zalo_bot.texts("z-7002")) > greeted  # the survey started again on the Zalo bot
    at(runtime, start + 3 * delay)
    assert await runtime.service.send_reminders() == 0
    await runtime.dispatcher.drain()
    assert not any(REMINDED in t for t in zalo_bot.texts("z-7002"))
    async with runtime.sessions() as session:
        ledger = (await session.execute(select(SurveyLedger))).scalar_one()
        assert ledger.channel == "zalo_bot"


# ------------------------------------------------------------------------------ quiet hours
VIETNAM = ZoneInfo("Asia/Ho_Chi_Minh")


def local(day: int, hour: int, minute: int = 0) -> dt.datetime:
    """A moment of December 2026 on a Vietnamese clock, as the service's UTC clock reads it."""
    return dt.datetime(2026, 12, day, hour, minute, tzinfo=VIETNAM).astimezone(dt.UTC)


def quiet(runtime: Runtime, start: str = "21:00", end: str = "07:00") -> None:
    runtime.settings.quiet_hours_start = start
    runtime.settings.quiet_hours_end = end


async def test_a_result_at_22h_is_invited_at_7h_while_a_reply_at_22h30_goes_at_once(
    runtime: Runtime, agency: Agency
) -> None:
    quiet(runtime)
    early, late = await runtime.web.open_session(), await runtime.web.open_session()
    at(runtime, local(10, 20))
    await bind(runtime, agency, "HS-Q1", "web", early)
    await bind(runtime, agency, "HS-Q2", "web", late)
    assert await report(runtime, agency, "HS-Q1") == "sent"  # 20:00: invited at once
    await runtime.dispatcher.drain()
    greeted = len(await web_texts(runtime, late))  # the thank-you for binding
    assert len(await web_texts(runtime, early)) > greeted

    at(runtime, local(10, 22))
    assert await report(runtime, agency, "HS-Q2") == "sent"
    await runtime.dispatcher.drain()
    assert len(await web_texts(runtime, late)) == greeted  # nothing at 22:00

    at(runtime, local(10, 22, 30))
    before = len(await web_texts(runtime, early))
    await runtime.service.handle("web", early, Reply("1"))  # mid-survey: the reply goes now
    await runtime.dispatcher.drain()
    assert len(await web_texts(runtime, early)) > before
    assert len(await web_texts(runtime, late)) == greeted

    at(runtime, local(11, 6, 59))
    await runtime.dispatcher.drain()
    assert len(await web_texts(runtime, late)) == greeted
    at(runtime, local(11, 7))
    await runtime.dispatcher.drain()
    invitation = (await web_texts(runtime, late))[greeted:]
    assert invitation and "bao nhiêu lần" in invitation[-1]  # the first question, at 07:00


async def test_a_reminder_falling_due_at_night_waits_for_the_morning(
    runtime: Runtime, agency: Agency
) -> None:
    quiet(runtime)
    runtime.settings.reminder_after_hours = 2
    citizen = await runtime.web.open_session()
    at(runtime, local(10, 20))
    await bind(runtime, agency, "HS-Q3", "web", citizen)
    assert await report(runtime, agency, "HS-Q3") == "sent"
    await runtime.dispatcher.drain()
    at(runtime, local(10, 22, 1))
    assert await runtime.service.send_reminders() == 1  # due at 22:00: queued, held
    await runtime.dispatcher.drain()
    assert not any(REMINDED in t for t in await web_texts(runtime, citizen))
    at(runtime, local(11, 7))
    await runtime.dispatcher.drain()
    assert sum(REMINDED in t for t in await web_texts(runtime, citizen)) == 1


async def test_a_citizen_who_opens_their_link_at_night_gets_the_survey_now_and_no_repeat(
    runtime: Runtime, agency: Agency
) -> None:
    """Opening the link is the citizen's own request: answered at once; the invitation held
    for 07:00 would only ask again what they already answered, so it never goes."""
    quiet(runtime)
    citizen = await runtime.web.open_session()
    at(runtime, local(10, 20))
    reg = await runtime.service.register_dossier(agency, DossierRegistration(dossier_code="HS-Q4"))
    await runtime.service.bind(reg.rating_token, "web", citizen, "vi")
    at(runtime, local(10, 23))
    assert await report(runtime, agency, "HS-Q4") == "sent"  # held for 07:00
    at(runtime, local(10, 23, 10))
    await runtime.service.bind(reg.rating_token, "web", citizen, "vi")  # the link again
    await runtime.dispatcher.drain()
    assert "bao nhiêu lần" in (await web_texts(runtime, citizen))[-1]
    await runtime.service.handle("web", citizen, Reply("1"))
    await runtime.dispatcher.drain()
    answered = await web_texts(runtime, citizen)
    at(runtime, local(11, 7))
    await runtime.dispatcher.drain()
    assert await web_texts(runtime, citizen) == answered
    assert sum("bao nhiêu lần" in t for t in answered) == 1


def test_quiet_hours_arithmetic() -> None:
    night = schedule.quiet_hours("21:00", "07:00", "Asia/Ho_Chi_Minh")
    assert night is not None
    assert night.until(local(10, 20, 59)) is None
    assert night.until(local(10, 21)) == local(11, 7)
    assert night.until(local(11, 0, 30)) == local(11, 7)
    assert night.until(local(11, 6, 59)) == local(11, 7)
    assert night.until(local(11, 7)) is None
    lunch = schedule.quiet_hours("12:00", "13:30", "Asia/Ho_Chi_Minh")
    assert lunch is not None and lunch.until(local(10, 12, 15)) == local(10, 13, 30)
    assert lunch.until(local(10, 11, 59)) is None and lunch.until(local(10, 13, 30)) is None
    assert schedule.quiet_hours("", "", "Asia/Ho_Chi_Minh") is None
    assert schedule.quiet_hours("07:00", "07:00", "Asia/Ho_Chi_Minh") is None
    # The window is on the local clock: 21:00 in Hà Nội is 14:00 UTC.
    assert night.until(dt.datetime(2026, 12, 10, 14, 0, tzinfo=dt.UTC)) == local(11, 7)


def test_quiet_hours_settings_are_validated() -> None:
    for bad in (
        {"quiet_hours_start": "25:00"},
        {"quiet_hours_end": "7h"},
        {"quiet_hours_end": ""},
        {"quiet_hours_timezone": "Asia/Sai_Gon_City"},
        {"invite_cap_days": -1},
    ):
        with pytest.raises(SettingsError) as refused:
            base = {"env": "test", "quiet_hours_start": "21:00", "quiet_hours_end": "07:00"}
            load_settings(**{**base, **bad})
        assert str(refused.value).count("\n") == 1  # one line, naming the setting
    off = load_settings(env="test", quiet_hours_start="", quiet_hours_end="")
    assert schedule.quiet_until(off, local(10, 23)) is None


# ----------------------------------------------------------------------- the invitation cap
async def test_a_second_agencys_result_within_7_days_is_capped_counted_and_sends_nothing(
    runtime: Runtime, agency: Agency, client: TestClient[Any, Any]
) -> None:
    runtime.settings.invite_cap_days = 7
    telegram = plug(runtime, "telegram", TELEGRAM)
    ward = await add_agency(runtime, "ubnd-phuong", "UBND phường", ["CB11"])
    district = await add_agency(runtime, "ubnd-quan", "UBND quận", ["CB21"])
    chats = [f"90{n}" for n in range(7)]
    at(runtime, dt.datetime(2026, 10, 25, 3, tzinfo=dt.UTC))
    for n, chat in enumerate(chats):
        await bind(runtime, agency, f"HS-A{n}", "telegram", chat)
        assert await report(runtime, agency, f"HS-A{n}") == "sent"
    await runtime.dispatcher.drain()

    at(runtime, dt.datetime(2026, 10, 31, 3, tzinfo=dt.UTC))  # six days later
    for n, chat in enumerate(chats):
        other = ward if n < 5 else district  # five citizens at the ward, two at the district
        await bind(runtime, other, f"HS-B{n}", "telegram", chat)
    await runtime.dispatcher.drain()
    seen = {chat: len(telegram.sent[chat]) for chat in chats}
    for n in range(7):
        other = ward if n < 5 else district
        assert await report(runtime, other, f"HS-B{n}") == "capped"
    await runtime.dispatcher.drain()
    assert {chat: len(telegram.sent[chat]) for chat in chats} == seen  # no message at all
    async with runtime.sessions() as session:
        statuses = (
            await session.execute(
                select(SurveyLedger.status).where(SurveyLedger.agency_id != agency.id)
            )
        ).scalars()
        assert sorted(statuses) == ["capped"] * 7  # recorded, never dropped

    at(runtime, dt.datetime(2026, 11, 1, 3, tzinfo=dt.UTC))  # seven days after the invitation
    await bind(runtime, ward, "HS-C0", "telegram", chats[0])
    assert await report(runtime, ward, "HS-C0") == "sent"
    await runtime.dispatcher.drain()
    assert len(telegram.sent[chats[0]]) > seen[chats[0]] + 1  # thanks, then the survey

    assert await release(runtime) == ["2026-10"]
    coverage = {
        (r["agency"], r["channel"]): r
        for a in (ward, district)
        for r in (await releases.published(runtime.sessions, Thresholds(), a.id)).coverage
    }
    assert coverage[("ubnd-phuong", "*")]["capped"] == 5
    assert coverage[("ubnd-phuong", "*")]["reported"] == 5
    # Two capped results are a group below k: withheld like any other coverage figure.
    assert coverage[("ubnd-quan", "*")]["suppressed"] == "small"
    assert coverage[("ubnd-quan", "*")]["capped"] is None

    await auth.create_user(runtime.sessions, "xem", "mat-khau-dai", "viewer", "ubnd-phuong")
    assert (await login(client, "xem", "mat-khau-dai")).status == 303
    page = await (await client.get("/admin/coverage")).text()
    row = page.split('data-coverage="ubnd-phuong:*"', 1)[1].split("</tr>", 1)[0]
    assert re.search(r'data-k="capped">\s*5\s*<', row)


async def test_the_cap_keeps_a_keyed_day_only_and_forgets_it_after_the_window(
    runtime: Runtime, agency: Agency
) -> None:
    runtime.settings.invite_cap_days = 7
    plug(runtime, "telegram", TELEGRAM)
    start = dt.datetime(2026, 10, 20, 3, tzinfo=dt.UTC)
    at(runtime, start)
    await bind(runtime, agency, "HS-K1", "telegram", "424242")
    assert await report(runtime, agency, "HS-K1") == "sent"
    contact = runtime.keyring.channel_pseudonym("contact", "telegram", "424242").digest
    async with runtime.sessions() as session:
        [row] = (await session.execute(select(InviteCap))).scalars()
    # A day and a hash that is neither the chat id nor any pseudonym stored elsewhere.
    assert row.invited_on == start.date() and row.cap_hash != contact
    assert "424242" not in row.cap_hash
    at(runtime, start + dt.timedelta(days=6))
    assert (await runtime.service.purge_closed()).invite_cap == 0
    at(runtime, start + dt.timedelta(days=7))
    assert (await runtime.service.purge_closed()).invite_cap == 1
    async with runtime.sessions() as session:
        assert (await session.execute(select(InviteCap))).first() is None


async def test_with_the_cap_off_every_result_is_invited(runtime: Runtime, agency: Agency) -> None:
    runtime.settings.invite_cap_days = 0
    plug(runtime, "telegram", TELEGRAM)
    ward = await add_agency(runtime, "ubnd-phuong", "UBND phường", ["CB11"])
    for other, code in ((agency, "HS-O1"), (ward, "HS-O2")):
        await bind(runtime, other, code, "telegram", "515151")
        assert await report(runtime, other, code) == "sent"


async def test_delete_forgets_when_the_chat_was_last_invited(
    runtime: Runtime, agency: Agency
) -> None:
    runtime.settings.invite_cap_days = 7
    citizen = await runtime.web.open_session()
    await bind(runtime, agency, "HS-D1", "web", citizen)
    assert await report(runtime, agency, "HS-D1") == "sent"
    async with runtime.sessions() as session:
        assert len((await session.execute(select(InviteCap))).all()) == 1
    await route_text(runtime.service, "web", citizen, "/delete")
    await route_button(runtime.service, "web", citizen, "cmd:delete:yes")
    async with runtime.sessions() as session:
        assert (await session.execute(select(InviteCap))).first() is None
