"""Migrations carry existing data forward: answers stored before 0005 show up in exports after it."""

from __future__ import annotations

import csv
import io
import json

from sqlalchemy import text

from storage import directory
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


SCORED = (
    "INSERT INTO response (id, agency_id, survey_id, survey_version, channel, language, "
    "answered_on, rater_hash, rater_key_id, complete, satisfaction, criteria, score18, "
    "classification) VALUES (:id, 'a1', :survey, 1, 'telegram', 'vi', '2026-10-02', 'h', 'k', "
    "true, :sat, :criteria, :score, :cls)"
)
TALLY = (
    "SELECT dimension, agency_id, unit, satisfaction, responses, scored, score_tenths "
    "FROM response_tally ORDER BY dimension, agency_id, unit, satisfaction"
)


async def test_0008_converts_old_scores_to_circular_01_2018_out_of_18(empty_database: str) -> None:
    await upgrade_async(empty_database, "0007_releases")
    engine = make_engine(empty_database)
    rows = [
        ("r-full", "mot-cua", 5, {"1": 2, "2": 2, "3": 2, "4": 2, "6": 2, "7": 2}, 18.0, "Xuất sắc"),
        ("r-late", "mot-cua", 2, {"1": 0, "2": 0, "3": 1, "4": 1, "6": 2, "7": 1}, 7.5, "Trung bình"),
        ("r-stars", "zns-5-star", 4, None, None, None),
    ]  # fmt: skip
    document = {"total": {"key": "a1", "scored": 2, "score_sum": 25.5}, "criteria": [{"scored": 2}]}
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO agency (id, code, name, created_at) "
                    "VALUES ('a1', 'ubnd-cu', 'UBND cũ', '2026-10-01 00:00:00+00')"
                )
            )
            for rid, survey, sat, criteria, score, cls in rows:
                await conn.execute(
                    text(SCORED),
                    {"id": rid, "survey": survey, "sat": sat, "score": score, "cls": cls,
                     "criteria": None if criteria is None else json.dumps(criteria)},
                )  # fmt: skip
            await conn.execute(
                text(
                    "INSERT INTO release (id, label, period, starts_on, ends_on, published_at, "
                    "rule) VALUES ('rel', '2026-10', 'month', '2026-10-01', '2026-10-31', "
                    "'2026-11-08 00:00:00+00', '{}')"
                )
            )
            await conn.execute(
                text("INSERT INTO release_figures VALUES ('rel', 'a1', :doc)"),
                {"doc": json.dumps(document)},
            )
            before = (await conn.execute(text(TALLY))).all()
        await upgrade_async(empty_database)
        async with engine.connect() as conn:
            after = (await conn.execute(text(TALLY))).all()
            maxima = (
                await conn.execute(
                    text("SELECT SUM(maximum_tenths), SUM(scored) FROM response_tally")
                )
            ).one()
            stored = {
                r[0]: r[1:]
                for r in await conn.execute(
                    text(
                        "SELECT id, score_total, score_maximum, score_band, score_scheme, "
                        "CAST(score_inputs AS TEXT) FROM response"
                    )
                )
            }
            [released] = (
                await conn.execute(text("SELECT CAST(document AS TEXT) FROM release_figures"))
            ).scalars()
        # Triggers run on the new columns from now on.
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE response SET score_total = 9.0 WHERE id = 'r-late'"))
            moved = await conn.scalar(
                text("SELECT SUM(score_tenths) FROM response_tally WHERE dimension = 'class'")
            )
    finally:
        await engine.dispose()
    assert before and after == before  # the same figures, cell by cell
    assert int(maxima[0]) == 180 * int(maxima[1])  # every old score was out of 18
    assert stored["r-full"][:4] == (18.0, 18.0, "Xuất sắc", "circular-01-2018")
    assert stored["r-late"][:4] == (7.5, 18.0, "Trung bình", "circular-01-2018")
    assert stored["r-stars"] == (None, None, None, None, None)
    inputs = json.loads(stored["r-late"][4])
    assert inputs["timeliness"] == {"1": "late", "2": "late"} and inputs["satisfaction"] == 2
    assert inputs["answered"] == {"3": 1, "4": 1, "6": 2, "7": 1} and inputs["agency"] == {}
    assert json.loads(released) == {
        "total": {"key": "a1", "scored": 2, "score_sum": 25.5, "score_max_sum": 36.0},
        "criteria": [{"scored": 2}],
    }
    assert moved == 180 + 90


async def test_0019_keeps_every_official_active_and_every_procedure_open_to_every_unit(
    empty_database: str,
) -> None:
    """Before 0019 (sync) nobody could leave and procedures were one shared list: after it, every
    official is active and every procedure can still be reported by every unit."""
    await upgrade_async(empty_database, "0011_invite_cap")
    engine = make_engine(empty_database)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO agency (id, code, name, created_at) "
                    "VALUES ('a1', 'ubnd-cu', 'UBND cũ', '2026-10-01 00:00:00+00')"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO official (id, agency_id, code, name) VALUES ('o1', 'a1', 'CB01', 'A')"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO procedure (id, code, name) VALUES ('p1', '1.001234', 'Khai sinh')"
                )
            )
        await upgrade_async(empty_database)
        sessions = make_sessions(engine)
        async with sessions() as session:
            official = await directory.official_for_report(session, "a1", "CB01")
            procedure = await directory.procedure_for_report(session, "a1", "1.001234")
            status = await session.scalar(text("SELECT status FROM official WHERE id = 'o1'"))
            field = await session.scalar(text("SELECT field FROM procedure WHERE id = 'p1'"))
        assert (official.id, procedure.id, status, field) == ("o1", "p1", "active", None)
    finally:
        await engine.dispose()
