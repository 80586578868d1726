"""Scoring schemes as a registry: Circular 01/2018 per dossier and Decision 766 satisfaction rates.

A survey definition names its scheme by id (``scoring: circular-01-2018``); the scheme turns the
response's ``ScoreInputs`` into a ``Score`` (total, maximum, band) with bands that come from
settings. The inputs are kept with the response, so when a regulation or its bands change every
stored response can be scored again (``surveybot scores recompute``) instead of only new ones.

Criteria 1 and 2 come from the dates the agency reports, never from the citizen, but the dates
themselves are not inputs: only the coarse class each criterion defines ("early", "on_time",
"late"), which is what its points already say, so keeping it reveals nothing the stored points
did not. 3, 4, 6 and 7 come from the citizen's answers; 5, 8 and 9 are agency-level and set by
an admin per agency. When an agency has no admin-set value for them the total is scaled from
the criteria we do have, and the response records which criteria were measured, so nothing is
silently invented.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

CITIZEN_CRITERIA = ("3", "4", "6", "7")
DATE_CRITERIA = ("1", "2")
AGENCY_CRITERIA = ("5", "8", "9")
MAX_PER_CRITERION = 2
DISSATISFIED_MAX_LEVEL = 2  # on the common 1..5 scale, 1 and 2 are "Không hài lòng"
#: The classes criteria 1 and 2 define (shorter than prescribed, equal, longer) and their points.
TIMELINESS_POINTS = {"early": 2, "on_time": 1, "late": 0}
#: The settings names of the five bands, highest first (``<prefix>_<name>``).
BAND_NAMES = ("xuat_sac", "tot", "kha", "trung_binh")


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


def timeliness(due: dt.date | None, done: dt.date | None) -> str | None:
    """Criterion 1's class: done before the due date, on it, or after; None when unknown."""
    if due is None or done is None:
        return None
    if done < due:
        return "early"
    return "on_time" if done == due else "late"


def timeliness_points(due: dt.date | None, done: dt.date | None) -> int | None:
    """2 when done before the due date, 1 on the due date, 0 when late; None when unknown."""
    found = timeliness(due, done)
    return None if found is None else TIMELINESS_POINTS[found]


def units_timeliness(
    steps: Sequence[Mapping[str, dt.date | None]] | None, overall: str | None
) -> str | None:
    """Criterion 2's class: every unit involved must beat its own deadline; any late unit is late.

    Without per-unit dates the dossier's overall timeliness stands in for its single unit.
    """
    if not steps:
        return overall
    found = [timeliness(s.get("due"), s.get("done")) for s in steps]
    if any(f is None for f in found):
        return overall
    return min((f for f in found if f is not None), key=TIMELINESS_POINTS.__getitem__)


def criterion_2(
    steps: Sequence[Mapping[str, dt.date | None]] | None, overall: int | None
) -> int | None:
    """Criterion 2's points (see ``units_timeliness``), given criterion 1's points."""
    by_points = {p: c for c, p in TIMELINESS_POINTS.items()}
    found = units_timeliness(steps, None if overall is None else by_points[overall])
    return None if found is None else TIMELINESS_POINTS[found]


@dataclass(frozen=True, slots=True)
class ScoreInputs:
    """What a scheme needs of one response, and nothing that dates or names its dossier.

    ``answered``: criterion → points from the citizen's answers; ``timeliness``: "1"/"2" →
    "early", "on_time" or "late"; ``agency``: the agency-level criteria as set when the survey
    closed; ``satisfaction``: the level on the common 1..5 scale.
    """

    answered: Mapping[str, int] = field(default_factory=dict)
    timeliness: Mapping[str, str] = field(default_factory=dict)
    agency: Mapping[str, int] = field(default_factory=dict)
    satisfaction: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "answered": dict(self.answered),
            "timeliness": dict(self.timeliness),
            "agency": dict(self.agency),
            "satisfaction": self.satisfaction,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> ScoreInputs:
        raw = raw or {}
        known = set(TIMELINESS_POINTS)
        return cls(
            answered={str(k): int(v) for k, v in (raw.get("answered") or {}).items()},
            timeliness={
                str(k): str(v) for k, v in (raw.get("timeliness") or {}).items() if v in known
            },
            agency={str(k): int(v) for k, v in (raw.get("agency") or {}).items()},
            satisfaction=raw.get("satisfaction"),
        )


def dossier_inputs(
    answers_points: Mapping[str, int | None],
    due: dt.date | None,
    returned: dt.date | None,
    steps: Sequence[Mapping[str, dt.date | None]] | None = None,
    agency_criteria: Mapping[str, int] | None = None,
    satisfaction: int | None = None,
) -> ScoreInputs:
    """The inputs of one closing dossier: its dates reduced to the classes criteria 1-2 define."""
    overall = timeliness(due, returned)
    classes = {"1": overall, "2": units_timeliness(steps, overall)}
    return ScoreInputs(
        answered={c: p for c, p in answers_points.items() if p is not None},
        timeliness={c: v for c, v in classes.items() if v is not None},
        agency={k: int(v) for k, v in (agency_criteria or {}).items() if v is not None},
        satisfaction=satisfaction,
    )


@dataclass(frozen=True, slots=True)
class Score:
    scheme: str
    criteria: dict[str, int]
    total: float
    maximum: float
    band: str


class Scheme(Protocol):
    """One regulation's way to score a response; registered in ``SCHEMES`` by its id."""

    @property
    def id(self) -> str: ...

    @property
    def title(self) -> str: ...

    #: Settings names of its bands: ``<band_prefix>_xuat_sac`` … ``<band_prefix>_trung_binh``.
    @property
    def band_prefix(self) -> str: ...

    def score(self, inputs: ScoreInputs, bands: Bands) -> Score | None: ...


@dataclass(frozen=True, slots=True)
class Circular012018:
    """Nine criteria of 2/1/0 points, out of 18, banded per dossier."""

    id: str = "circular-01-2018"
    title: str = "Thông tư 01/2018/TT-VPCP"
    band_prefix: str = "band_mot_cua"
    maximum: float = 18.0

    def score(self, inputs: ScoreInputs, bands: Bands) -> Score | None:
        """The total out of ``maximum``, or None if nothing was measured."""
        criteria: dict[str, int] = {}
        for criterion in DATE_CRITERIA:
            found = inputs.timeliness.get(criterion)
            if found is not None:
                criteria[criterion] = TIMELINESS_POINTS[found]
        for criterion in CITIZEN_CRITERIA:
            points = inputs.answered.get(criterion)
            if points is not None:
                criteria[criterion] = points
        for criterion in AGENCY_CRITERIA:
            value = inputs.agency.get(criterion)
            if value is not None:
                criteria[criterion] = int(value)
        if not criteria:
            return None
        measured_max = MAX_PER_CRITERION * len(criteria)
        total = round(sum(criteria.values()) * self.maximum / measured_max, 1)
        return Score(self.id, criteria, total, self.maximum, bands.classify(total))


@dataclass(frozen=True, slots=True)
class Decision766:
    """Satisfaction rates: a unit's share of ratings not "Không hài lòng", banded per unit.

    One response has no total of its own under this decision (its one input, the satisfaction
    level, is the response's own column); its bands classify a unit's rate (``rate``).
    """

    id: str = "decision-766"
    title: str = "Quyết định 766/QĐ-TTg"
    band_prefix: str = "band_766"
    maximum: float = 100.0

    def score(self, inputs: ScoreInputs, bands: Bands) -> Score | None:
        return None

    def rate(self, levels: Sequence[int | None]) -> float | None:
        return satisfaction_rate(levels)


CIRCULAR_01_2018 = Circular012018()
DECISION_766 = Decision766()
SCHEMES: dict[str, Scheme] = {s.id: s for s in (CIRCULAR_01_2018, DECISION_766)}
#: Scheme ids written before schemes were a registry, as definitions may still carry them.
LEGACY_SCHEME_IDS = {"mot-cua": CIRCULAR_01_2018.id, "satisfaction": DECISION_766.id}


def scheme(scheme_id: str) -> Scheme:
    """The registered scheme of this id (or of a legacy id); KeyError when there is none."""
    return SCHEMES[LEGACY_SCHEME_IDS.get(scheme_id, scheme_id)]


def bands_from(values: Any, prefix: str) -> Bands:
    """A scheme's five bands read from a settings object's ``<prefix>_<band>`` attributes."""
    xuat_sac, tot, kha, trung_binh = (float(getattr(values, f"{prefix}_{n}")) for n in BAND_NAMES)
    return five_bands(xuat_sac, tot, kha, trung_binh)


def is_dissatisfied(level: int | None) -> bool:
    return level is not None and level <= DISSATISFIED_MAX_LEVEL


def satisfaction_rate(levels: Sequence[int | None]) -> float | None:
    """Decision 766 style: share (in %) of rated dossiers not rated "Không hài lòng"."""
    rated = [level for level in levels if level is not None]
    if not rated:
        return None
    satisfied = sum(1 for level in rated if not is_dissatisfied(level))
    return 100.0 * satisfied / len(rated)
