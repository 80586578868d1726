"""The response tally follows every change to the responses, on SQLite and PostgreSQL.

The dashboard and the aggregate exports read nothing else, so a tally that drifted from the
responses would show an admin wrong rates. Each test changes responses with plain SQL (as
any code path, or an operator, could) and compares the tally with a recount in Python.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.db import make_engine
from storage.migrate import upgrade_async

BEFORE = "0005_response_answers"
INSERT = (
    "INSERT INTO response (id, agency_id, official_id, procedure_id, survey_id, survey_version, "
    "channel, language, answered_on, rater_hash, rater_key_id, complete, satisfaction, "
    "score_total, score_maximum, score_band, criteria) VALUES (:id, :agency, :official, "
    ":procedure, 'mot-cua', 1, 'telegram', 'vi', :day, 'h', 'k', true, :sat, :score, "
    ":maximum, :cls, :criteria)"
)
#: The same response before migration 0008 (a Circular 01/2018 score out of 18, its class).
INSERT_BEFORE = (
    "INSERT INTO response (id, agency_id, official_id, procedure_id, survey_id, survey_version, "
    "channel, language, answered_on, rater_hash, rater_key_id, complete, satisfaction, score18, "
    "classification, criteria) VALUES (:id, :agency, :official, :procedure, 'mot-cua', 1, "
    "'telegram', 'vi', :day, 'h', 'k', true, :sat, :score, :cls, :criteria)"
)


async def _seed(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for agency in ("a1", "a2"):
            await conn.execute(
                text(
                    "INSERT INTO agency (id, code, name, created_at) "
                    "VALUES (:id, :id, :id, '2026-10-01 00:00:00+00')"
                ),
                {"id": agency},
            )
        for official, agency in (("o1", "a1"), ("o2", "a1"), ("o3", "a2")):
            await conn.execute(
                text("INSERT INTO official (id, agency_id, code, name) VALUES (:o, :a, :o, :o)"),
                {"o": official, "a": agency},
            )
        await conn.execute(text("INSERT INTO procedure (id, code, name) VALUES ('p1', 'p1', 'p')"))


def _response(n: int, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": f"r{n}",
        "agency": "a1" if n % 3 else "a2",
        "official": ("o1", "o2", "o3", None)[n % 4] if n % 3 else "o3",
        "procedure": "p1" if n % 2 else None,
        "day": dt.date(2026, 10, n % 5 + 1),
        "sat": (5, 4, 2, None, 1)[n % 5],
        "score": (16.7, 12.0, None, 18.0)[n % 4],
        "cls": ("Xuất sắc", "Tốt", None, "Xuất sắc")[n % 4],
        "criteria": (json.dumps({"1": 2, "3": n % 3}), None)[n % 2],
    }
    row["maximum"] = None if row["score"] is None else 18.0
    return {**row, **changes}


async def _tally(engine: AsyncEngine) -> dict[tuple[str, str, str, int], tuple[int, int, int, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT dimension, agency_id, unit, satisfaction, responses, scored, score_tenths, "
                "maximum_tenths FROM response_tally"
            )
        )
        return {
            (d, a, u, s): (n, k, t, m)
            for d, a, u, s, n, k, t, m in rows
            if (n, k, t, m) != (0, 0, 0, 0)
        }


async def _recount(
    engine: AsyncEngine,
) -> dict[tuple[str, str, str, int], tuple[int, int, int, int]]:
    """The tally computed in Python from the responses as they are now."""
    counts: Counter[tuple[str, str, str, int, str]] = Counter()
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT agency_id, official_id, procedure_id, answered_on, satisfaction, "
                "score_total, score_maximum, score_band, CAST(criteria AS TEXT) FROM response"
            )
        )
        for agency, official, procedure, day, sat, score, maximum, cls, criteria in rows:
            units = {
                "official": official or "",
                "procedure": procedure or "",
                "day": str(day),
                "class": cls or "",
                "criteria": criteria or "",
            }
            for dimension, unit in units.items():
                key = (dimension, agency, unit, sat or 0)
                counts[(*key, "responses")] += 1
                if score is not None:
                    counts[(*key, "scored")] += 1
                    counts[(*key, "tenths")] += round(score * 10)
                    counts[(*key, "maximum")] += round(maximum * 10)
    keys = {k[:4] for k in counts}
    return {
        k: (
            counts[(*k, "responses")],
            counts[(*k, "scored")],
            counts[(*k, "tenths")],
            counts[(*k, "maximum")],
        )
        for k in keys
    }


async def test_tally_follows_inserts_updates_and_deletes(empty_database: str) -> None:
    await upgrade_async(empty_database)
    engine = make_engine(empty_database)
    try:
        await _seed(engine)
        async with engine.begin() as conn:
            await conn.execute(text(INSERT), [_response(n) for n in range(40)])
        assert await _tally(engine) == await _recount(engine)
        async with engine.begin() as conn:
            # a rating arrives, a score is set, a unit is reassigned, a date moves
            await conn.execute(
                text("UPDATE response SET satisfaction = 5 WHERE satisfaction IS NULL")
            )
            await conn.execute(
                text(
                    "UPDATE response SET score_total = 9.3, score_maximum = 18, "
                    "score_band = 'Khá' WHERE id = 'r2'"
                )
            )
            await conn.execute(text("UPDATE response SET official_id = 'o2' WHERE id = 'r5'"))
            await conn.execute(
                text("UPDATE response SET answered_on = '2026-11-30' WHERE id = 'r7'")
            )
            await conn.execute(text("UPDATE response SET channel = 'zalo'"))  # no tally column
        assert await _tally(engine) == await _recount(engine)
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM response WHERE id IN ('r1', 'r2', 'r3')"))
            await conn.execute(text("DELETE FROM response WHERE agency_id = 'a2'"))
        tally = await _tally(engine)
        assert tally == await _recount(engine)
        assert {agency for _, agency, _, _ in tally} == {"a1"}
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM response"))
        assert await _tally(engine) == {}
    finally:
        await engine.dispose()


async def test_migration_counts_the_responses_already_stored(empty_database: str) -> None:
    await upgrade_async(empty_database, BEFORE)
    engine = make_engine(empty_database)
    try:
        await _seed(engine)
        async with engine.begin() as conn:
            await conn.execute(text(INSERT_BEFORE), [_response(n) for n in range(25)])
        await upgrade_async(empty_database)
        tally = await _tally(engine)
        assert tally == await _recount(engine)
        assert sum(n for (d, *_), (n, *_) in tally.items() if d == "official") == 25
        async with engine.begin() as conn:  # and the triggers run from then on
            await conn.execute(text(INSERT), [_response(100)])
        assert await _tally(engine) == await _recount(engine)
    finally:
        await engine.dispose()
