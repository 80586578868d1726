"""Batch result reports, set-based (bot/usecases/results.py): each item still gets its own
outcome, as if the batch were reported one item after another, and reports racing each other
never survey a dossier twice nor invite one citizen twice. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from bot.inbound import route_text
from bot.runtime import Runtime
from bot.schemas import DossierRegistration, ResultBatch, ResultReport
from storage.models import Agency, Dossier, Invitation, InviteCap, OutboxMessage, SurveyLedger
from tests.conftest import today


async def bound(runtime: Runtime, agency: Agency, code: str, chat: str | None = None) -> str:
    """A registered dossier bound in a web chat (a new one unless ``chat`` is given)."""
    reg = await runtime.service.register_dossier(agency, DossierRegistration(dossier_code=code))
    chat = chat or await runtime.web.open_session()
    await runtime.service.bind(reg.rating_token, "web", chat, "vi")
    return chat


def batch(*codes: str, **extra: str) -> ResultBatch:
    return ResultBatch(
        results=[ResultReport(dossier_code=c, returned_at=today(), **extra) for c in codes]
    )


async def counts(runtime: Runtime) -> dict[str, int]:
    async with runtime.sessions() as session:
        return {
            model.__name__: int(
                (await session.execute(select(func.count()).select_from(model))).scalar_one()
            )
            for model in (SurveyLedger, Invitation, Dossier)
        }


async def test_reports_racing_each_other_survey_every_dossier_once(
    runtime: Runtime, agency: Agency
) -> None:
    codes = [f"HS-R{n}" for n in range(40)]
    chats = {code: await bound(runtime, agency, code) for code in codes}
    unbound = [f"HS-U{n}" for n in range(20)]  # no dossier yet: created by the report itself
    racers = [batch(*codes, *unbound), batch(*reversed(codes), *unbound), batch(*codes[::2])]
    outcomes = await asyncio.gather(
        *(runtime.service.report_results(agency, racer) for racer in racers)
    )
    assert sum(o.accepted for o in outcomes) == 60
    assert sum(o.duplicates for o in outcomes) == sum(len(r.results) for r in racers) - 60
    assert await counts(runtime) == {"SurveyLedger": 60, "Invitation": 60, "Dossier": 60}
    await runtime.dispatcher.drain()
    for code, chat in chats.items():
        questions = [m for m in await runtime.web.poll(chat, 0) if m.get("question_id")]
        assert len(questions) == 1, f"{code}: invited {len(questions)} times"


async def test_each_item_keeps_its_own_outcome_in_the_batchs_order(
    runtime: Runtime, agency: Agency
) -> None:
    runtime.settings.invite_cap_days = 7
    chat = await bound(runtime, agency, "HS-A")
    await bound(runtime, agency, "HS-B", chat)  # the same citizen, a second dossier
    stopped = await bound(runtime, agency, "HS-C")
    await route_text(runtime.service, "web", stopped, "/stop")
    items = batch("HS-A", "hs-a ", "HS-B", "HS-C", "HS-D", "HS-E", "HS-F").results
    items[4] = ResultReport(dossier_code="HS-D", returned_at=today(), official_code="NOBODY")
    items[5] = ResultReport(dossier_code="HS-E", returned_at=today(), procedure_code="9.9")
    items.append(ResultReport(dossier_code="HS-D", returned_at=today(), official_code="CB01"))
    outcome = await runtime.service.report_results(agency, ResultBatch(results=items))
    seen = [(i.index, i.status, i.survey_status, i.error) for i in outcome.items]
    assert seen == [
        (0, "survey_created", "sent", None),
        (1, "duplicate", None, None),  # the same code, spelled otherwise
        (2, "survey_created", "capped", None),  # its citizen was invited by item 0
        (3, "survey_created", "opted_out", None),
        (4, "rejected", None, "no official with code 'NOBODY' in this agency"),
        (5, "rejected", None, "no procedure with code '9.9'"),
        (6, "survey_created", "waiting_for_binding", None),
        (7, "survey_created", "waiting_for_binding", None),  # item 4 fixed: taken
    ]
    assert (outcome.accepted, outcome.duplicates, outcome.rejected) == (5, 1, 2)
    async with runtime.sessions() as session:
        ledger = {
            status: n
            for status, n in await session.execute(
                select(SurveyLedger.status, func.count()).group_by(SurveyLedger.status)
            )
        }
        caps = (await session.execute(select(func.count()).select_from(InviteCap))).scalar_one()
        pending = (
            await session.execute(select(func.count()).select_from(OutboxMessage).where(
                OutboxMessage.invitation_id.is_not(None)))
        ).scalar_one()  # fmt: skip
    assert ledger == {"sent": 1, "capped": 1, "opted_out": 1, "waiting": 2}
    assert caps == 1  # one chat invited: one cap row
    assert pending >= 1
    again = await runtime.service.report_results(agency, batch("HS-A", "HS-D", "HS-G"))
    assert [i.status for i in again.items] == ["duplicate", "duplicate", "survey_created"]
