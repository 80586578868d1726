"""A survey's life after the invitation: one reminder, expiry, /stop, /delete, /lang."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from bot.flows.engine import Reply
from bot.inbound import route_button, route_text
from bot.runtime import Runtime
from bot.schemas import DossierRegistration, ResultBatch, ResultReport
from storage.models import Agency, Answer, Dossier, Invitation, Response, SurveyLedger
from tests.conftest import today


async def open_survey(runtime: Runtime, agency: Agency, code: str) -> str:
    session = await runtime.web.open_session()
    reg = await runtime.service.register_dossier(agency, DossierRegistration(dossier_code=code))
    await runtime.service.bind(reg.rating_token, "web", session, "vi")
    await runtime.service.report_results(
        agency, ResultBatch(results=[ResultReport(dossier_code=code, returned_at=today())])
    )
    await runtime.dispatcher.drain()
    return session


async def texts(runtime: Runtime, session: str) -> list[str]:
    return [m["text"] for m in await runtime.web.poll(session, 0)]


def travel(runtime: Runtime, hours: float) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)
    runtime.service.clock = lambda: later


def back_to_now(runtime: Runtime) -> None:
    """The dispatcher sends on the real clock: messages stamped in the future would wait."""
    runtime.service.clock = lambda: dt.datetime.now(dt.UTC)


async def test_exactly_one_reminder(runtime: Runtime, agency: Agency) -> None:
    session = await open_survey(runtime, agency, "HS-1")
    assert await runtime.service.send_reminders() == 0
    travel(runtime, runtime.settings.reminder_after_hours + 1)
    assert await runtime.service.send_reminders() == 1
    assert await runtime.service.send_reminders() == 0
    back_to_now(runtime)
    async with runtime.sessions() as db:  # stamp the reminder as due now
        from storage.models import OutboxMessage

        for row in (await db.execute(select(OutboxMessage))).scalars():
            row.available_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        await db.commit()
    await runtime.dispatcher.drain()
    log = await texts(runtime, session)
    assert sum("Nhắc nhẹ" in t for t in log) == 1
    assert "bao nhiêu lần" in log[-1]  # the open question is asked again with the reminder


async def test_expiry_keeps_partial_answers_and_deletes_operational_data(
    runtime: Runtime, agency: Agency
) -> None:
    session = await open_survey(runtime, agency, "HS-2")
    await runtime.service.handle("web", session, Reply("1"))
    travel(runtime, runtime.settings.survey_ttl_hours + 1)
    assert await runtime.service.close_expired() == 1
    back_to_now(runtime)
    async with runtime.sessions() as db:
        assert await db.scalar(select(func.count()).select_from(Invitation)) == 0
        assert await db.scalar(select(func.count()).select_from(Dossier)) == 0
        ledger = (await db.execute(select(SurveyLedger))).scalar_one()
        assert (ledger.status, ledger.completed) == ("expired", False)
        response = (await db.execute(select(Response))).scalar_one()
        assert response.complete is False
        assert [a.question_id for a in (await db.execute(select(Answer))).scalars()] == ["c3"]
    await runtime.service.handle("web", session, Reply("2"))
    await runtime.dispatcher.drain()
    assert "không có phiếu" in (await texts(runtime, session))[-1]


async def test_stop_means_never_surveyed_again(runtime: Runtime, agency: Agency) -> None:
    session = await open_survey(runtime, agency, "HS-3")
    await route_text(runtime.service, "web", session, "/stop")
    await runtime.dispatcher.drain()
    assert "không nhận phiếu" in (await texts(runtime, session))[-1]
    # The same chat bound to a new dossier at reception, then /stop again before the result:
    reg = await runtime.service.register_dossier(agency, DossierRegistration(dossier_code="HS-4"))
    async with runtime.sessions() as db:
        dossier = (await db.execute(select(Dossier))).scalar_one()
        dossier.contact_hash = runtime.keyring.channel_pseudonym("contact", "web", session).digest
        dossier.address_sealed = runtime.keyring.seal(f"web:{session}")
        await db.commit()
    outcome = await runtime.service.report_results(
        agency, ResultBatch(results=[ResultReport(dossier_code="HS-4", returned_at=today())])
    )
    assert outcome.items[0].survey_status == "opted_out"
    del reg


async def test_delete_erases_my_answers_after_confirmation(
    runtime: Runtime, agency: Agency
) -> None:
    session = await open_survey(runtime, agency, "HS-5")
    for reply in ["1", "1", "1", "1", "1", "bỏ qua"]:
        await runtime.service.handle("web", session, Reply(reply))
    async with runtime.sessions() as db:
        assert await db.scalar(select(func.count()).select_from(Response)) == 1
    await route_text(runtime.service, "web", session, "/delete")
    await runtime.dispatcher.drain()
    confirm = (await runtime.web.poll(session, 0))[-1]
    assert [b[1] for b in confirm["buttons"]] == ["cmd:delete:yes", "cmd:delete:no"]
    await route_button(runtime.service, "web", session, "cmd:delete:no")
    async with runtime.sessions() as db:
        assert await db.scalar(select(func.count()).select_from(Response)) == 1
    await route_button(runtime.service, "web", session, "cmd:delete:yes")
    await runtime.dispatcher.drain()
    assert "Đã xoá 1 phiếu" in (await texts(runtime, session))[-1]
    async with runtime.sessions() as db:
        assert await db.scalar(select(func.count()).select_from(Response)) == 0
        assert await db.scalar(select(func.count()).select_from(Answer)) == 0


async def test_lang_switches_the_open_question_to_english(runtime: Runtime, agency: Agency) -> None:
    session = await open_survey(runtime, agency, "HS-6")
    await route_text(runtime.service, "web", session, "/lang en")
    await runtime.dispatcher.drain()
    log = await texts(runtime, session)
    assert log[-2] == "Language set to English."
    assert log[-1].startswith("How many times")
    await route_text(runtime.service, "web", session, "/privacy")
    await runtime.dispatcher.drain()
    assert "What we hold" in (await texts(runtime, session))[-1]


async def test_reopening_the_link_mid_survey_reshows_the_current_question(
    runtime: Runtime, agency: Agency
) -> None:
    session = await runtime.web.open_session()
    reg = await runtime.service.register_dossier(agency, DossierRegistration(dossier_code="HS-7"))
    await runtime.service.bind(reg.rating_token, "web", session, "vi")
    await runtime.service.report_results(
        agency, ResultBatch(results=[ResultReport(dossier_code="HS-7", returned_at=today())])
    )
    await runtime.service.handle("web", session, Reply("1"))
    outcome = await runtime.service.bind(reg.rating_token, "web", session, "vi")
    await runtime.dispatcher.drain()
    assert outcome.kind == "bound"
    assert (await texts(runtime, session))[-1].startswith(
        "Ông/Bà đã phải liên hệ với bao nhiêu cơ quan"
    )
    stranger = await runtime.web.open_session()
    assert (
        await runtime.service.bind(reg.rating_token, "web", stranger, "vi")
    ).kind == "invalid_link"
