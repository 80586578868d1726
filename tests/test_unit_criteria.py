"""The agency-level criteria per unit and quarter, on SQLite and PostgreSQL: a quarter's values
re-score that unit's responses of that quarter and nothing else, fall back to the unit's values
from before migration 0020, are refused once a release covers the quarter; and a survey that
closes is scored with its own quarter's values."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select, text

from bot.flows.scoring import CIRCULAR_01_2018, dossier_inputs
from bot.responses import apply_score
from bot.runtime import Runtime
from storage import releases, unit_criteria, units
from storage.models import Agency, Response, ResponseTally
from storage.stats import Thresholds
from storage.unit_criteria import Quarter
from tests.adminseed import release
from tests.conftest import today
from tests.test_rescoring import _complete_one

BANDS = Thresholds().bands
Q3 = Quarter(2026, 3)
Q4 = Quarter(2026, 4)


def rescore(response: Response) -> bool:
    return apply_score(response, BANDS)


async def _tree(runtime: Runtime) -> dict[str, str]:
    province = await units.create_unit(runtime.sessions, "tinh", "Tỉnh", "province", None)
    ids = {"tinh": province.id}
    for code in ("phuong-a", "phuong-b"):
        ids[code] = (
            await units.create_unit(runtime.sessions, code, code, "commune", province.id)
        ).id
    return ids


async def _scored(runtime: Runtime, unit_id: str, day: dt.date) -> str:
    """A closed survey answered on ``day``: 8 of 8 answered, criteria 1-2 on time (1 + 1)."""
    async with runtime.sessions() as session:
        response = Response(
            agency_id=unit_id, survey_id="mot-cua", survey_version=1, channel="web",
            language="vi", answered_on=day, rater_hash=secrets.token_hex(32), rater_key_id="k",
            complete=True, satisfaction=5, score_scheme=CIRCULAR_01_2018.id,
        )  # fmt: skip
        inputs = dossier_inputs({"3": 2, "4": 2, "6": 2, "7": 2}, day, day)
        response.score_inputs = inputs.to_json()
        apply_score(response, BANDS)
        session.add(response)
        await session.commit()
        return response.id


async def _scores(runtime: Runtime) -> dict[str, tuple[float | None, dict[str, Any]]]:
    async with runtime.sessions() as session:
        rows = (await session.execute(select(Response))).scalars()
        return {r.id: (r.score_total, (r.score_inputs or {}).get("agency", {})) for r in rows}


def test_quarters_are_calendar_quarters_written_like_2026_q3() -> None:
    assert Quarter.of(dt.date(2026, 9, 30)) == Q3 and Quarter.of(dt.date(2026, 10, 1)) == Q4
    assert (Q3.starts_on, Q3.ends_on) == (dt.date(2026, 7, 1), dt.date(2026, 9, 30))
    assert Quarter.parse("2026-Q3") == Q3 and Q4.label == "2026-Q4"
    assert Q4.shift(1) == Quarter(2027, 1) and Quarter(2027, 1).shift(-5) == Quarter(2025, 4)
    assert Quarter(2026, 1).starts_on.month == 1 and Q4.ends_on == dt.date(2026, 12, 31)
    for bad in ("2026-Q5", "2026Q3", "Q3-2026", "", "2026-q3 ; drop", "0001-Q1"):
        with pytest.raises(ValueError):
            Quarter.parse(bad)
    with pytest.raises(ValueError):
        unit_criteria.check({"5": 3})
    with pytest.raises(ValueError):
        unit_criteria.check({"3": 2})  # a citizen's criterion is not the assessor's


async def test_a_quarter_rescores_its_units_responses_of_that_quarter_only(
    runtime: Runtime,
) -> None:
    ids = await _tree(runtime)
    a, b = ids["phuong-a"], ids["phuong-b"]
    a_q3 = await _scored(runtime, a, dt.date(2026, 8, 14))
    a_q4 = await _scored(runtime, a, dt.date(2026, 10, 2))
    b_q3 = await _scored(runtime, b, dt.date(2026, 8, 14))
    before = await _scores(runtime)
    assert before[a_q3] == (15.0, {})  # 10 of 12 measured, scaled to 18

    change = await unit_criteria.set_criteria(
        runtime.sessions, a, Q3, {"5": 2, "8": 2, "9": 2}, rescore
    )
    assert (change.before, change.after, change.rescored, change.changed) == (
        {}, {"5": 2, "8": 2, "9": 2}, 1, 1,
    )  # fmt: skip
    after = await _scores(runtime)
    assert after[a_q3] == (16.0, {"5": 2, "8": 2, "9": 2})  # 16 of 18
    assert after[a_q4] == before[a_q4] and after[b_q3] == before[b_q3]

    # Changed: the quarter's responses follow, the tally with them.
    await unit_criteria.set_criteria(runtime.sessions, a, Q3, {"5": 0, "8": 1, "9": None}, rescore)
    after = await _scores(runtime)
    assert after[a_q3] == (12.4, {"5": 0, "8": 1})  # 11 of 16, scaled to 18
    async with runtime.sessions() as session:
        tally = (
            await session.execute(
                select(ResponseTally.unit, ResponseTally.responses).where(
                    ResponseTally.dimension == "class",
                    ResponseTally.agency_id == a,
                    ResponseTally.responses > 0,
                )
            )
        ).all()
    assert sorted(tally) == sorted([("Tốt", 1), ("Xuất sắc", 1)])

    # Merge keeps what was not given (the CLI's way); reading for a day of the quarter.
    await unit_criteria.set_criteria(runtime.sessions, a, Q3, {"9": 2}, rescore, merge=True)
    found = await unit_criteria.read(runtime.sessions, a, dt.date(2026, 9, 30))
    assert (found.own, found.in_force) == ({"5": 0, "8": 1, "9": 2}, {"5": 0, "8": 1, "9": 2})
    assert (await unit_criteria.read(runtime.sessions, a, dt.date(2026, 10, 1))).own is None

    listed = await unit_criteria.list_for(runtime.sessions, [a, b], Q3)
    assert set(listed) == {a, b}
    assert listed[a].in_force == {"5": 0, "8": 1, "9": 2} and listed[b].own is None
    assert set(await unit_criteria.list_for(runtime.sessions, None, Q3)) == set(ids.values())

    cleared = await unit_criteria.clear(runtime.sessions, a, Q3, rescore)
    assert cleared.after == {} and (await _scores(runtime))[a_q3] == before[a_q3]
    with pytest.raises(LookupError):
        await unit_criteria.set_criteria(runtime.sessions, "khong-co", Q3, {"5": 1}, rescore)


async def test_values_from_before_0020_are_every_unassessed_quarters_fallback(
    runtime: Runtime,
) -> None:
    ids = await _tree(runtime)
    a = ids["phuong-a"]
    async with runtime.sessions() as session:
        agency = await session.get(Agency, a)
        assert agency is not None
        agency.agency_criteria = {"5": 1, "8": 1}
        await session.commit()
    for quarter in (Q3, Q4, Quarter(2031, 2)):
        found = (await unit_criteria.list_for(runtime.sessions, [a], quarter))[a]
        assert (found.own, found.in_force) == (None, {"5": 1, "8": 1})
    await unit_criteria.set_criteria(runtime.sessions, a, Q4, {"9": 2}, rescore)
    assert (await unit_criteria.read(runtime.sessions, a, Q4.starts_on)).in_force == {"9": 2}
    # Every blank is a clear: the quarter goes back to the earlier values.
    change = await unit_criteria.set_criteria(
        runtime.sessions, a, Q4, {"5": None, "8": None, "9": None}, rescore
    )
    assert change.after == {"5": 1, "8": 1}
    assert (await unit_criteria.read(runtime.sessions, a, Q4.starts_on)).own is None


async def test_a_released_quarter_is_frozen(runtime: Runtime) -> None:
    ids = await _tree(runtime)
    a = ids["phuong-a"]
    a_q3 = await _scored(runtime, a, dt.date(2026, 8, 14))
    await unit_criteria.set_criteria(runtime.sessions, a, Q3, {"5": 2}, rescore)
    # August and September released (October is not over): Q3 is frozen, Q4 is not.
    assert await release(runtime, dt.datetime(2026, 10, 20, tzinfo=dt.UTC)) == [
        "2026-08",
        "2026-09",
    ]
    assert await unit_criteria.frozen_by(runtime.sessions, Q3) == ["2026-08", "2026-09"]
    assert await unit_criteria.frozen_by(runtime.sessions, Q4) == []
    before = await _scores(runtime)
    with pytest.raises(unit_criteria.Frozen) as refused:
        await unit_criteria.set_criteria(runtime.sessions, a, Q3, {"5": 0}, rescore)
    assert refused.value.labels == ["2026-08", "2026-09"]
    with pytest.raises(unit_criteria.Frozen):
        await unit_criteria.clear(runtime.sessions, a, Q3, rescore)
    assert await _scores(runtime) == before
    assert (await unit_criteria.read(runtime.sessions, a, Q3.starts_on)).own == {"5": 2}
    assert before[a_q3][1] == {"5": 2}
    await unit_criteria.set_criteria(runtime.sessions, a, Q4, {"5": 0}, rescore)


async def test_a_closing_survey_is_scored_with_its_quarters_values(
    client: TestClient[Any, Any], runtime: Runtime, api_key: str, agency: Agency
) -> None:
    now = Quarter.of(today())
    await unit_criteria.set_criteria(
        runtime.sessions, agency.id, now.shift(-1), {"5": 0, "8": 0, "9": 0}, rescore
    )
    await unit_criteria.set_criteria(
        runtime.sessions, agency.id, now, {"5": 2, "8": 1, "9": 0}, rescore
    )
    await unit_criteria.set_criteria(runtime.sessions, agency.id, now.shift(1), {"5": 0}, rescore)
    await _complete_one(client, runtime, api_key)
    async with runtime.sessions() as session:
        [response] = (await session.execute(select(Response))).scalars().all()
    assert response.answered_on == today()
    assert (response.score_inputs or {})["agency"] == {"5": 2, "8": 1, "9": 0}
    # 2+2 early, 8 answered, 2+1+0 assessed: 15 of 18.
    assert response.criteria == {"1": 2, "2": 2, "3": 2, "4": 2, "6": 2, "7": 2, "5": 2, "8": 1,
                                 "9": 0}  # fmt: skip
    assert response.score_total == 15.0
    # Changing this quarter re-scores the closed survey; the other quarters' values never did.
    await unit_criteria.set_criteria(
        runtime.sessions, agency.id, now, {"9": 2}, rescore, merge=True
    )
    async with runtime.sessions() as session:
        [again] = (await session.execute(select(Response))).scalars().all()
    assert again.score_total == 17.0 and (again.score_inputs or {})["agency"]["9"] == 2


async def _waiting_on_advisory_locks(runtime: Runtime, count: int) -> None:
    """Until ``count`` transactions wait for an advisory lock (PostgreSQL's own lock table)."""
    query = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database ="
        " (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    async with asyncio.timeout(30):
        while True:
            async with runtime.engine.connect() as conn:
                if (await conn.scalar(query)) == count:
                    return
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite serialises writers at BEGIN
async def test_a_change_racing_a_release_is_refused_once_the_release_is_in(
    runtime: Runtime,
) -> None:
    ids = await _tree(runtime)
    a = ids["phuong-a"]
    answered = await _scored(runtime, a, dt.date(2026, 8, 14))
    async with runtime.sessions() as other_change:  # another change under way holds it off
        await releases.hold_off_publication(other_change)
        publishing = asyncio.create_task(release(runtime, dt.datetime(2026, 10, 20, tzinfo=dt.UTC)))
        await _waiting_on_advisory_locks(runtime, 1)
        changing = asyncio.create_task(
            unit_criteria.set_criteria(runtime.sessions, a, Q3, {"5": 0}, rescore)
        )
        await _waiting_on_advisory_locks(runtime, 2)  # queued behind the publication
        await other_change.commit()
    assert await publishing == ["2026-08", "2026-09"]
    with pytest.raises(unit_criteria.Frozen):
        await changing
    assert (await _scores(runtime))[answered] == (15.0, {})
