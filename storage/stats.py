"""The arithmetic of published cells: rates, Wilson intervals, bands and rankings.

Nothing here reads live counts for a page: every figure a person sees comes from a frozen release
(``storage.releases``) cut by the disclosure rule (``storage.disclosure``). Rates follow Decision
766 (share of rated dossiers not rated "Không hài lòng") and are always paired with their count
and a 95% Wilson interval; rankings order by the interval's lower bound so that 3 happy ratings
never outrank 3,000 mostly-happy ones.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.sql.elements import ColumnElement

from bot.flows.scoring import CIRCULAR_01_2018, DECISION_766, Bands, bands_from, five_bands
from storage.db import Sessions
from storage.models import ResponseTally

Period = Literal["day", "week", "month", "quarter", "year"]
Z95 = 1.959963984540054
NOT_ENOUGH = "Chưa đủ đánh giá"
CRITERIA = ("1", "2", "3", "4", "5", "6", "7", "8", "9")
NO_UNIT = "-"
CLASS_ORDER = ("Xuất sắc", "Tốt", "Khá", "Trung bình", "Yếu")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The configurable rules; built from settings so a new circular needs no release."""

    k_group: int = 5
    k_official: int = 10
    bands_766: Bands = field(default_factory=lambda: five_bands(90.0, 80.0, 70.0, 50.0))
    bands_mot_cua: Bands = field(default_factory=lambda: five_bands(15.0, 12.0, 9.0, 6.0))

    @classmethod
    def from_settings(cls, settings: Any) -> Thresholds:
        return cls(
            k_group=settings.k_min_group,
            k_official=settings.k_min_official,
            bands_766=bands_from(settings, DECISION_766.band_prefix),
            bands_mot_cua=bands_from(settings, CIRCULAR_01_2018.band_prefix),
        )

    @property
    def bands(self) -> dict[str, Bands]:
        """Each registered scheme's bands, by scheme id."""
        return {CIRCULAR_01_2018.id: self.bands_mot_cua, DECISION_766.id: self.bands_766}

    def k_for(self, level: str) -> int:
        return self.k_official if level == "official" else self.k_group


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a proportion, in percent; (0, 100) when n is 0."""
    if n <= 0:
        return 0.0, 100.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half) * 100, min(1.0, centre + half) * 100


@dataclass(slots=True)
class Cell:
    """One unit's counts; the derived figures are None while the cell is suppressed."""

    key: str
    label: str
    parent: str
    responses: int = 0
    rated: int = 0
    satisfied: int = 0
    score_sum: float = 0.0
    scored: int = 0
    #: The sum of the scored responses' maxima (each scheme's own, e.g. 18).
    maximum_sum: float = 0.0
    suppressed: str | None = None  # "small", "complementary" or "parent"
    rank: int | None = None
    bands: Bands | None = None
    #: A procedure's field (lĩnh vực) code; '' for other units.
    field: str = ""

    @property
    def shown(self) -> bool:
        return self.suppressed is None

    @property
    def rate(self) -> float | None:
        return 100.0 * self.satisfied / self.rated if self.shown and self.rated else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson(self.satisfied, self.rated) if self.shown and self.rated else None

    @property
    def low(self) -> float | None:
        return self.interval[0] if self.interval else None

    @property
    def high(self) -> float | None:
        return self.interval[1] if self.interval else None

    @property
    def band(self) -> str:
        if self.rate is None or self.bands is None:
            return NOT_ENOUGH
        return self.bands.classify(self.rate)

    @property
    def avg_score(self) -> float | None:
        """The mean total of the scored responses (out of ``avg_maximum``)."""
        return round(self.score_sum / self.scored, 1) if self.shown and self.scored else None

    @property
    def avg_maximum(self) -> float | None:
        """The mean maximum of the scored responses: 18 when Circular 01/2018 scored them all."""
        if not (self.shown and self.scored and self.maximum_sum):
            return None
        return round(self.maximum_sum / self.scored, 1)


def rank(cells: Sequence[Cell], k: int) -> list[Cell]:
    """Shown cells with at least k ratings, best Wilson lower bound first, then the rest."""
    eligible = [c for c in cells if c.shown and c.rated >= k]
    eligible.sort(key=lambda c: (-(c.low or 0.0), -c.rated, c.key))
    for position, cell in enumerate(eligible, start=1):
        cell.rank = position
    rest = sorted((c for c in cells if c.rank is None), key=lambda c: (c.parent, c.key))
    return eligible + rest


#: Each dimension of the tally counts every response once; this one has the fewest rows.
EVERY_RESPONSE = "class"


async def response_count(sessions: Sessions, agency_id: str | None = None) -> int:
    """How many responses there are (in one agency): a sum of tally rows, not a scan."""
    async with sessions() as session:
        total = await session.scalar(
            select(func.sum(ResponseTally.responses)).where(*_tally(EVERY_RESPONSE, agency_id))
        )
    return int(total or 0)


def _tally(dimension: str, agency_id: str | None) -> list[ColumnElement[bool]]:
    """The tally rows of one dimension (each response is counted once per dimension)."""
    where = [ResponseTally.dimension == dimension, ResponseTally.responses > 0]
    if agency_id:
        where.append(ResponseTally.agency_id == agency_id)
    return where


def period_label(day: dt.date, period: Period) -> str:
    if period == "day":
        return day.isoformat()
    if period == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return f"{day.year}-{day.month:02d}"
    if period == "quarter":
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    return str(day.year)


def criteria_points(text: str | None) -> dict[str, int]:
    """The points of the known criteria in one stored criteria JSON (others are ignored)."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    points: dict[str, int] = {}
    for c in CRITERIA:
        raw = value.get(c)
        if raw is None or isinstance(raw, (dict, list)):
            continue
        try:
            points[c] = int(raw)
        except (TypeError, ValueError):
            continue
    return points


@dataclass(slots=True)
class CriterionStat:
    """How often a criterion scored 0, overall and among dissatisfied raters."""

    agency: str
    criterion: str
    scored: int | None
    mean_points: float | None
    zero_share: float | None
    zero_share_dissatisfied: float | None
    dissatisfied: int | None
    suppressed: bool
    #: The unit's whole subtree (itself and every unit under it), not the unit alone.
    subtree: bool = False
    #: The field (lĩnh vực) of a per-field figure; '' for the agency's own.
    field: str = ""

    @property
    def lift(self) -> float | None:
        """How much likelier a 0 is among dissatisfied raters: what drives dissatisfaction."""
        if not self.zero_share or self.zero_share_dissatisfied is None:
            return None
        return self.zero_share_dissatisfied / self.zero_share


@dataclass(slots=True)
class Coverage:
    """Who was asked vs who answered: exposes an agency that only surveys happy citizens."""

    agency: str
    channel: str
    reported: int = 0
    sent: int = 0
    delivered: int = 0
    answered: int = 0
    #: Results that started no survey: the citizen had been invited within the cap's window.
    capped: int = 0
