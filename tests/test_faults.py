"""Fault tests (issue 12, item 5): ``surveybot serve --workers 3`` on PostgreSQL and Redis with
the Telegram emulator, citizens answering by taps through the real webhook, while something
breaks: a worker killed mid-dispatch, Redis flushed and restarted, PostgreSQL unreachable for
a few seconds, storms of 429 and 5xx; and, in process, a worker whose clock is 5 minutes off.
Each ends with every survey delivered, no dossier surveyed twice and no answer lost or doubled,
counted in the database and in the export."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bot.emulators.telegram import TelegramEmulator
from bot.runtime import Runtime
from storage import inbox, outbox
from storage.inbox_worker import InboxWorker
from storage.models import Agency, OutboxMessage, utcnow
from tests.children import free_port
from tests.conftest import scratch_pg_database
from tests.processes import (
    QUESTIONS,
    Service,
    Stored,
    answer_all,
    answer_by_taps,
    bot_messages,
    duplicates,
    serving,
    unanswered_question,
)
from tests.test_outbox import SlowChannel, dispatcher_for, make_runtime, start_survey
from tests.test_telegram_channel import texts

#: Each test is bounded: a fault that hangs the run fails it within two minutes.
pytestmark = pytest.mark.timeout(120)

CITIZENS = 6
#: Short leases, so a message or an event a killed process held is taken over within seconds.
SHORT_LEASES = {
    "SURVEYBOT_OUTBOX_LEASE_SECONDS": "3",
    "SURVEYBOT_INBOX_LEASE_SECONDS": "3",
    "SURVEYBOT_TAP_DEDUP_SECONDS": "1",  # shorter than the lease (settings.py says why)
}


@pytest.fixture
def own_database() -> Iterator[str]:
    with scratch_pg_database("surveybot_faults") as url:
        yield url


@pytest.fixture
async def emulator() -> AsyncIterator[TelegramEmulator]:
    async with TelegramEmulator(local_mode=True, webhook_backoff=(0.2, 0.5)) as emu:
        yield emu


def expected(citizens: int) -> Stored:
    return Stored(
        answers=citizens * len(QUESTIONS), export_rows=citizens, ledger_rows=citizens,
        ledger_dossiers=citizens, completed=citizens,
    )  # fmt: skip


async def surveyed(
    service: Service, prefix: str
) -> tuple[dict[str, int], asyncio.Task[list[list[str]]]]:
    """Citizens registered and bound, their results reported, and their answering begun."""
    citizens = await service.register_citizens(CITIZENS, prefix)
    assert await service.report(list(citizens)) == {"sent"}
    return citizens, asyncio.create_task(answer_all(service.emulator, citizens, timeout=60))


async def test_a_worker_killed_mid_dispatch_is_replaced_and_every_survey_completes(
    own_database: str, emulator: TelegramEmulator, tmp_path: Path, redis_prefix: str
) -> None:
    async with serving(
        own_database, emulator, tmp_path, redis_prefix, extra_env=SHORT_LEASES
    ) as service:
        workers = await service.pids(3)
        citizens, answering = await surveyed(service, "HS-KILL")
        # Mid-run: every citizen acknowledged, and the surveys' questions going out and answered.
        await emulator.wait_until(lambda: bot_messages(emulator, citizens) >= 4 * CITIZENS, 60)
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        answered = await answering
        replaced = await service.pids(3)
        assert victim not in replaced and len(replaced) == 3, "the killed worker was not replaced"
        assert service.process.returncode is None

        assert all(a == QUESTIONS for a in answered)
        # At least once: a kill between a send and its "sent" mark may resend one message;
        # what must not happen is an answer stored twice or lost, or a second survey.
        assert await service.stored() == expected(CITIZENS)
        resent = {uid: duplicates(emulator, uid) for uid in citizens.values()}
        assert sum(len(d) for d in resent.values()) <= 2, resent


class OwnRedis:
    """A redis-server of the test's own on a free port, without persistence: flushed, stopped
    and started again at will (the shared one on 6379 is never touched)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "no",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        async with asyncio.timeout(10):
            while True:
                client = Redis.from_url(self.url)
                try:
                    if await client.ping():
                        return
                except RedisError:
                    await asyncio.sleep(0.05)  # not listening yet
                finally:
                    await client.aclose()

    async def stop(self) -> None:
        """SIGTERM, and wait for it to exit (only the process this test started)."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    async def flushall(self) -> None:
        client = Redis.from_url(self.url)
        try:
            await client.flushall()
        finally:
            await client.aclose()


@pytest.fixture
async def own_redis() -> AsyncIterator[OwnRedis]:
    redis = OwnRedis(free_port())
    await redis.start()
    try:
        yield redis
    finally:
        await redis.stop()


async def test_redis_flushed_and_restarted_mid_run_loses_no_answer(
    own_database: str,
    emulator: TelegramEmulator,
    tmp_path: Path,
    redis_prefix: str,
    own_redis: OwnRedis,
) -> None:
    """Conversation state is in PostgreSQL; Redis holds coordination only (locks, limits,
    leases, dedup marks, message ids to edit): losing all of it, then Redis itself for a
    moment, costs no answer and surveys no one twice."""
    async with serving(
        own_database, emulator, tmp_path, redis_prefix, redis_url=own_redis.url,
        extra_env=SHORT_LEASES,
    ) as service:  # fmt: skip
        citizens, answering = await surveyed(service, "HS-REDIS")
        await emulator.wait_until(lambda: bot_messages(emulator, citizens) >= 4 * CITIZENS, 60)
        await own_redis.flushall()
        await emulator.wait_until(lambda: bot_messages(emulator, citizens) >= 5 * CITIZENS, 60)
        await own_redis.stop()
        await own_redis.start()  # empty again, on the same port
        answered = await answering
        assert service.process.returncode is None
        assert all(a == QUESTIONS for a in answered)
        assert await service.stored() == expected(CITIZENS)
        for uid in citizens.values():
            assert duplicates(emulator, uid) == [], "a message reached a citizen twice"


class TcpProxy:
    """A TCP proxy in the test's loop between the service and PostgreSQL, so the database can
    "go away" without touching the shared server: ``down`` aborts every proxied connection and
    stops listening (new connections are refused), ``up`` listens again on the same port."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self.connections = 0

    async def up(self) -> None:
        self._server = await asyncio.start_server(
            self._link, "127.0.0.1", self.port, reuse_address=True
        )

    async def down(self) -> None:
        assert self._server is not None
        self._server.close()
        self._server = None
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def close(self) -> None:
        if self._server is not None:
            await self.down()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._links.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._links.discard(sink)
            sink.transport.abort()


async def test_postgresql_unreachable_for_seconds_then_back_everything_recovers(
    own_database: str, emulator: TelegramEmulator, tmp_path: Path, redis_prefix: str
) -> None:
    """Every connection to PostgreSQL is cut and new ones refused while a citizen taps: the
    webhook answers 503 (the inbox cannot store the update, nothing is acknowledged) and the
    emulator redelivers; once the database is back the same processes go on (none exits or is
    restarted) and every survey completes, with each answer stored once."""
    database = make_url(own_database)
    proxy = TcpProxy(database.host or "127.0.0.1", database.port or 5432)
    await proxy.up()
    served = database.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        async with serving(
            own_database, emulator, tmp_path, redis_prefix, served_database_url=served,
            extra_env=SHORT_LEASES,
        ) as service:  # fmt: skip
            workers = await service.pids(3)
            citizens = await service.register_citizens(CITIZENS, "HS-PG")
            *others, probe = citizens.values()
            assert await service.report(list(citizens)) == {"sent"}
            answering = asyncio.create_task(
                answer_all(emulator, {str(uid): uid for uid in others}, timeout=60)
            )
            await emulator.wait_until(lambda: unanswered_question(emulator, probe, []) is not None)
            found = unanswered_question(emulator, probe, [])
            assert found is not None
            message_id, first, data = found

            await proxy.down()
            refused = len([a for a in emulator.webhook_attempts if not a.ok])
            update = await emulator.tap_button(probe, message_id, data)

            def refusals() -> list[int | None]:
                return [
                    a.status for a in emulator.webhook_attempts[refused:]
                    if a.update_id == update["update_id"] and not a.ok
                ]  # fmt: skip

            # Down for as long as the emulator takes to be refused six times (~3 s).
            await emulator.wait_until(lambda: len(refusals()) >= 6, 30)
            await proxy.up()

            answered = [
                await answer_by_taps(emulator, probe, 60, already=[first]),
                *await answering,
            ]
            assert set(refusals()) == {503}, (
                "the webhook did not answer 503 while it could not store"
            )
            assert all(a == QUESTIONS for a in answered)
            assert await service.pids(3) == workers, "a process exited or was restarted"
            assert service.process.returncode is None
            # A send whose "sent" mark was cut may go out again (at least once); an answer
            # stored twice or lost, or a second survey, may not.
            assert await service.stored() == expected(CITIZENS)
    finally:
        await proxy.close()


async def test_storms_of_429_and_5xx_across_three_workers_end_with_every_message_seen_once(
    own_database: str, emulator: TelegramEmulator, tmp_path: Path, redis_prefix: str
) -> None:
    """Telegram answers floods of 429 (with ``retry_after``) and 5xx to three dispatchers at
    once: each backs off and retries, and every citizen sees each message exactly once."""
    async with serving(own_database, emulator, tmp_path, redis_prefix) as service:
        citizens = await service.register_citizens(CITIZENS, "HS-STORM")
        emulator.inject("sendMessage", "429", count=6, retry_after=1)
        emulator.inject("sendMessage", "500", count=4)
        emulator.inject("sendMessage", "502", count=2)
        emulator.inject("editMessageText", "502", count=4)
        emulator.inject("editMessageText", "429", count=3, retry_after=1)
        assert await service.report(list(citizens)) == {"sent"}
        answered = await answer_all(emulator, citizens, timeout=60)

        faults = [c for c in emulator.calls if c.fault or c.status == 429]
        assert len([c for c in faults if c.status == 429]) >= 9 and len(faults) >= 19
        assert all(a == QUESTIONS for a in answered)
        for uid in citizens.values():
            assert duplicates(emulator, uid) == [], "a message was delivered twice"
            assert (
                len(texts(emulator, uid)) == 1 + 1 + len(QUESTIONS) + 1
            )  # thanks, intro, ..., thank-you
        assert await service.stored() == expected(CITIZENS)
        async with service.local.sessions() as session:
            dead = await session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.status == "dead")
            )
        assert dead == 0


FIVE_MINUTES = dt.timedelta(minutes=5)


def ahead() -> dt.datetime:
    """The clock of a machine 5 minutes fast."""
    return utcnow() + FIVE_MINUTES


async def test_a_worker_whose_clock_is_five_minutes_ahead_takes_no_lease_over_early(
    runtime: Runtime, agency: Agency
) -> None:
    """Two runtimes on one database, the second's dispatcher and inbox worker on a clock
    5 minutes fast. A message or an event the honest one holds (a 60 s lease, its send or
    handler still running) is not taken over by the skewed one, so nothing is sent or handled
    twice; and a lease the skewed one took runs out on the database's clock, not 5 minutes
    late. Fails when leases are compared against the claimant's own clock."""
    honest_rt, _ = await make_runtime(runtime)
    slow = SlowChannel()
    honest_rt.channels["flaky"] = slow
    skewed_rt = await Runtime.create(runtime.settings, keyring=runtime.keyring, migrate=False)
    skewed_rt.channels["flaky"] = slow  # one channel: it records what both sent
    try:
        # The outbox: the honest dispatcher's send is stuck; the skewed one runs a round.
        slow.slow_for.add("us")
        await start_survey(honest_rt, agency, "HS-SKEW-1", "us", drain=False)
        honest = dispatcher_for(honest_rt)
        skewed = dispatcher_for(skewed_rt, clock=ahead)
        sending = asyncio.create_task(honest.run_once())
        await asyncio.wait_for(slow.started.wait(), 10)
        assert await skewed.run_once() == 0, "the skewed worker took a leased message over"
        slow.finish.set()
        await sending
        await honest.drain()
        assert len(slow.received["us"]) == len(set(slow.received["us"])), "a message went twice"

        # A lease the skewed worker took (then died) ends on the database's clock.
        await start_survey(honest_rt, agency, "HS-SKEW-2", "them", drain=False)
        async with skewed_rt.sessions() as session:
            held = await outbox.claim(session, 10, ahead(), lease=dt.timedelta(seconds=1))
        assert len(held) == 1  # and never sent: its claimant is gone
        async with asyncio.timeout(10):  # not 5 minutes
            while not slow.received["them"]:
                if not await honest.run_once():
                    await asyncio.sleep(0.1)  # the lease has not run out yet

        # The inbox: the honest worker's handler is running; the skewed worker runs a round.
        handled: list[str] = []
        running, finish = asyncio.Event(), asyncio.Event()

        async def handler(event: inbox.Claimed) -> None:
            handled.append(event.body["n"])
            running.set()
            await finish.wait()

        honest_worker = InboxWorker(honest_rt.sessions, runtime.keyring)
        skewed_worker = InboxWorker(skewed_rt.sessions, runtime.keyring, clock=ahead)
        for worker in (honest_worker, skewed_worker):
            worker.register("skewtest", handler)
        async with honest_rt.sessions() as session:
            await inbox.accept(
                session, runtime.keyring, channel="skewtest", event_key="e-1", conversation="c-1",
                body={"n": "e-1"},
            )  # fmt: skip
            await session.commit()
        processing = asyncio.create_task(honest_worker.run_once())
        await asyncio.wait_for(running.wait(), 10)
        assert await skewed_worker.run_once() == 0, "the skewed worker took a leased event over"
        finish.set()
        assert await processing == 1
        assert handled == ["e-1"]
    finally:
        slow.finish.set()
        await skewed_rt.close()
