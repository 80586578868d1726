"""Circular 01/2018 and Decision 766 scoring against worked examples."""

from __future__ import annotations

import datetime as dt

import pytest

from bot.flows.scoring import (
    CIRCULAR_01_2018,
    SCHEMES,
    Score,
    ScoreInputs,
    criterion_2,
    dossier_inputs,
    five_bands,
    satisfaction_rate,
    scheme,
    timeliness_points,
)

BANDS = five_bands(15, 12, 9, 6)
D = dt.date


def score_mot_cua(*args: object) -> Score | None:
    """The Circular 01/2018 entry on a dossier's answers, dates and agency criteria."""
    *inputs, bands = args
    return CIRCULAR_01_2018.score(dossier_inputs(*inputs), bands)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("due", "done", "points"),
    [(D(2026, 11, 20), D(2026, 11, 19), 2), (D(2026, 11, 20), D(2026, 11, 20), 1), (D(2026, 11, 20), D(2026, 11, 21), 0), (None, D(2026, 11, 1), None)],
)  # fmt: skip
def test_criterion_1_from_dates(due: dt.date | None, done: dt.date, points: int | None) -> None:
    assert timeliness_points(due, done) == points


def test_criterion_2_is_the_worst_unit() -> None:
    steps = [
        {"due": D(2026, 11, 10), "done": D(2026, 11, 9)},
        {"due": D(2026, 11, 15), "done": D(2026, 11, 15)},
    ]
    assert criterion_2(steps, 2) == 1
    steps.append({"due": D(2026, 11, 18), "done": D(2026, 11, 19)})
    assert criterion_2(steps, 2) == 0
    assert criterion_2([], 2) == 2  # no per-unit dates: the dossier's own timeliness


def test_all_nine_criteria_at_full_marks_is_18_xuat_sac() -> None:
    score = score_mot_cua(
        {"3": 2, "4": 2, "6": 2, "7": 2},
        D(2026, 11, 20),
        D(2026, 11, 18),
        None,
        {"5": 2, "8": 2, "9": 2},
        BANDS,
    )
    assert score is not None
    assert score.total == 18 and score.band == "Xuất sắc"
    assert set(score.criteria) == {"1", "2", "3", "4", "5", "6", "7", "8", "9"}


def test_worked_example_mixed_answers_with_agency_criteria() -> None:
    # On time (1, 1), contacted once (1), only the desk (1), published both ways (2), attitude ok (1),
    # agency-level 5/8/9 = 2/1/1: total 11 of 18 → Khá.
    score = score_mot_cua(
        {"3": 1, "4": 1, "6": 2, "7": 1},
        D(2026, 11, 20),
        D(2026, 11, 20),
        None,
        {"5": 2, "8": 1, "9": 1},
        BANDS,
    )
    assert score is not None and score.total == 11 and score.band == "Khá"


def test_without_agency_criteria_the_measured_ones_are_scaled_to_18() -> None:
    # 6 measured criteria (1, 2, 3, 4, 6, 7) worth 12; 10 of 12 scales to 15.0 → Xuất sắc (≥ 15).
    score = score_mot_cua(
        {"3": 2, "4": 2, "6": 2, "7": 2}, D(2026, 11, 20), D(2026, 11, 20), None, None, BANDS
    )
    assert score is not None and score.total == 15.0 and score.band == "Xuất sắc"
    assert "5" not in score.criteria


@pytest.mark.parametrize(
    ("total", "band"),
    [(18, "Xuất sắc"), (15, "Xuất sắc"), (14.9, "Tốt"), (12, "Tốt"), (9, "Khá"), (6, "Trung bình"), (5.9, "Yếu"), (0, "Yếu")],
)  # fmt: skip
def test_bands_have_no_gap_at_15(total: float, band: str) -> None:
    assert BANDS.classify(total) == band


def test_thresholds_are_configuration() -> None:
    assert five_bands(16, 13, 10, 7).classify(15) == "Tốt"


def test_766_rate_counts_only_dissatisfied_against() -> None:
    # 5 Rất hài lòng, 4 Hài lòng, 3 neutral, 2 and 1 dissatisfied.
    assert satisfaction_rate([5, 4, 3, 2, 1]) == pytest.approx(60.0)
    assert satisfaction_rate([5, 4, None]) == 100.0
    assert satisfaction_rate([]) is None
    rate_766 = five_bands(90, 80, 70, 50)
    assert rate_766.classify(satisfaction_rate([5] * 9 + [2]) or 0) == "Xuất sắc"
    assert rate_766.classify(85) == "Tốt" and rate_766.classify(49.9) == "Yếu"


def test_the_registry_holds_both_regulations_and_the_legacy_ids() -> None:
    assert set(SCHEMES) == {"circular-01-2018", "decision-766"}
    assert scheme("mot-cua") is CIRCULAR_01_2018
    assert scheme("satisfaction").id == "decision-766"
    assert scheme("decision-766").score(ScoreInputs(satisfaction=5), BANDS) is None


def test_inputs_keep_the_classes_not_the_dates() -> None:
    inputs = dossier_inputs({"3": 2, "4": None}, D(2026, 11, 20), D(2026, 11, 19), None, None, 4)
    stored = inputs.to_json()
    assert stored == {
        "answered": {"3": 2},
        "timeliness": {"1": "early", "2": "early"},
        "agency": {},
        "satisfaction": 4,
    }
    assert "2026" not in repr(stored)
    assert ScoreInputs.from_json(stored) == inputs
    score = CIRCULAR_01_2018.score(inputs, BANDS)
    assert score is not None and (score.total, score.maximum, score.band) == (
        18.0,
        18.0,
        "Xuất sắc",
    )
    assert CIRCULAR_01_2018.score(inputs, five_bands(19, 18.5, 18.2, 18.1)).band == "Yếu"  # type: ignore[union-attr]
