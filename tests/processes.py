"""``surveybot serve --workers N`` as a test drives it (tests/test_three_processes.py,
tests/test_faults.py): the service in child processes on a scratch PostgreSQL database, the
Telegram emulator in the test process, citizens registered through the agency API, bound by
deep link and answering by taps through the real webhook, and what was stored counted through
a local Runtime on the same database."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import telegram
from sqlalchemy import func, select

from bot.emulators.telegram import TelegramEmulator
from bot.runtime import Runtime
from settings import load_settings
from storage import export
from storage.migrate import upgrade_async
from storage.models import Answer, SurveyLedger
from tests.children import child_env, free_port, pids_answering
from tests.conftest import REDIS_URL, TEST_KEYS, add_test_agency, today
from tests.test_telegram_channel import OUTROS, texts

SECRET = "three-processes-secret"
SURVEYBOT = Path(sys.executable).parent / "surveybot"
#: The questions of the default survey, in order, as a citizen tapping the first button meets them.
QUESTIONS = ["c3", "c4", "c6", "c7", "overall", "comment"]


@dataclass(frozen=True, slots=True)
class Stored:
    """What the database holds at the end, counted."""

    answers: int
    export_rows: int
    ledger_rows: int
    ledger_dossiers: int
    completed: int


@dataclass
class Service:
    process: asyncio.subprocess.Process
    port: int
    key: str
    local: Runtime
    emulator: TelegramEmulator
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def pids(self, want: int = 3, seconds: float = 60) -> set[int]:
        """The pids of ``want`` distinct workers answering /healthz."""
        return await pids_answering(self.port, want, seconds)

    async def register_citizens(self, count: int, prefix: str) -> dict[str, int]:
        """``count`` dossiers registered, each opened in a chat by a new citizen (deep link)
        and acknowledged; dossier code → Telegram user id."""
        citizens: dict[str, int] = {}
        for n in range(count):  # a fresh connection each: the kernel spreads them
            code = f"{prefix}-{n:02d}"
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as h:
                body = {"dossier_code": code, "procedure_code": "1.001234", "official_code": "CB01"}
                async with h.post(
                    f"{self.base}/api/v1/dossiers", json=body, headers=self.headers
                ) as r:
                    assert r.status in (200, 201), await r.text()
                    token = (await r.json())["rating_token"]
            uid = self.emulator.new_user_id()
            citizens[code] = uid
            await self.emulator.open_deep_link(uid, token)
        for uid in citizens.values():
            await self.emulator.wait_for_bot_messages(uid, 1, timeout=30)  # "you will get a survey"
        return citizens

    async def report(self, codes: list[str]) -> set[str]:
        """Report the results of ``codes``: the surveys' statuses."""
        results = [{"dossier_code": c, "returned_at": today().isoformat()} for c in codes]
        async with aiohttp.ClientSession() as h:
            async with h.post(
                f"{self.base}/api/v1/results", json={"results": results}, headers=self.headers
            ) as r:
                assert r.status == 200, await r.text()
                return {item["survey_status"] for item in (await r.json())["items"]}

    async def stored(self) -> Stored:
        async with self.local.sessions() as session:
            answers = await session.scalar(select(func.count()).select_from(Answer))
            ledger = await session.scalar(select(func.count()).select_from(SurveyLedger))
            dossiers = await session.scalar(
                select(func.count(func.distinct(SurveyLedger.dossier_hash)))
            )
            completed = await session.scalar(
                select(func.count()).select_from(SurveyLedger).where(SurveyLedger.completed)
            )
        csv_text = (await export.export_csv(self.local.sessions)).lstrip("\ufeff")
        rows = list(csv.DictReader(io.StringIO(csv_text)))
        return Stored(int(answers or 0), len(rows), int(ledger or 0), int(dossiers or 0),
                      int(completed or 0))  # fmt: skip


def service_env(
    database_url: str, emulator: TelegramEmulator, tmp_path: Path, port: int, *,
    redis_url: str, redis_prefix: str, extra: Mapping[str, str] | None = None,
) -> dict[str, str]:  # fmt: skip
    env = child_env(
        database_url, tmp_path,
        redis_url=redis_url, redis_prefix=redis_prefix, port=str(port),
        telegram_token=emulator.token, telegram_api_base_url=emulator.base_url,
        telegram_bot_username=emulator.bot_username, telegram_webhook_secret=SECRET,
        telegram_register_webhook="false",
        quiet_hours_start="", quiet_hours_end="", invite_cap_days="0",
    )  # fmt: skip
    env.update(extra or {})
    return env


@contextlib.asynccontextmanager
async def serving(
    database_url: str,
    emulator: TelegramEmulator,
    tmp_path: Path,
    redis_prefix: str,
    *,
    workers: int = 3,
    redis_url: str = REDIS_URL,
    served_database_url: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> AsyncIterator[Service]:
    """``surveybot serve --workers N`` with its webhook set on the emulator; stopped by SIGTERM
    (then killed) on exit. ``served_database_url`` is what the service is given (a proxy in
    front of ``database_url``, which the local Runtime uses)."""
    await upgrade_async(database_url)
    settings = load_settings(
        env="test", database_url=database_url, keys=TEST_KEYS, var_dir=tmp_path / "local",
        redis_url=REDIS_URL, redis_prefix=redis_prefix,
    )  # fmt: skip
    local = await Runtime.create(settings)
    log = tmp_path / "serve.log"
    out = log.open("wb")
    server: asyncio.subprocess.Process | None = None
    try:
        agency = await add_test_agency(local)
        key = await local.service.create_api_key(agency.code, "processes")
        port = free_port()
        env = service_env(
            served_database_url or database_url, emulator, tmp_path, port,
            redis_url=redis_url, redis_prefix=redis_prefix, extra=extra_env,
        )  # fmt: skip
        server = await asyncio.create_subprocess_exec(
            str(SURVEYBOT), "serve", "--workers", str(workers), env=env, stdout=out, stderr=out
        )
        service = Service(server, port, key, local, emulator, log)
        assert len(await service.pids(workers)) == workers
        bot = telegram.Bot(emulator.token, base_url=emulator.base_url)
        await bot.set_webhook(f"{service.base}/telegram/webhook", secret_token=SECRET)
        await bot.shutdown()
        yield service
    finally:
        if server is not None and server.returncode is None:
            server.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(server.wait(), 60)
            except TimeoutError:
                server.kill()
                await server.wait()
        out.close()
        await local.close()


def finished(emulator: TelegramEmulator, uid: int) -> bool:
    return any(t.startswith(OUTROS) for t in texts(emulator, uid))


def question_of(data: str | None) -> str | None:
    """The question a survey button answers (``a:<invitation>:<question>:<choice>``)."""
    if not data or not data.startswith("a:"):
        return None
    return data.split(":")[2]


def unanswered_question(
    emulator: TelegramEmulator, uid: int, answered: list[str]
) -> tuple[int, str, str] | None:
    """The newest bot message with a button of a question not in ``answered``: its message
    id, the question and the first button's data."""
    for message in reversed(emulator.bot_messages_for(uid)):
        for _, data in message.buttons:
            qid = question_of(data)
            if qid is not None and qid not in answered:
                assert data is not None
                return message.message_id, qid, data
    return None


async def answer_by_taps(
    emulator: TelegramEmulator, uid: int, timeout: float = 60, already: list[str] | None = None
) -> list[str]:
    """Tap the first button of every question until the thank-you arrives; the questions
    answered, in order.

    Unlike ``tests.test_telegram_channel.answer_survey`` a question the service sent twice (a
    process killed between a send and its "sent" mark: at-least-once) is not a new one: each
    question is tapped once, on its newest copy, and the next step is a question not yet
    answered (or the thank-you)."""
    answered: list[str] = list(already or [])

    def next_question() -> tuple[int, str, str] | None:
        return unanswered_question(emulator, uid, answered)

    for _ in range(20):
        await emulator.wait_until(
            lambda: finished(emulator, uid) or next_question() is not None, timeout
        )
        found = next_question()
        if found is None:
            break
        message_id, qid, data = found
        await emulator.tap_button(uid, message_id, data)
        answered.append(qid)
    await emulator.wait_until(lambda: finished(emulator, uid), timeout)
    return answered


async def answer_all(
    emulator: TelegramEmulator, citizens: Mapping[str, int], timeout: float = 60
) -> list[list[str]]:
    return list(
        await asyncio.gather(*(answer_by_taps(emulator, uid, timeout) for uid in citizens.values()))
    )


def duplicates(emulator: TelegramEmulator, uid: int) -> list[str]:
    """Texts a citizen received more than once."""
    shown = texts(emulator, uid)
    return sorted({t for t in shown if shown.count(t) > 1})


def bot_messages(emulator: TelegramEmulator, citizens: Mapping[str, int]) -> int:
    return sum(len(emulator.bot_messages_for(uid)) for uid in citizens.values())
