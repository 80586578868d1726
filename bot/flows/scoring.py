"""Scores: Circular 01/2018 per dossier (out of 18) and Decision 766 satisfaction rates.

Criteria 1 and 2 come from the dates the agency reports, never from the citizen; 3, 4, 6 and 7
from the citizen's answers; 5, 8 and 9 are agency-level and set by an admin per agency. When an
agency has no admin-set value for them the total is scaled from the criteria we do have, and
the response records which criteria were measured, so nothing is silently invented.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CITIZEN_CRITERIA = ("3", "4", "6", "7")
DATE_CRITERIA = ("1", "2")
AGENCY_CRITERIA = ("5", "8", "9")
MAX_PER_CRITERION = 2
MAX_TOTAL = 18
DISSATISFIED_MAX_LEVEL = 2  # on the common 1..5 scale, 1 and 2 are "Không hài lòng"


@dataclass(frozen=True, slots=True)
class Bands:
    """Lower bounds of each band, highest first; every value comes from settings."""

    thresholds: tuple[tuple[str, float], ...]
    lowest: str = "Yếu"

    def classify(self, value: float) -> str:
        for name, minimum in self.thresholds:
            if value >= minimum:
                return name
        return self.lowest


def five_bands(xuat_sac: float, tot: float, kha: float, trung_binh: float) -> Bands:
    """The five bands both Circular 01/2018 totals and Decision 766 rates use."""
    return Bands((("Xuất sắc", xuat_sac), ("Tốt", tot), ("Khá", kha), ("Trung bình", trung_binh)))


def timeliness_points(due: dt.date | None, done: dt.date | None) -> int | None:
    """2 when done before the due date, 1 on the due date, 0 when late; None when unknown."""
    if due is None or done is None:
        return None
    if done < due:
        return 2
    return 1 if done == due else 0


def criterion_2(
    steps: Sequence[Mapping[str, dt.date | None]] | None, overall: int | None
) -> int | None:
    """Every unit involved must beat its own deadline for 2; any late unit gives 0.

    Without per-unit dates the dossier's overall timeliness stands in for its single unit.
    """
    if not steps:
        return overall
    points = [timeliness_points(s.get("due"), s.get("done")) for s in steps]
    if any(p is None for p in points):
        return overall
    known = [p for p in points if p is not None]
    return min(known)


@dataclass(frozen=True, slots=True)
class DossierScore:
    criteria: dict[str, int]
    total18: float
    classification: str


def score_mot_cua(
    answers_points: Mapping[str, int | None],
    due: dt.date | None,
    returned: dt.date | None,
    steps: Sequence[Mapping[str, dt.date | None]] | None,
    agency_criteria: Mapping[str, int] | None,
    bands: Bands,
) -> DossierScore | None:
    """The Circular 01/2018 total out of 18 for one dossier, or None if nothing was measured."""
    criteria: dict[str, int] = {}
    c1 = timeliness_points(due, returned)
    if c1 is not None:
        criteria["1"] = c1
    c2 = criterion_2(steps, c1)
    if c2 is not None:
        criteria["2"] = c2
    for criterion in CITIZEN_CRITERIA:
        points = answers_points.get(criterion)
        if points is not None:
            criteria[criterion] = points
    for criterion in AGENCY_CRITERIA:
        value = (agency_criteria or {}).get(criterion)
        if value is not None:
            criteria[criterion] = int(value)
    if not criteria:
        return None
    measured_max = MAX_PER_CRITERION * len(criteria)
    total = round(sum(criteria.values()) * MAX_TOTAL / measured_max, 1)
    return DossierScore(criteria, total, bands.classify(total))


def is_dissatisfied(level: int | None) -> bool:
    return level is not None and level <= DISSATISFIED_MAX_LEVEL


def satisfaction_rate(levels: Sequence[int | None]) -> float | None:
    """Decision 766 style: share (in %) of rated dossiers not rated "Không hài lòng"."""
    rated = [level for level in levels if level is not None]
    if not rated:
        return None
    satisfied = sum(1 for level in rated if not is_dissatisfied(level))
    return 100.0 * satisfied / len(rated)
