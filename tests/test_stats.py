"""Wilson intervals and rankings by their lower bound."""

from __future__ import annotations

import pytest

from storage.stats import Cell, rank, wilson


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
