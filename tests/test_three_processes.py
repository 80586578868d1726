"""Three processes behave as one (issue 12): ``surveybot serve --workers 3`` on PostgreSQL and
Redis, python-telegram-bot inside each against the Telegram emulator holding Telegram's flood
limits. Nine citizens are registered, bound and surveyed at once; every question reaches each
of them exactly once, every answer is stored, and the emulator never had to answer 429, so the
limits held in total across the three dispatchers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.emulators.telegram import TelegramEmulator
from tests.conftest import scratch_pg_database
from tests.processes import QUESTIONS, Stored, answer_all, duplicates, serving

CITIZENS = 9


@pytest.fixture
def own_database() -> Iterator[str]:
    with scratch_pg_database("surveybot_three") as url:
        yield url


@pytest.fixture
async def emulator() -> AsyncIterator[TelegramEmulator]:
    # Telegram's own limits (about 1 message/s per chat with short bursts, 30/s per bot).
    async with TelegramEmulator(local_mode=True, webhook_backoff=(0.2, 0.5)) as emu:
        yield emu


async def test_three_processes_survey_nine_citizens_once_each_within_telegrams_limits(
    own_database: str, emulator: TelegramEmulator, tmp_path: Path, redis_prefix: str
) -> None:
    async with serving(own_database, emulator, tmp_path, redis_prefix) as service:
        citizens = await service.register_citizens(CITIZENS, "HS-3P")
        assert await service.report(list(citizens)) == {"sent"}

        answered = await answer_all(emulator, citizens)
        assert all(a == QUESTIONS for a in answered)
        for uid in citizens.values():
            assert duplicates(emulator, uid) == [], "a message reached a citizen twice"
        assert [c for c in emulator.calls if c.status == 429] == [], "a flood limit was broken"
        # no answer lost or doubled, one survey per dossier
        assert await service.stored() == Stored(
            answers=CITIZENS * len(QUESTIONS), export_rows=CITIZENS, ledger_rows=CITIZENS,
            ledger_dossiers=CITIZENS, completed=CITIZENS,
        )  # fmt: skip
