"""Scores, Wilson intervals, rankings by lower bound, suppression and coverage."""

from __future__ import annotations

import secrets

import pytest

from bot.runtime import Runtime
from storage import stats
from storage.models import Agency, SurveyLedger
from storage.stats import Cell, Thresholds, rank, suppress, wilson
from tests.adminseed import Batch, add_agency, seed


def test_wilson_interval_matches_known_values() -> None:
    assert wilson(0, 0) == (0.0, 100.0)
    low, high = wilson(3, 3)
    assert low == pytest.approx(43.85, abs=0.01) and high == pytest.approx(100.0)
    low, high = wilson(8, 10)
    assert low == pytest.approx(49.02, abs=0.01) and high == pytest.approx(94.33, abs=0.01)


def _cell(key: str, parent: str, responses: int, satisfied: int | None = None) -> Cell:
    return Cell(
        key, key, parent, responses, responses, responses if satisfied is None else satisfied
    )


def test_three_perfect_ratings_never_outrank_three_thousand_good_ones() -> None:
    few, many, tiny = _cell("few", "", 5), _cell("many", "", 3000, 2900), _cell("tiny", "", 3)
    ordered = rank([few, many, tiny], k=5)
    assert [c.key for c in ordered[:2]] == ["many", "few"]
    assert many.rank == 1 and few.rank == 2 and tiny.rank is None


def test_one_small_cell_forces_a_complementary_suppression() -> None:
    cells = [_cell("a", "x", 40), _cell("b", "x", 12), _cell("c", "x", 3), _cell("d", "y", 20)]
    suppress(cells, k=10)
    assert [c.suppressed for c in cells] == [None, "complementary", "small", None]
    assert cells[1].rate is None and cells[1].band == stats.NOT_ENOUGH


def test_two_small_cells_that_sum_to_k_need_no_complement() -> None:
    cells = [_cell("a", "x", 40), _cell("b", "x", 6), _cell("c", "x", 4)]
    suppress(cells, k=5)
    assert [c.suppressed for c in cells] == [None, "complementary", "small"]
    cells = [_cell("a", "x", 40), _cell("b", "x", 3), _cell("c", "x", 4)]
    suppress(cells, k=5)
    assert [c.suppressed for c in cells] == [None, "small", "small"]


async def test_officials_ranked_and_suppressed_from_the_database(
    runtime: Runtime, agency: Agency
) -> None:
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
    thresholds = Thresholds()
    officials = await stats.unit_cells(runtime.sessions, "official", thresholds, agency.id)
    by_key = {c.key: c for c in officials}
    assert set(by_key) == {"CB01", "CB02", stats.NO_UNIT}
    assert by_key[stats.NO_UNIT].suppressed == "small"
    # The unnamed bucket alone could be recovered from the agency total: CB02 goes too.
    assert by_key["CB02"].suppressed == "complementary"
    cb01 = by_key["CB01"]
    assert (cb01.rated, cb01.satisfied, cb01.rank) == (25, 20, 1)
    assert cb01.rate == pytest.approx(80.0) and cb01.band == "Tốt"
    assert cb01.low == pytest.approx(wilson(20, 25)[0])

    agencies = await stats.unit_cells(runtime.sessions, "agency", thresholds)
    assert [c.key for c in agencies] == ["ubnd-test", "ubnd-khac"]
    assert agencies[1].rate == 0.0 and agencies[1].band == "Yếu"

    view = await stats.overview(runtime.sessions, thresholds, agency.id)
    assert view.total.responses == 41 and view.levels == {5: 24, 4: 12, 1: 5}
    assert view.classes["Xuất sắc"] == 24 and [c.key for c in view.trend] == ["2026-10"]

    criteria = {
        s.criterion: s for s in await stats.criteria_stats(runtime.sessions, thresholds, agency.id)
    }
    assert criteria["3"].zero_share_dissatisfied == 100.0
    assert criteria["3"].zero_share == pytest.approx(100 * 5 / 41)
    assert criteria["1"].zero_share == 0.0


async def test_coverage_counts_reported_sent_delivered_answered(
    runtime: Runtime, agency: Agency
) -> None:
    async with runtime.sessions() as session:
        for status, channel, delivered, completed in [
            ("waiting", None, False, False),
            ("expired", None, False, False),
            ("sent", "zalo_oa", False, False),
            ("expired", "zalo_oa", True, False),
            ("completed", "telegram", True, True),
            ("completed", "telegram", True, True),
        ]:
            session.add(
                SurveyLedger(
                    agency_id=agency.id,
                    dossier_hash=secrets.token_hex(32),
                    dossier_key_id="t",
                    survey_id="mot-cua",
                    reported_on=stats.dt.date(2026, 10, 1),
                    status=status,
                    channel=channel,
                    delivered=delivered,
                    completed=completed,
                )
            )
        await session.commit()
    rows = {(c.agency, c.channel): c for c in await stats.coverage(runtime.sessions)}
    total = rows[("ubnd-test", "*")]
    assert (total.reported, total.sent, total.delivered, total.answered) == (6, 4, 3, 2)
    assert rows[("ubnd-test", "zalo_oa")].answered == 0
    assert rows[("ubnd-test", "")].reported == 2
    assert total.response_rate == pytest.approx(100 * 2 / 6)


async def test_an_agency_whose_ratings_all_rate_one_official_is_held_to_the_officials_k(
    runtime: Runtime, agency: Agency
) -> None:
    """Otherwise its total (k = 5) would publish the hidden official's 7 ratings (k = 10)."""
    await add_agency(runtime, "ubnd-mot", "UBND một cán bộ", ["CB07"])
    await seed(runtime, "ubnd-mot", [Batch(7, "CB07", satisfaction=5)])
    await seed(runtime, "ubnd-test", [Batch(7, "CB01", satisfaction=5), Batch(6, "CB02")])
    thresholds = Thresholds()
    agencies = {c.key: c for c in await stats.unit_cells(runtime.sessions, "agency", thresholds)}
    assert agencies["ubnd-mot"].suppressed == "small" and agencies["ubnd-mot"].rate is None
    # 13 ratings over two officials are a group (k = 5): hidden only as ubnd-mot's complement.
    assert agencies["ubnd-test"].suppressed == "complementary"
    mot = await stats.agency_names(runtime.sessions)
    mot_id = next(i for i, (code, _) in mot.items() if code == "ubnd-mot")
    procedures = await stats.unit_cells(runtime.sessions, "procedure", thresholds, mot_id)
    assert all(not c.shown for c in procedures)
    periods = await stats.unit_cells(runtime.sessions, "period", thresholds, mot_id)
    assert all(not c.shown for c in periods)
    view = await stats.overview(runtime.sessions, thresholds, mot_id)
    assert view.total.suppressed == "small" and view.levels == {}
