"""Releases over a real database: figures of closed periods, cut once, frozen, never overlapping."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets

import pytest
from sqlalchemy import delete, func, select

from bot.runtime import Runtime
from storage import releases
from storage.disclosure import Rule
from storage.models import Agency, Release, Response, SurveyLedger
from storage.stats import NO_UNIT, Thresholds, wilson
from tests.adminseed import Batch, add_agency, release, seed

THRESHOLDS = Thresholds()
OCTOBER = releases.period_of("month", dt.date(2026, 10, 1))


async def test_officials_ranked_and_withheld_in_a_release(runtime: Runtime, agency: Agency) -> None:
    await add_agency(runtime, "ubnd-khac", "UBND khác", ["CB09"])
    await seed(
        runtime,
        "ubnd-test",
        [
            Batch(20, "CB01", satisfaction=5),
            Batch(5, "CB01", satisfaction=1),
            Batch(12, "CB02", satisfaction=4),
            Batch(4, None, satisfaction=5),
        ],
    )
    await seed(runtime, "ubnd-khac", [Batch(30, "CB09", satisfaction=2)])
    assert await release(runtime) == ["2026-10"]
    view = await releases.published(runtime.sessions, THRESHOLDS, agency.id)
    by_key = {c.key: c for c in view.officials}
    assert set(by_key) == {"CB01", "CB02", NO_UNIT}
    assert by_key[NO_UNIT].suppressed == "small"
    # The unnamed bucket alone could be recovered from the agency total: CB02 goes too.
    assert by_key["CB02"].suppressed == "complementary"
    cb01 = by_key["CB01"]
    assert (cb01.rated, cb01.satisfied, cb01.rank) == (25, 20, 1)
    assert cb01.rate == pytest.approx(80.0) and cb01.band == "Tốt"
    assert cb01.low == pytest.approx(wilson(20, 25)[0])
    assert view.total.responses == 41 and view.levels == {5: 24, 4: 12, 3: 0, 2: 0, 1: 5}
    assert view.classes and view.classes["Xuất sắc"] == 24
    assert [c.key for c in view.trend] == ["2026-10"]
    criteria = {s.criterion: s for s in view.criteria}
    assert criteria["3"].zero_share == pytest.approx(100 * 5 / 41)
    assert criteria["3"].zero_share_dissatisfied == 100.0
    assert criteria["1"].zero_share == 0.0

    province = await releases.published(runtime.sessions, THRESHOLDS, None)
    assert [c.key for c in province.agencies] == ["ubnd-test", "ubnd-khac"]
    assert province.agencies[1].rate == 0.0 and province.agencies[1].band == "Yếu"
    assert province.total.responses == 71 and province.levels is not None


async def test_a_release_is_frozen_against_late_answers_and_erasures(
    runtime: Runtime, agency: Agency
) -> None:
    """Looking again after one more rating, or after an erasure, teaches nothing."""
    await seed(runtime, "ubnd-test", [Batch(12, "CB01"), Batch(11, "CB02", satisfaction=1)])
    await release(runtime)
    before = await releases.documents(runtime.sessions, [(await _only(runtime)).id], None)
    await seed(runtime, "ubnd-test", [Batch(1, "CB01", satisfaction=1)])  # late, same month
    async with runtime.sessions() as session:
        victim = await session.scalar(select(Response.id).limit(1))
        await session.execute(delete(Response).where(Response.id == victim))
        await session.commit()
    assert await release(runtime) == []
    after = await releases.documents(runtime.sessions, [(await _only(runtime)).id], None)
    assert after == before
    # A rating in the open period shows nowhere until that period is released.
    await seed(runtime, "ubnd-test", [Batch(1, "CB01", day=dt.date(2026, 11, 3))])
    view = await releases.published(runtime.sessions, THRESHOLDS, agency.id)
    assert view.release and view.release.label == "2026-10"
    assert view.total.responses == 23


async def _only(runtime: Runtime) -> releases.ReleaseInfo:
    (info,) = await releases.list_releases(runtime.sessions)
    return info


async def test_periods_are_released_after_their_delay_and_never_overlap(
    runtime: Runtime, agency: Agency
) -> None:
    await seed(runtime, "ubnd-test", [Batch(6, "CB01", day=dt.date(2026, 9, 20))])
    ttl = runtime.settings.effective_release_delay_hours
    october_due = releases.release_time(OCTOBER, ttl)
    assert await release(runtime, october_due - dt.timedelta(seconds=1)) == ["2026-09"]
    assert await release(runtime, october_due) == ["2026-10"]
    # Switching to quarters mid-quarter: Q4 would overlap October, so the next is 2027-Q1.
    infos = await releases.list_releases(runtime.sessions)
    period, _ = releases.next_release(infos, "quarter", ttl, dt.date(2026, 11, 20))
    assert period.label == "2027-Q1"
    assert releases.due_periods("quarter", None, infos[-1].ends_on, ttl, october_due) == []


async def test_two_processes_releasing_at_once_publish_one_release(
    runtime: Runtime, agency: Agency
) -> None:
    await seed(runtime, "ubnd-test", [Batch(8, "CB01")])
    rule = Rule()
    outcomes = await asyncio.gather(
        *(releases.publish(runtime.sessions, OCTOBER, rule) for _ in range(4))
    )
    assert sum(o is not None for o in outcomes) == 1
    async with runtime.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Release)) == 1


async def test_an_agency_whose_ratings_all_rate_one_official_is_held_to_the_officials_k(
    runtime: Runtime, agency: Agency
) -> None:
    """Otherwise its total (k = 5) would publish the hidden official's 7 ratings (k = 10)."""
    mot = await add_agency(runtime, "ubnd-mot", "UBND một cán bộ", ["CB07"])
    await seed(runtime, "ubnd-mot", [Batch(7, "CB07", satisfaction=5)])
    await seed(runtime, "ubnd-test", [Batch(7, "CB01", satisfaction=5), Batch(6, "CB02")])
    await release(runtime)
    province = await releases.published(runtime.sessions, THRESHOLDS, None)
    agencies = {c.key: c for c in province.agencies}
    assert agencies["ubnd-mot"].suppressed == "small" and agencies["ubnd-mot"].rate is None
    # 13 ratings over two officials are a group (k = 5): hidden only as ubnd-mot's complement.
    assert agencies["ubnd-test"].suppressed == "complementary"
    assert province.levels is None  # province minus ubnd-test would give ubnd-mot's levels
    view = await releases.published(runtime.sessions, THRESHOLDS, mot.id)
    assert view.total.suppressed == "small" and view.levels is None
    assert all(not c.shown for c in view.procedures + view.officials)


async def test_coverage_is_released_with_the_same_rule(runtime: Runtime, agency: Agency) -> None:
    async with runtime.sessions() as session:
        rows = [("waiting", None, False, False)] * 6 + [("sent", "zalo_oa", False, False)] * 2
        rows += [("completed", "telegram", True, True)] * 7
        for status, channel, delivered, completed in rows:
            session.add(
                SurveyLedger(
                    agency_id=agency.id,
                    dossier_hash=secrets.token_hex(32),
                    dossier_key_id="t",
                    survey_id="mot-cua",
                    reported_on=dt.date(2026, 10, 1),
                    status=status,
                    channel=channel,
                    delivered=delivered,
                    completed=completed,
                )
            )
        await session.commit()
    assert await release(runtime) == ["2026-10"]
    view = await releases.published(runtime.sessions, THRESHOLDS, agency.id)
    by_channel = {r["channel"]: r for r in view.coverage}
    total = by_channel["*"]
    assert (total["reported"], total["sent"], total["delivered"], total["answered"]) == (
        15,
        9,
        7,
        7,
    )
    assert by_channel["zalo_oa"]["suppressed"] == "small"  # 2 reported
    # zalo_oa's 2 could be recovered as total minus the rest: the smallest other goes too.
    assert by_channel[""]["suppressed"] == "complementary"
    assert by_channel["telegram"]["answered"] == 7


async def test_a_few_raters_of_another_survey_hide_what_only_they_could_have_given(
    runtime: Runtime, agency: Agency
) -> None:
    """Mot-cua never gives levels 1 or 3 and ZNS ratings carry no criteria: with 3 ZNS raters,
    level 3's count and the agency's dissatisfied minus the criteria's would be theirs."""
    await seed(
        runtime,
        "ubnd-test",
        [
            Batch(20, "CB01", satisfaction=5),
            Batch(12, "CB02", satisfaction=2),
            Batch(3, "CB02", satisfaction=3, survey="zns-5-star"),
        ],
    )
    await release(runtime)
    view = await releases.published(runtime.sessions, THRESHOLDS, agency.id)
    assert view.total.shown and view.total.rated == 35
    assert view.levels is None and view.classes is None
    three = next(s for s in view.criteria if s.criterion == "3")
    assert three.scored == 32 and three.zero_share is not None
    assert three.dissatisfied is None and three.zero_share_dissatisfied is None
