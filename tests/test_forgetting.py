"""Operational data forgets (brief invariant 6): the outbox never holds a readable answer, a
delivered message keeps nothing that links it to its conversation, and what closed surveys leave
behind for delivery and de-duplication is purged on the configured schedule.

Checked by looking at the rows, as an operator with database access but no keys would.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from sqlalchemy import func, select

from bot.adapters.zalo.ratings import record_rating
from bot.adapters.zalo.zns import SURVEY as ZNS_SURVEY
from bot.adapters.zalo.zns import Rating
from bot.channels import Capabilities, OutboundMessage
from bot.flows.engine import Reply
from bot.runtime import Runtime
from bot.schemas import DossierRegistration, ResultBatch, ResultReport
from storage.models import (
    Agency,
    InboxEvent,
    Invitation,
    OutboxMessage,
    Response,
    ZnsTracking,
    utcnow,
)
from tests.conftest import today
from tests.test_lifecycle import back_to_now, open_survey, texts, travel

#: The answers typed below and the labels their acknowledgements echo ("Đã chọn: …").
COMMENT = "Phòng chờ hơi nóng, nên có thêm quạt"
ECHOED = ["Không lần nào", "Không phải liên hệ nơi nào khác", "Nhiệt tình, chu đáo",
          "Rất hài lòng", "Có, cả niêm yết và trên mạng", COMMENT]  # fmt: skip


async def outbox_dump(runtime: Runtime) -> tuple[list[OutboxMessage], str]:
    async with runtime.sessions() as session:
        rows = list((await session.execute(select(OutboxMessage))).scalars())
    text = "\n".join(
        repr({c.name: getattr(row, c.name) for c in OutboxMessage.__table__.columns})
        for row in rows
    )
    return rows, text


async def test_answers_are_never_readable_in_the_outbox_and_closed_conversations_are_purged(
    runtime: Runtime, agency: Agency
) -> None:
    citizen = await open_survey(runtime, agency, "HS-F1")
    other = await open_survey(runtime, agency, "HS-F2")  # another citizen, mid-survey
    await runtime.service.handle("web", other, Reply("1"))
    contact = runtime.keyring.channel_pseudonym("contact", "web", citizen).digest

    for reply in ["1", "1", "1", "1", "1", COMMENT]:
        await runtime.service.handle("web", citizen, Reply(reply))
    rows, before_delivery = await outbox_dump(runtime)
    assert sum(row.status == "pending" for row in rows) >= 7  # six acknowledgements, a thank-you
    for echoed in ECHOED:
        assert echoed not in before_delivery, "an answer is readable in the queued outbox"

    await runtime.dispatcher.drain()
    delivered = "\n".join(await texts(runtime, citizen))
    assert all(f"Đã chọn: {echoed}" in delivered for echoed in ECHOED[:2])  # they were there
    assert (await texts(runtime, citizen))[-1].startswith("Cảm ơn Ông/Bà đã đánh giá")

    rows, after_delivery = await outbox_dump(runtime)
    for echoed in ECHOED:
        assert echoed not in after_delivery
    assert contact not in after_delivery  # nothing ties a delivered row to its conversation
    for row in rows:
        assert (row.status, row.payload, row.address_sealed, row.conversation) == (
            "sent", {}, None, "",
        )  # fmt: skip
        for at in (row.created_at, row.available_at, row.sent_at):
            assert at is not None and (at.minute, at.second, at.microsecond) == (0, 0, 0)

    # Within the retention the rows stay (a resend or a count may still need them)...
    assert (await runtime.service.purge_closed()).outbox == 0
    travel(runtime, runtime.settings.outbox_retention_hours + 1)
    purged = await runtime.service.purge_closed()
    back_to_now(runtime)
    # ...then the closed conversation's rows are gone; the open survey keeps its own (their
    # dedup keys still stop a second start or reminder of it).
    rows, _ = await outbox_dump(runtime)
    async with runtime.sessions() as session:
        [still_open] = (await session.execute(select(Invitation.id))).scalars().all()
    assert purged.outbox > 0 and rows
    assert {row.invitation_id for row in rows} == {still_open}


class ZnsStub:
    """Stands in for the ZNS channel: records which template messages went out."""

    name = "zns"
    #: What makes a channel ZNS-like to the application: its own templated survey, and an
    #: address (the phone) forgotten once sent.
    capabilities = Capabilities(
        buttons=False,
        max_text_chars=400,
        template_survey=ZNS_SURVEY,
        forget_address_once_sent=True,
    )

    def __init__(self) -> None:
        self.sent: dict[str, list[OutboundMessage]] = defaultdict(list)

    async def send(self, address: str, message: OutboundMessage) -> None:
        self.sent[address].append(message)


async def test_a_closed_zns_survey_leaves_no_tracking_id_and_old_webhook_marks_go(
    runtime: Runtime, agency: Agency
) -> None:
    zns = ZnsStub()
    runtime.channels["zns"] = zns
    runtime.service.capabilities = {**runtime.service.capabilities, "zns": zns.capabilities}
    registration = DossierRegistration(dossier_code="HS-ZNS-1", phone="0912345678")
    await runtime.service.register_dossier(agency, registration)
    await runtime.service.report_results(
        agency, ResultBatch(results=[ResultReport(dossier_code="HS-ZNS-1", returned_at=today())])
    )
    await runtime.dispatcher.drain()
    [template] = [message for sent in zns.sent.values() for message in sent]
    tracking_id = template.extra["zns_tracking_id"]

    travel(runtime, runtime.settings.survey_ttl_hours + 1)
    assert await runtime.service.close_expired() == 1
    back_to_now(runtime)
    async with runtime.sessions() as session:
        # Zalo can map the tracking id to the phone: it is deleted with the survey...
        assert await session.get(ZnsTracking, tracking_id) is None
        # ...and what an orphan row (written before this rule) is purged on the next round.
        session.add(ZnsTracking(tracking_id="orphan", invitation_id="gone"))
        now = utcnow()
        # A processed event's replay mark outlives every channel's redelivery window, then goes.
        window = dt.timedelta(hours=runtime.settings.inbox_replay_mark_hours)
        for key, hour in (
            ("old", now - window - dt.timedelta(hours=1)),
            ("inside", now - window + dt.timedelta(hours=1)),
            ("fresh", now),
        ):
            session.add(InboxEvent(channel="zalo_oa", event_key=key, conversation="",
                                   status="done", received_at=hour, available_at=hour))  # fmt: skip
        await session.commit()
    # A late rating of the closed survey is not stored.
    assert not await record_rating(runtime.service, Rating("m1", tracking_id, 5))
    purged = await runtime.service.purge_closed()
    assert (purged.zns_tracking, purged.inbox) == (1, 1)
    async with runtime.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(ZnsTracking)) == 0
        marks = (await session.execute(select(InboxEvent))).scalars()
        assert sorted(w.event_key for w in marks) == ["fresh", "inside"]  # replays still refused
        assert await session.scalar(select(func.count()).select_from(Response)) == 0
