"""Migrations carry existing data forward: answers stored before 0005 show up in exports after it."""

from __future__ import annotations

import csv
import io

from sqlalchemy import text

from storage.db import make_engine, make_sessions
from storage.export import export_csv
from storage.migrate import upgrade_async

BEFORE = "0004_stats_indexes"


RESPONSE = (
    "INSERT INTO response (id, agency_id, survey_id, survey_version, channel, language, "
    "answered_on, rater_hash, rater_key_id, complete) "
    "VALUES (:id, 'a1', 'mot-cua', 1, 'telegram', 'vi', '2026-10-02', 'h', 'k', true)"
)
ANSWER = (
    "INSERT INTO answer (id, response_id, question_id, value, points, text) "
    "VALUES (:id, :rid, :q, :value, :points, :text)"
)


async def test_0005_fills_each_response_answers_from_its_answer_rows(empty_database: str) -> None:
    await upgrade_async(empty_database, BEFORE)
    engine = make_engine(empty_database)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO agency (id, code, name, created_at) "
                    "VALUES ('a1', 'ubnd-cu', 'UBND cũ', '2026-10-01 00:00:00+00')"
                )
            )
            for rid in ("r-answered", "r-empty"):
                await conn.execute(text(RESPONSE), {"id": rid})
            for q, value, points, note in (
                ("c3", '"mot_lan"', 2, None),
                ("channels", '["zalo", "web"]', None, None),
                ("comment", "null", None, "=cmd|' /C calc'!A0"),
            ):
                await conn.execute(
                    text(ANSWER),
                    {"id": q, "rid": "r-answered", "q": q, "value": value, "points": points,
                     "text": note},
                )  # fmt: skip
        await upgrade_async(empty_database)
        async with engine.connect() as conn:
            stored = {
                rid: answers
                for rid, answers in await conn.execute(text("SELECT id, answers FROM response"))
            }
        # The one-table dump: the cells as stored, free text included (the ZIP's ratings have none).
        exported = await export_csv(make_sessions(engine))
    finally:
        await engine.dispose()
    assert stored["r-empty"] is None
    rows = list(csv.DictReader(io.StringIO(exported.lstrip("\ufeff"))))
    by_answers = {row["q_c3"]: row for row in rows}
    assert set(by_answers) == {"mot_lan", ""}
    answered = by_answers["mot_lan"]
    assert answered["agency"] == "ubnd-cu"
    assert answered["q_channels"] == "zalo|web"
    assert answered["q_comment"] == "'=cmd|' /C calc'!A0"
