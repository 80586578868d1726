"""Answer-path benchmark: a citizen's tap in Telegram to the next question handed to Telegram,
through the real webhook, on PostgreSQL and Redis, against a bare aiohttp handler parsing the
same update JSON in the same run.

The Telegram emulator (``bot/emulators/telegram.py``) delivers each tap to
``/telegram/webhook`` as Telegram does (secret header, per-chat order); the service (the real
app in this process, its inbox worker and dispatcher running, python-telegram-bot as its client)
stores the update, processes it, and sends the acknowledgement (the answer edited into the
question) and the next question back through the Bot API. A wait is measured from the tap
(the emulator posts the update at once) to the next question's ``sendMessage`` arriving at
the emulator; answers/s is answers over the wall time of a wave of N citizens answering
every question at once. The emulator's flood limits are off here (``python -m bench dispatch``
measures them): a chat's 1/s would make this a measure of Telegram's limit, not of our path.

``bare``: the same emulator posts the same kind of update (a forged tap) to a handler that only
parses it, N chats at once: the ceiling of the HTTP and JSON layer on this machine, now.

Target (issue 12): ratio ≥ 0.10. Prints the figures and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import time
from collections import Counter
from typing import Any

import telegram
from aiohttp import web
from sqlalchemy import event

from bench.common import (
    PROCEDURE,
    REDIS,
    SECRET,
    TimedEmulator,
    add_agency,
    percentile,
    scratch_database,
    serve,
)
from bot.app import create_app
from bot.runtime import Runtime
from bot.schemas import DossierRegistration, ResultBatch, ResultReport
from settings import load_settings
from storage.coordination import RedisCoordinator
from storage.migrate import upgrade_async
from storage.models import Agency
from storage.pseudonym import KeyRing

TOKEN = "7654321098:AAbench-answer-path"  # noqa: S105 - the emulator's fake token
TARGET = 0.10
TIMEOUT = 120.0


async def _citizens(
    runtime: Runtime, agency: Agency, emulator: TimedEmulator, count: int, wave: int
) -> list[int]:
    """``count`` citizens, each with a dossier opened in a chat and its survey's first question
    on screen (setup: not timed)."""
    today = dt.date.today()
    uids, codes = [], []
    for n in range(count):
        code = f"000.00.12.H29-{wave:03d}{n:05d}"
        registration = await runtime.service.register_dossier(
            agency,
            DossierRegistration(
                dossier_code=code,
                procedure_code=PROCEDURE,
                official_code=f"CB{n % 10:02d}",
                received_at=today - dt.timedelta(days=6),
                due_at=today + dt.timedelta(days=1),
            ),
        )
        uid = emulator.new_user_id()
        await emulator.open_deep_link(uid, registration.rating_token)
        uids.append(uid)
        codes.append(code)
    for uid in uids:  # "you will get a survey when the result is ready"
        await emulator.wait_chat(uid, lambda u=uid: bool(emulator.bot_messages_for(u)), TIMEOUT)  # type: ignore[misc]
    results = [ResultReport(dossier_code=c, returned_at=today) for c in codes]
    await runtime.service.report_results(agency, ResultBatch(results=results))
    for uid in uids:
        await emulator.wait_first_question(uid, TIMEOUT)
    return uids


async def _answer_all(emulator: TimedEmulator, uid: int, waits: list[float]) -> int:
    """Tap the first button of every question until the thank-you; each wait from a tap to
    the next question (or the thank-you) arriving. The number of answers."""
    answered: set[str] = set()
    while True:
        found = emulator.live_question(uid, answered)
        if found is None:
            break
        message, qid, data = found
        before = len(emulator.sent_at.get(uid, []))
        started = time.perf_counter()
        await emulator.tap_button(uid, message.message_id, data)
        answered.add(qid)

        def next_step(u: int = uid) -> bool:
            return emulator.finished(u) or emulator.live_question(u, answered) is not None

        await emulator.wait_chat(uid, next_step, TIMEOUT)
        arrivals = emulator.sent_at.get(uid, [])
        waits.append(
            (arrivals[before] if len(arrivals) > before else time.perf_counter()) - started
        )
    return len(answered)


def _count_round_trips(runtime: Runtime, counts: Counter[str]) -> None:
    """Count what the service asks of PostgreSQL and Redis (``--count``): SQL statements,
    transactions (each a BEGIN and a COMMIT or ROLLBACK more), connection checkouts (each a
    pre-ping on PostgreSQL) and Redis commands (a pipeline counts once)."""
    engine = runtime.engine.sync_engine

    def counter(name: str) -> Any:
        def count(*_args: Any, **_kwargs: Any) -> None:
            counts[name] += 1

        return count

    event.listen(engine, "before_cursor_execute", counter("sql"))
    event.listen(engine, "begin", counter("transactions"))
    event.listen(engine.pool, "checkout", counter("checkouts"))
    coordinator = runtime.coordinator
    if isinstance(coordinator, RedisCoordinator):
        redis = coordinator.redis
        command = redis.execute_command

        async def counted(*args: Any, **kwargs: Any) -> Any:
            counts["redis"] += 1
            return await command(*args, **kwargs)

        redis.execute_command = counted  # type: ignore[method-assign]
        pipeline = redis.pipeline

        def counted_pipeline(*args: Any, **kwargs: Any) -> Any:
            counts["redis"] += 1
            return pipeline(*args, **kwargs)

        redis.pipeline = counted_pipeline  # type: ignore[method-assign]


async def _service(citizens: int, waves: int, count: bool = False) -> dict[str, Any]:
    async with scratch_database("surveybot_bench_answer") as url:
        await upgrade_async(url)
        emulator = TimedEmulator(
            TOKEN, local_mode=True, per_chat_limit=None, global_limit=None,
            webhook_backoff=(0.05, 0.2, 0.5),
        )  # fmt: skip
        await emulator.start()
        settings = load_settings(
            env="test", database_url=url, redis_url=REDIS, keys=KeyRing.generate_document(),
            redis_prefix=f"bench:{url.rsplit('/', 1)[1]}:", quiet_hours_start="",
            quiet_hours_end="", invite_cap_days=0, telegram_token=TOKEN,
            telegram_api_base_url=emulator.base_url, telegram_bot_username=emulator.bot_username,
            telegram_webhook_secret=SECRET, telegram_register_webhook=False,
            telegram_per_chat_limit=0, telegram_per_bot_limit=0,
        )  # fmt: skip
        runtime = await Runtime.create(settings)
        counts: Counter[str] = Counter()
        if count:
            _count_round_trips(runtime, counts)
        timed: Counter[str] = Counter()
        runner = None
        try:
            agency = await add_agency(runtime.sessions)
            runner, base = await serve(create_app(runtime, background=True))
            bot = telegram.Bot(TOKEN, base_url=emulator.base_url)
            await bot.set_webhook(f"{base}/telegram/webhook", secret_token=SECRET)
            await bot.shutdown()
            waits: list[float] = []
            answers, seconds = 0, 0.0
            for wave in range(waves):
                uids = await _citizens(runtime, agency, emulator, citizens, wave)
                before = Counter(counts)
                started = time.perf_counter()
                done = await asyncio.gather(*(_answer_all(emulator, u, waits) for u in uids))
                seconds += time.perf_counter() - started
                answers += sum(done)
                timed.update(counts - before)
            failures = [c for c in emulator.calls if not c.ok]
        finally:
            if runner is not None:
                await runner.cleanup()
            await runtime.close()
            await emulator.stop()
    per_answer = {name: round(value / answers, 1) for name, value in sorted(timed.items())}
    return {
        "answers": answers,
        "seconds": seconds,
        "waits": waits,
        "failed_calls": len(failures),
        "per_answer": per_answer,
    }


async def _bare(citizens: int, requests: int) -> dict[str, Any]:
    """The same emulator posting forged taps to a handler that only parses them."""
    arrived: dict[int, asyncio.Event] = {}

    async def parse(request: web.Request) -> web.Response:
        update = await request.json()
        chat = int(update["callback_query"]["from"]["id"])
        arrived[chat].set()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/telegram/webhook", parse)
    runner, base = await serve(app)
    emulator = TimedEmulator(TOKEN, local_mode=True, per_chat_limit=None, global_limit=None)
    await emulator.start()
    bot = telegram.Bot(TOKEN, base_url=emulator.base_url)
    await bot.set_webhook(f"{base}/telegram/webhook", secret_token=SECRET)
    await bot.shutdown()
    waits: list[float] = []

    async def citizen(share: int) -> None:
        uid = emulator.new_user_id()
        emulator.register_user(uid, "Citizen").started = True
        arrived[uid] = asyncio.Event()
        for i in range(share):
            arrived[uid].clear()
            started = time.perf_counter()
            await emulator.tap_button(uid, 1, f"a:bench:c{i % 6}:x", force=True)
            await asyncio.wait_for(arrived[uid].wait(), TIMEOUT)
            waits.append(time.perf_counter() - started)

    try:
        per = max(1, requests // citizens)
        started = time.perf_counter()
        await asyncio.gather(*(citizen(per) for _ in range(citizens)))
        seconds = time.perf_counter() - started
    finally:
        await emulator.stop()
        await runner.cleanup()
    return {"answers": per * citizens, "seconds": seconds, "waits": waits}


def _figures(citizens: int, service: dict[str, Any], bare: dict[str, Any]) -> dict[str, Any]:
    rate = service["answers"] / service["seconds"]
    bare_rate = bare["answers"] / bare["seconds"]
    return {
        "citizens": citizens,
        "answers": service["answers"],
        "answers_per_s": round(rate, 1),
        "p50_s": round(percentile(service["waits"], 50), 3),
        "p99_s": round(percentile(service["waits"], 99), 3),
        "bare_per_s": round(bare_rate, 1),
        "bare_p50_s": round(percentile(bare["waits"], 50), 4),
        "bare_p99_s": round(percentile(bare["waits"], 99), 4),
        "ratio": round(rate / bare_rate, 4),
        "failed_calls": service["failed_calls"],
        "target_met": rate / bare_rate >= TARGET,
        **({"per_answer": service["per_answer"]} if service["per_answer"] else {}),
    }


async def run(levels: list[int], waves: int, count: bool = False) -> dict[str, Any]:
    rows = []
    for citizens in levels:
        service = await _service(citizens, waves, count)
        bare = await _bare(citizens, service["answers"])
        rows.append(_figures(citizens, service, bare))
    return {"bench": "answer_path", "date": dt.date.today().isoformat(), "levels": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench answer_path")
    parser.add_argument("--citizens", type=int, nargs="+", default=[16, 64],
                        help="concurrent citizens, one run per value")  # fmt: skip
    parser.add_argument("--waves", type=int, default=2,
                        help="waves of citizens per value (each answers a whole survey)")  # fmt: skip
    parser.add_argument("--count", action="store_true",
                        help="count SQL statements, transactions, checkouts and Redis commands "
                             "per answer (the whole path: webhook, handler, dispatcher)")  # fmt: skip
    args = parser.parse_args(argv)
    if min(args.citizens) < 1 or args.waves < 1:
        parser.error("--citizens and --waves must be at least 1")
    figures = asyncio.run(run(args.citizens, args.waves, args.count))
    for row in figures["levels"]:
        print(
            f"{row['citizens']} citizens: {row['answers_per_s']:,.1f} answers/s, wait p50 "
            f"{row['p50_s']} s / p99 {row['p99_s']} s ({row['answers']} answers); bare "
            f"{row['bare_per_s']:,.0f}/s (p50 {row['bare_p50_s']} s); ratio {row['ratio']} "
            f"(target {TARGET}: {'met' if row['target_met'] else 'missed'})"
        )
        if "per_answer" in row:
            print(f"  per answer: {row['per_answer']}")
    print(json.dumps(figures))
