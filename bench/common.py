"""What the Telegram benchmarks share: a scratch PostgreSQL database, the reference rows a
survey needs, the Telegram emulator with event-driven waits (no polling loop of the benchmark's
own competing with the service for the CPU it measures), and percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import statistics
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
from aiohttp import web

from bot.emulators.telegram import ChatMessage, JSONDict, TelegramEmulator
from storage.models import Agency, Official, Procedure

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/0"
AGENCY = "ubnd-bench"
PROCEDURE = "1.001234"
SECRET = "bench-webhook-secret"  # noqa: S105 - a scratch webhook secret
#: Thank-you texts (vi, en): a conversation's last message.
OUTROS = ("Cảm ơn Ông/Bà đã đánh giá", "Thank you for your rating")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """``app`` on a free loopback port, without an access log."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def scratch_database(prefix: str) -> AsyncIterator[str]:
    """A new PostgreSQL database (its SQLAlchemy URL), dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def add_agency(sessions: Any) -> Agency:
    """The bench agency with ten officials (CB00-CB09) and one procedure."""
    async with sessions() as session:
        agency = Agency(code=AGENCY, name="UBND phường Đo")
        session.add(agency)
        await session.flush()
        session.add_all(
            [
                Official(agency_id=agency.id, code=f"CB{i:02d}", name=f"Cán bộ {i}")
                for i in range(10)
            ]
        )
        session.add(Procedure(code=PROCEDURE, name="Đăng ký khai sinh"))
        await session.commit()
        return agency


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[min(int(q), 99) - 1]


def question_of(data: str | None) -> str | None:
    """The question a survey button answers (``a:<invitation>:<question>:<choice>``)."""
    if not data or not data.startswith("a:"):
        return None
    return data.split(":")[2]


class TimedEmulator(TelegramEmulator):
    """The strict emulator, telling waiters the moment a bot message lands in a chat, and
    stamping each arrival: a benchmark waits on an event per chat instead of polling every
    chat every few milliseconds from the process it measures."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._changed: dict[int, asyncio.Event] = {}
        #: chat id → perf_counter() of each successful sendMessage (new bot message).
        self.sent_at: dict[int, list[float]] = {}

    def _touch(self, chat_id: int) -> None:
        event = self._changed.get(chat_id)
        if event is not None:
            event.set()

    async def _send_message(self, params: Any) -> JSONDict:
        result = await super()._send_message(params)
        chat = int(result["chat"]["id"])
        self.sent_at.setdefault(chat, []).append(time.perf_counter())
        self._touch(chat)
        return result

    async def _edit_message_text(self, params: Any) -> JSONDict:
        result = await super()._edit_message_text(params)
        if isinstance(result, dict):
            self._touch(int(result["chat"]["id"]))
        return result

    async def wait_chat(self, uid: int, predicate: Callable[[], bool], timeout: float) -> None:
        """Until ``predicate`` holds, re-checked on every bot message in chat ``uid``."""
        event = self._changed.setdefault(uid, asyncio.Event())
        async with asyncio.timeout(timeout):
            while not predicate():
                event.clear()
                await event.wait()

    async def wait_first_question(self, uid: int, timeout: float) -> None:
        """Until chat ``uid`` shows a question to answer."""
        await self.wait_chat(uid, lambda: self.live_question(uid, set()) is not None, timeout)

    def live_question(self, uid: int, answered: set[str]) -> tuple[ChatMessage, str, str] | None:
        """The newest bot message with a button of a question not yet answered: the message,
        its question and its first button's data."""
        for message in reversed(self.bot_messages_for(uid)):
            for _, data in message.buttons:
                qid = question_of(data)
                if qid is not None and qid not in answered:
                    assert data is not None
                    return message, qid, data
        return None

    def finished(self, uid: int) -> bool:
        return any((m.body or "").startswith(OUTROS) for m in self.bot_messages_for(uid))
