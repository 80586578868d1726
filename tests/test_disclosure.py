"""The disclosure rule on its own: thresholds, differences along every line, cascades."""

from __future__ import annotations

import random

from storage.disclosure import (
    COMPLEMENTARY,
    PARENT,
    SMALL,
    Figure,
    Line,
    Rule,
    apply,
    audit_crossed,
)

COUNTS = ("responses", "rated", "scored")


def unit(responses: int, rated: int | None = None, scored: int | None = None, k: int = 5) -> Figure:
    rated = responses if rated is None else rated
    return Figure(
        {"responses": responses, "rated": rated, "scored": rated if scored is None else scored}, k
    )


def cut(parts: list[Figure], k: int = 5) -> Figure:
    total = unit(
        sum(p.counts["responses"] for p in parts),
        sum(p.counts["rated"] for p in parts),
        sum(p.counts["scored"] for p in parts),
        k=k,
    )
    apply([total, *parts], [Line(parts, total, COUNTS, k)], COUNTS)
    return total


def test_one_small_part_takes_the_smallest_other_with_it() -> None:
    parts = [unit(40), unit(12), unit(3)]
    cut(parts)
    assert [p.suppressed for p in parts] == [None, COMPLEMENTARY, SMALL]


def test_two_small_parts_that_together_hold_k_need_no_complement() -> None:
    parts = [unit(40), unit(3), unit(4)]
    cut(parts)
    assert [p.suppressed for p in parts] == [None, SMALL, SMALL]
    parts = [unit(40), unit(2), unit(2)]
    cut(parts)
    assert [p.suppressed for p in parts] == [COMPLEMENTARY, SMALL, SMALL]


def test_a_part_with_enough_responses_but_two_ratings_is_withheld() -> None:
    """Its rate would be the rate of two people."""
    parts = [unit(40), unit(20, rated=2), unit(30)]
    cut(parts)
    assert parts[1].suppressed == SMALL


def test_every_count_is_checked_along_a_line_not_only_responses() -> None:
    """Withheld parts holding 9 responses but 1 rating: total minus the rest gives that rating."""
    parts = [unit(40), unit(8, rated=0, scored=0), unit(1), unit(30)]
    cut(parts)
    withheld = [p for p in parts if not p.shown]
    assert sum(p.counts["rated"] for p in withheld) >= 5


def test_a_withheld_total_withholds_its_parts() -> None:
    parts = [unit(3), unit(1)]
    total = cut(parts)
    assert total.suppressed == SMALL and all(p.suppressed for p in parts)
    province = unit(100)
    agency = unit(60)
    agency.suppressed = COMPLEMENTARY
    officials = [unit(30, k=10), unit(30, k=10)]
    apply(
        [province, agency, *officials],
        [Line(officials, agency, COUNTS, 10)],
        COUNTS,
    )
    assert [o.suppressed for o in officials] == [PARENT, PARENT]


def test_a_group_rating_one_official_gets_the_officials_k() -> None:
    rule = Rule(k_group=5, k_official=10)
    assert rule.k_for({"cb1"}) == 10
    assert rule.k_for({"cb1", "cb2"}) == 5
    assert rule.k_for({None}) == 5
    assert rule.k_for({"cb1", None}) == 5
    assert rule.k_for({"cb1", "cb2"}, about_official=True) == 10


def test_no_line_ever_leaves_a_withheld_remainder_between_one_and_k() -> None:
    """The adversary's subtraction over random tables: total minus the published parts, for
    every count, is 0 or at least k; a withheld total leaves no part published."""
    rng = random.Random(20261201)
    for _ in range(2000):
        k = rng.choice((3, 5, 10))
        parts = []
        for _ in range(rng.randint(1, 8)):
            responses = rng.choice((0, 1, 2, 3, 4, 6, 9, 12, 40))
            rated = rng.randint(0, responses)
            parts.append(unit(responses, rated, rng.randint(0, rated), k=k))
        if not any(p.counts["responses"] for p in parts):
            continue
        total = cut(parts, k)
        if not total.shown:
            assert not any(p.shown for p in parts)
            continue
        for count in COUNTS:
            left = total.counts[count] - sum(p.counts[count] for p in parts if p.shown)
            assert left == 0 or left >= k, (count, k, [p.counts for p in parts])
        for p in parts:
            if p.shown:
                assert all(v == 0 or v >= k for v in p.counts.values())


def test_an_official_minus_the_procedures_only_they_handled_is_never_a_small_group() -> None:
    """BT01 (14 raters) handled 1.001234 alone (12): BT01 minus it is BT01's other 2 raters,
    hidden in a withheld procedure, and no line of one breakdown sees it."""
    officials = [unit(14, k=10), unit(24, k=10)]
    procedures = [unit(12), unit(2), unit(4), unit(20)]
    cells = {
        (0, 0): unit(12).counts,
        (0, 1): unit(2).counts,
        (1, 2): unit(4).counts,
        (1, 3): unit(20).counts,
    }
    total = unit(38)
    lines = [Line(officials, total, COUNTS, 5), Line(procedures, total, COUNTS, 5)]
    figures = [total, *officials, *procedures]
    rule = Rule()
    apply(figures, lines, COUNTS)
    assert [p.shown for p in procedures] == [True, False, False, True]  # 2 + 4 hidden: 6 >= 5

    def k_of(rows: set[int]) -> int:
        return rule.k_for({f"cb{r}" for r in rows})

    while audit_crossed(officials, procedures, cells, COUNTS, k_of, 10):
        apply(figures, lines, COUNTS)
    assert not procedures[0].shown  # BT01 minus 1.001234 would have left 2 raters
    # What the adversary can still subtract: BT01 minus the shown procedures inside it.
    inside = sum(p.counts["responses"] for i, p in enumerate(procedures) if p.shown and i < 2)
    assert officials[0].counts["responses"] - inside in (0, 14)


def test_a_set_of_officials_minus_a_procedure_spanning_them_is_audited_too() -> None:
    """Two officials who alone handled one procedure: their sum minus it is their other raters."""
    officials = [unit(20, k=10), unit(20, k=10), unit(30, k=10)]
    procedures = [unit(38), unit(2), unit(30)]
    cells = {
        (0, 0): unit(19).counts,
        (1, 0): unit(19).counts,
        (0, 1): unit(1).counts,
        (1, 1): unit(1).counts,
        (2, 2): unit(30).counts,
    }
    total = unit(70)
    lines = [Line(officials, total, COUNTS, 5), Line(procedures, total, COUNTS, 5)]
    figures = [total, *officials, *procedures]
    apply(figures, lines, COUNTS)
    changed = False
    while audit_crossed(
        officials, procedures, cells, COUNTS, lambda rows: 5 if len(rows) > 1 else 10, 10
    ):
        changed = True
        apply(figures, lines, COUNTS)
    assert changed
    shown_officials = sum(o.counts["responses"] for o in officials[:2] if o.shown)
    shown_inside = procedures[0].counts["responses"] if procedures[0].shown else 0
    assert not (officials[0].shown and officials[1].shown and procedures[0].shown), (
        shown_officials,
        shown_inside,
    )
