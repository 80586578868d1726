"""The outbox and dispatcher: at least once, in order per conversation, replies before
invitations, retries with backoff, permanent refusals close the survey, Redis loss loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import select

from bot.channels import Capabilities, DeliveryError, OutboundMessage
from bot.dispatch import Dispatcher
from bot.flows.engine import Choice, Reply
from bot.runtime import Runtime
from bot.schemas import DossierRegistration, ResultBatch, ResultReport
from storage import outbox
from storage.db import make_engine, make_sessions
from storage.models import Agency, Answer, OutboxMessage, SurveyLedger
from tests.conftest import REDIS_URL, today


class FlakyChannel:
    """A channel that fails as told, and records what each address received."""

    name = "flaky"
    capabilities = Capabilities(buttons=True, max_text_chars=4096)

    def __init__(self) -> None:
        self.received: dict[str, list[str]] = defaultdict(list)
        self.failures: list[DeliveryError | Exception] = []

    async def send(self, address: str, message: OutboundMessage) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.received[address].append(message.text)


async def make_runtime(runtime: Runtime) -> tuple[Runtime, FlakyChannel]:
    channel = FlakyChannel()
    runtime.channels["flaky"] = channel
    runtime.service.capabilities = {**runtime.service.capabilities, "flaky": channel.capabilities}
    return runtime, channel


async def start_survey(
    runtime: Runtime, agency: Agency, code: str, address: str, drain: bool = True
) -> None:
    reg = await runtime.service.register_dossier(agency, DossierRegistration(dossier_code=code))
    await runtime.service.bind(reg.rating_token, "flaky", address, "vi")
    if drain:
        await runtime.dispatcher.drain()  # the "you will receive a survey" acknowledgement
    await runtime.service.report_results(
        agency, ResultBatch(results=[ResultReport(dossier_code=code, returned_at=today())])
    )


def force_ready(runtime: Runtime) -> Any:
    """Make every backoff elapse at once (the tests do not sleep)."""

    async def run() -> None:
        async with runtime.sessions() as session:
            for row in (await session.execute(select(OutboxMessage))).scalars():
                row.available_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
            await session.commit()

    return run()


async def test_transient_failures_are_retried_and_each_message_arrives_once_in_order(
    runtime: Runtime, agency: Agency
) -> None:
    runtime, channel = await make_runtime(runtime)
    await start_survey(runtime, agency, "HS-1", "u1")
    channel.failures = [DeliveryError("5xx"), DeliveryError("429", retry_after=3), TimeoutError()]
    for _ in range(10):
        await force_ready(runtime)
        await runtime.dispatcher.drain()
    texts = channel.received["u1"]
    assert len(texts) == 3 and "Kính chào" in texts[1] and "bao nhiêu lần" in texts[2]
    async with runtime.sessions() as session:
        rows = (await session.execute(select(OutboxMessage))).scalars().all()
        assert {r.status for r in rows} == {"sent"} and max(r.attempts for r in rows) == 4


async def test_retry_after_is_honoured(runtime: Runtime, agency: Agency) -> None:
    runtime, channel = await make_runtime(runtime)
    await start_survey(runtime, agency, "HS-2", "u2")
    channel.failures = [DeliveryError("429", retry_after=30)]
    await runtime.dispatcher.drain()
    assert (
        len(channel.received["u2"]) == 1
    )  # the intro waits 30 s; the question does not overtake it
    async with runtime.sessions() as session:
        head = (
            (
                await session.execute(
                    select(OutboxMessage)
                    .where(OutboxMessage.status.in_(outbox.UNSENT))
                    .order_by(OutboxMessage.created_at)
                )
            )
            .scalars()
            .first()
        )
        assert head is not None and head.available_at > dt.datetime.now(dt.UTC) + dt.timedelta(
            seconds=25
        )


async def test_permanent_refusal_closes_the_survey_without_retrying(
    runtime: Runtime, agency: Agency
) -> None:
    runtime, channel = await make_runtime(runtime)
    await start_survey(runtime, agency, "HS-3", "u3")
    channel.failures = [DeliveryError("blocked", permanent=True)]
    await runtime.dispatcher.drain()
    await force_ready(runtime)
    await runtime.dispatcher.drain()
    async with runtime.sessions() as session:
        ledger = (await session.execute(select(SurveyLedger))).scalar_one()
        assert ledger.status == "undeliverable"
        statuses = (await session.execute(select(OutboxMessage.status))).scalars().all()
        assert "dead" in statuses
    assert len(channel.received["u3"]) == 1  # only the binding acknowledgement: no retry storm


async def test_replies_go_before_a_backlog_of_invitations(runtime: Runtime, agency: Agency) -> None:
    runtime, channel = await make_runtime(runtime)
    await start_survey(runtime, agency, "HS-A", "citizen")
    await runtime.dispatcher.drain()
    for i in range(120):  # a day's batch of invitations to other citizens
        await start_survey(runtime, agency, f"HS-BULK-{i}", f"bulk{i}")
    await runtime.service.handle("flaky", "citizen", Reply("1"))
    small = Dispatcher(
        runtime.sessions,
        runtime.keyring,
        runtime.channels,
        max_attempts=3,
        interval=0.1,
        on_undeliverable=runtime.service.mark_undeliverable,
        on_delivered=runtime.service.mark_delivered,
        batch_size=5,
    )
    await small.run_once()
    assert len(channel.received["citizen"]) == 4  # ack, intro, c3, then the reply c4 at once


async def test_an_acknowledged_answer_survives_a_redis_flush(
    runtime: Runtime, agency: Agency, redis_prefix: str
) -> None:
    runtime, channel = await make_runtime(runtime)
    await start_survey(runtime, agency, "HS-R", "ur")
    await runtime.dispatcher.drain()
    tag = await runtime.service.current_question("flaky", "ur")
    assert tag is not None
    await runtime.service.handle("flaky", "ur", Choice(tag[1], "c3", "0"))
    client = Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=f"{redis_prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
    await runtime.service.handle("flaky", "ur", Reply("2"))
    await runtime.dispatcher.drain()
    async with runtime.sessions() as session:
        answers = {
            a.question_id: a.value for a in (await session.execute(select(Answer))).scalars()
        }
    assert answers == {"c3": "0", "c4": "desk"}
    assert "Ông/Bà đã phải liên hệ với bao nhiêu" in channel.received["ur"][-2]


async def test_claims_are_exclusive_between_dispatchers(
    runtime: Runtime, agency: Agency, database_url: str
) -> None:
    """Eight claimers, each on its own engine, released together: every head claimed once.

    The claim is one statement; on PostgreSQL its ``FOR UPDATE SKIP LOCKED`` and the outer
    re-check stand between them and a double claim (remove both and this test fails there)."""
    runtime, _ = await make_runtime(runtime)
    for i in range(20):
        await start_survey(runtime, agency, f"HS-C-{i}", f"c{i}", drain=False)
    claimers = 8
    engines = [make_engine(database_url) for _ in range(claimers)]
    together = asyncio.Barrier(claimers)

    async def dispatcher(index: int) -> list[outbox.Claimed]:
        async with make_sessions(engines[index])() as session:
            if runtime.engine.dialect.name == "postgresql":
                await session.execute(select(1))  # connected (SQLite: would hold the writer)
            await together.wait()
            return await outbox.claim(session, 50)

    try:
        claims = await asyncio.gather(*(dispatcher(i) for i in range(claimers)))
    finally:
        for engine in engines:
            await engine.dispose()
    ids = [c.id for claimed in claims for c in claimed]
    assert len(ids) == 20 and len(set(ids)) == 20  # one head per conversation, claimed once


class SlowChannel(FlakyChannel):
    """The first send to each listed address waits until the test lets it finish (a channel
    answering slowly); later ones go at once."""

    name = "flaky"

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.finish = asyncio.Event()
        self.slow_for: set[str] = set()

    async def send(self, address: str, message: OutboundMessage) -> None:
        if address in self.slow_for:
            self.slow_for.discard(address)
            self.started.set()
            await self.finish.wait()
        await super().send(address, message)


def dispatcher_for(runtime: Runtime, **options: Any) -> Dispatcher:
    return Dispatcher(
        runtime.sessions,
        runtime.keyring,
        runtime.channels,
        max_attempts=3,
        interval=0.05,
        on_undeliverable=runtime.service.mark_undeliverable,
        on_delivered=runtime.service.mark_delivered,
        **options,
    )


@contextlib.asynccontextmanager
async def running(dispatcher: Dispatcher, slow: SlowChannel) -> AsyncIterator[None]:
    """The dispatcher's loops running; on the way out the stuck sends finish and it stops."""
    stop = asyncio.Event()
    loop = asyncio.create_task(dispatcher.run_forever(stop))
    try:
        yield
    finally:
        slow.finish.set()
        stop.set()
        await loop


async def answered(
    runtime: Runtime, dispatcher: Dispatcher, slow: SlowChannel, address: str
) -> int:
    """The citizen at ``address`` answers; waits for the reply to reach them. How many
    messages they had before."""
    before = len(slow.received[address])
    await runtime.service.handle("flaky", address, Reply("1"))
    dispatcher.kick()
    async with asyncio.timeout(20):
        while len(slow.received[address]) < before + 1:  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.01)
    return before


async def test_a_send_that_outlives_its_lease_is_not_sent_twice(
    runtime: Runtime, agency: Agency
) -> None:
    """The first dispatcher's send takes many leases long; a second dispatcher runs rounds the
    whole time. The lease is renewed while the send runs, so the message goes out once.
    Fails without the heartbeat (``Dispatcher._keep_leases``)."""
    runtime, _ = await make_runtime(runtime)
    slow = SlowChannel()
    runtime.channels["flaky"] = slow
    slow.slow_for.add("us")
    await start_survey(runtime, agency, "HS-L", "us", drain=False)
    lease = dt.timedelta(seconds=0.6)
    first, second = dispatcher_for(runtime, lease=lease), dispatcher_for(runtime, lease=lease)
    sending = asyncio.create_task(first.run_once())
    await slow.started.wait()
    for _ in range(8):  # eight rounds over four leases' time, while the send is stuck
        await second.run_once()
        await asyncio.wait_for(asyncio.shield(asyncio.sleep(lease.total_seconds() / 2)), 5)
    slow.finish.set()
    await sending
    await first.drain()
    texts = slow.received["us"]
    assert len(texts) == len(set(texts)), "a message was sent twice"
    assert texts[0].startswith("Cảm ơn")


async def test_a_reply_goes_out_while_invitations_fill_every_slot(
    runtime: Runtime, agency: Agency
) -> None:
    """Every invitation slot is held by a send that does not return; a citizen's answer is
    still acknowledged and the next question sent: replies have a lane of their own."""
    runtime, _ = await make_runtime(runtime)
    await start_survey(runtime, agency, "HS-A2", "citizen")
    await runtime.dispatcher.drain()
    slow = SlowChannel()
    slow.received = runtime.channels["flaky"].received  # type: ignore[attr-defined]
    runtime.channels["flaky"] = slow
    for i in range(4):  # four other citizens bound (those replies delivered)...
        reg = await runtime.service.register_dossier(
            agency, DossierRegistration(dossier_code=f"HS-BULK2-{i}")
        )
        await runtime.service.bind(reg.rating_token, "flaky", f"bulk{i}", "vi")
    await runtime.dispatcher.drain()
    slow.slow_for = {f"bulk{i}" for i in range(4)}
    for i in range(4):  # ...then their invitations, whose sends will not return
        await runtime.service.report_results(agency, ResultBatch(
            results=[ResultReport(dossier_code=f"HS-BULK2-{i}", returned_at=today())]))  # fmt: skip
    dispatcher = dispatcher_for(runtime, concurrency=2, reply_concurrency=1)
    async with running(dispatcher, slow):
        async with asyncio.timeout(20):
            await slow.started.wait()  # the invitation slots are stuck
        before = await answered(runtime, dispatcher, slow, "citizen")
    assert len(slow.received["citizen"]) >= before + 1


async def test_a_reply_goes_out_while_another_conversations_reply_is_still_being_sent(
    runtime: Runtime, agency: Agency
) -> None:
    """One citizen's acknowledgement is stuck at the channel (a slow answer, or a chat's own
    spacing); another citizen's answer is still acknowledged at once: a free reply slot is
    used as soon as a message is queued, not after the stuck send's round ends."""
    runtime, _ = await make_runtime(runtime)
    await start_survey(runtime, agency, "HS-R1", "stuck")
    await start_survey(runtime, agency, "HS-R2", "quick")
    await runtime.dispatcher.drain()
    slow = SlowChannel()
    slow.received = runtime.channels["flaky"].received  # type: ignore[attr-defined]
    runtime.channels["flaky"] = slow
    slow.slow_for = {"stuck"}
    dispatcher = dispatcher_for(runtime, reply_concurrency=4)
    async with running(dispatcher, slow):
        await runtime.service.handle("flaky", "stuck", Reply("1"))
        dispatcher.kick()
        async with asyncio.timeout(20):
            await slow.started.wait()  # the first citizen's acknowledgement is stuck
        await answered(runtime, dispatcher, slow, "quick")
        assert not slow.finish.is_set() and "stuck" not in slow.slow_for


async def test_a_conversations_messages_go_out_back_to_back_in_one_round(
    runtime: Runtime, agency: Agency
) -> None:
    runtime, channel = await make_runtime(runtime)
    await start_survey(runtime, agency, "HS-F", "uf", drain=False)
    assert await runtime.dispatcher.run_once() == 3  # acknowledgement, intro, first question
    assert [t[:9] for t in channel.received["uf"]] == ["Cảm ơn Ôn", "Kính chào", "Để hoàn t"]


async def test_sends_finishing_together_each_go_on_in_their_own_conversation_and_count_delivered(
    runtime: Runtime, agency: Agency
) -> None:
    """Forty conversations sent at once share their "sent" marks (``bot.sent_marks``): each
    still gets its own next message, in order, and every survey is counted delivered; the one
    refused for good is not."""
    runtime, channel = await make_runtime(runtime)
    for i in range(40):
        reg = await runtime.service.register_dossier(
            agency, DossierRegistration(dossier_code=f"HS-G{i}")
        )
        await runtime.service.bind(reg.rating_token, "flaky", f"g{i}", "vi")
    await runtime.dispatcher.drain()  # the acknowledgements
    results = [ResultReport(dossier_code=f"HS-G{i}", returned_at=today()) for i in range(40)]
    await runtime.service.report_results(agency, ResultBatch(results=results))
    channel.failures = [DeliveryError("blocked", permanent=True)]  # the first send: g0's
    await runtime.dispatcher.drain()
    assert [t[:9] for t in channel.received["g0"]] == ["Cảm ơn Ôn"]  # before the survey
    for i in range(1, 40):
        assert [t[:9] for t in channel.received[f"g{i}"]] == ["Cảm ơn Ôn", "Kính chào", "Để hoàn t"]
    async with runtime.sessions() as session:
        ledgers = (await session.execute(select(SurveyLedger))).scalars().all()
    assert sorted((ledger.status, ledger.delivered) for ledger in ledgers) == [
        ("sent", True)
    ] * 39 + [("undeliverable", False)]


async def test_a_graceful_stop_finishes_the_send_under_way_and_gives_back_the_rest(
    runtime: Runtime, agency: Agency
) -> None:
    """Stopping while a send is stuck: the stop waits for it (the citizen gets that message
    once), starts nothing new, and leaves no message claimed for another process to wait on."""
    runtime, _ = await make_runtime(runtime)
    slow = SlowChannel()
    runtime.channels["flaky"] = slow
    for i in range(3):
        reg = await runtime.service.register_dossier(
            agency, DossierRegistration(dossier_code=f"HS-G-{i}")
        )
        await runtime.service.bind(reg.rating_token, "flaky", f"g{i}", "vi")
    await runtime.dispatcher.drain()
    slow.slow_for = {"g0"}
    for i in range(3):
        await runtime.service.report_results(agency, ResultBatch(
            results=[ResultReport(dossier_code=f"HS-G-{i}", returned_at=today())]))  # fmt: skip
    before = len(slow.received["g0"])
    runtime.start_background()
    async with asyncio.timeout(20):
        await slow.started.wait()
    closing = asyncio.create_task(runtime.close())
    async with asyncio.timeout(20):
        while not runtime.dispatcher._stopping.is_set():  # noqa: ASYNC110 - the stop began
            await asyncio.sleep(0.01)
    slow.finish.set()
    await closing
    async with runtime.sessions() as session:
        rows = (await session.execute(select(OutboxMessage))).scalars().all()
    assert [r.status for r in rows if r.status == "sending"] == [], "a message left claimed"
    assert len(slow.received["g0"]) == before + 1  # the send under way finished, once
    waiting = [r for r in rows if r.status == "pending"]
    assert waiting and all(r.attempts == 0 for r in waiting)  # given back, attempt not counted


async def stall(
    runtime: Runtime, agency: Agency, channel: FlakyChannel, code: str, address: str
) -> Dispatcher:
    """A survey whose invitation runs out of retries on passing failures (an outage)."""
    await start_survey(runtime, agency, code, address)
    dispatcher = dispatcher_for(runtime)  # three attempts
    channel.failures = [DeliveryError("502 Bad Gateway") for _ in range(3)]
    for _ in range(4):
        await force_ready(runtime)
        await dispatcher.drain()
    return dispatcher


async def test_an_outage_stalls_the_survey_until_an_admin_retries(
    runtime: Runtime, agency: Agency
) -> None:
    """Retries run out during an outage and the citizen bound no other channel: the survey
    stays open, its message kept sealed; once retried it goes out once and the survey goes on.
    (Before, the survey was closed as undeliverable: an outage lost every survey it touched.)"""
    runtime, channel = await make_runtime(runtime)
    dispatcher = await stall(runtime, agency, channel, "HS-S", "us")
    async with runtime.sessions() as session:
        ledger = (await session.execute(select(SurveyLedger))).scalar_one()
        [stalled] = await outbox.stalled(session)
        row = await session.get(OutboxMessage, stalled.id)
        assert row is not None and row.address_sealed and "us" not in row.address_sealed
    assert ledger.status != "undeliverable"
    assert (stalled.channel, stalled.attempts, stalled.reason) == ("flaky", 3, "502 Bad Gateway")
    assert len(channel.received["us"]) == 1  # the binding acknowledgement only
    await force_ready(runtime)
    await dispatcher.drain()
    assert len(channel.received["us"]) == 1  # nothing goes until someone retries

    async with runtime.sessions() as session:
        assert await outbox.retry_stalled(session, [stalled.id]) == 1
        await session.commit()
        assert await outbox.retry_stalled(session, [stalled.id]) == 0  # a second click: nothing
    await dispatcher.drain()
    texts = channel.received["us"]
    assert len(texts) == 3 and "Kính chào" in texts[1] and "bao nhiêu lần" in texts[2]
    assert len(set(texts)) == 3


async def test_a_stalled_message_is_erased_when_its_survey_expires(
    runtime: Runtime, agency: Agency
) -> None:
    runtime, channel = await make_runtime(runtime)
    await stall(runtime, agency, channel, "HS-E", "ue")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=runtime.settings.survey_ttl_hours + 1)
    runtime.service.clock = lambda: later
    assert await runtime.service.close_expired() == 1
    async with runtime.sessions() as session:
        assert await outbox.stalled(session) == []
        assert await outbox.retry_stalled(session, None) == 0  # nothing to revive
        rows = (await session.execute(select(OutboxMessage))).scalars().all()
        assert all(r.address_sealed is None and r.payload == {} for r in rows if r.status != "sent")
        ledger = (await session.execute(select(SurveyLedger))).scalar_one()
    assert ledger.status == "expired"
