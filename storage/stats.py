"""Scores, rates, rankings, coverage and small-cell suppression over the confidential store.

Everything an admin sees or exports as an aggregate comes from here, so the confidentiality rule
of the brief (no group under k responses; 10 for a single official) is applied in one place:

* a cell with fewer than k responses is suppressed ("Chưa đủ đánh giá");
* complementary suppression: when a parent total is published (an agency's total next to its
  officials), suppressing one cell is not enough, because total minus the others gives it back.
  While the suppressed cells of a group are a single cell or together hold fewer than k
  responses, the smallest published cell of the group is suppressed too.

Rates follow Decision 766 (share of rated dossiers not rated "Không hài lòng") and are always
paired with their count and a 95% Wilson interval; rankings order by the interval's lower bound
so that 3 happy ratings never outrank 3,000 mostly-happy ones.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from bot.flows.scoring import DISSATISFIED_MAX_LEVEL, Bands, five_bands
from storage.db import Sessions
from storage.models import Agency, Official, Procedure, ResponseTally, SurveyLedger

Period = Literal["day", "week", "month", "quarter", "year"]
UnitLevel = Literal["agency", "official", "procedure", "period"]
Z95 = 1.959963984540054
NOT_ENOUGH = "Chưa đủ đánh giá"
CRITERIA = ("1", "2", "3", "4", "5", "6", "7", "8", "9")
NO_UNIT = "-"


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
            bands_766=five_bands(
                settings.band_766_xuat_sac,
                settings.band_766_tot,
                settings.band_766_kha,
                settings.band_766_trung_binh,
            ),
            bands_mot_cua=five_bands(
                settings.band_mot_cua_xuat_sac,
                settings.band_mot_cua_tot,
                settings.band_mot_cua_kha,
                settings.band_mot_cua_trung_binh,
            ),
        )

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
    suppressed: str | None = None  # "small" or "complementary"
    rank: int | None = None
    bands: Bands | None = None

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
    def avg_score18(self) -> float | None:
        return round(self.score_sum / self.scored, 1) if self.shown and self.scored else None

    def add(self, other: Cell) -> None:
        self.responses += other.responses
        self.rated += other.rated
        self.satisfied += other.satisfied
        self.score_sum += other.score_sum
        self.scored += other.scored


def suppress(cells: Sequence[Cell], k: int, k_cell: Callable[[Cell], int] | None = None) -> None:
    """Primary then complementary suppression within each parent group (in place).

    ``k_cell`` raises the threshold of particular cells (one whose responses all rate a single
    official is that official's cell in disguise, so it needs the official's k).
    """
    groups: dict[str, list[Cell]] = defaultdict(list)
    for cell in cells:
        if cell.responses < (k_cell(cell) if k_cell else k):
            cell.suppressed = "small"
        groups[cell.parent].append(cell)
    for members in groups.values():
        while True:
            hidden = [c for c in members if not c.shown]
            if not hidden or (len(hidden) > 1 and sum(c.responses for c in hidden) >= k):
                break
            visible = sorted((c for c in members if c.shown), key=lambda c: c.responses)
            if not visible:
                break
            visible[0].suppressed = "complementary"


def rank(cells: Sequence[Cell], k: int) -> list[Cell]:
    """Shown cells with at least k ratings, best Wilson lower bound first, then the rest."""
    eligible = [c for c in cells if c.shown and c.rated >= k]
    eligible.sort(key=lambda c: (-(c.low or 0.0), -c.rated, c.key))
    for position, cell in enumerate(eligible, start=1):
        cell.rank = position
    rest = sorted((c for c in cells if c.rank is None), key=lambda c: (c.parent, c.key))
    return eligible + rest


def _counts() -> list[ColumnElement[Any]]:
    rated = case((ResponseTally.satisfaction > 0, ResponseTally.responses), else_=0)
    satisfied = case(
        (ResponseTally.satisfaction > DISSATISFIED_MAX_LEVEL, ResponseTally.responses), else_=0
    )
    return [
        func.sum(ResponseTally.responses).label("responses"),
        func.sum(rated).label("rated"),
        func.sum(satisfied).label("satisfied"),
        func.sum(ResponseTally.score_tenths).label("score_tenths"),
        func.sum(ResponseTally.scored).label("scored"),
    ]


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


def _fill(cell: Cell, row: Any) -> Cell:
    cell.responses, cell.rated, cell.satisfied = (
        int(row.responses),
        int(row.rated),
        int(row.satisfied),
    )
    cell.score_sum, cell.scored = int(row.score_tenths) / 10, int(row.scored)
    return cell


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


async def single_official_agencies(sessions: Sessions) -> tuple[set[str], bool]:
    """Agencies (by code) whose every response rates one and the same official, and whether the
    whole deployment is like that. Any figure about such an agency is a figure about that one
    official, so it is held to the official's k, not the group's."""
    names = await agency_names(sessions)
    async with sessions() as session:
        rows = list(
            await session.execute(
                select(
                    ResponseTally.agency_id,
                    # '' (no official) sorts first, so min = max = an id means one official
                    func.min(ResponseTally.unit).label("official"),
                    func.max(ResponseTally.unit).label("last_official"),
                )
                .where(*_tally("official", None))
                .group_by(ResponseTally.agency_id)
            )
        )
    single = {names[r.agency_id][0] for r in rows if r.official and r.official == r.last_official}
    everywhere = bool(rows) and len(single) == len(rows) and len({r.official for r in rows}) == 1
    return single, everywhere


async def agency_names(sessions: Sessions) -> dict[str, tuple[str, str]]:
    async with sessions() as session:
        rows = await session.execute(select(Agency.id, Agency.code, Agency.name))
        return {r.id: (r.code, r.name) for r in rows}


async def unit_cells(
    sessions: Sessions,
    level: UnitLevel,
    thresholds: Thresholds,
    agency_id: str | None = None,
    period: Period = "month",
) -> list[Cell]:
    """Ranked, suppressed cells for agencies, officials or procedures (per agency), or periods."""
    agencies = await agency_names(sessions)
    cells: dict[tuple[str, str], Cell] = {}
    async with sessions() as session:
        if level == "agency":
            stmt = (
                select(ResponseTally.agency_id, *_counts())
                .where(*_tally(EVERY_RESPONSE, agency_id))
                .group_by(ResponseTally.agency_id)
            )
            for row in await session.execute(stmt):
                code, name = agencies[row.agency_id]
                cells[("", code)] = _fill(Cell(code, name, ""), row)
        elif level in ("official", "procedure"):
            table = Official if level == "official" else Procedure
            stmt = (
                select(ResponseTally.agency_id, ResponseTally.unit, *_counts())
                .where(*_tally(level, agency_id))
                .group_by(ResponseTally.agency_id, ResponseTally.unit)
            )
            grouped = list(await session.execute(stmt))
            id_list = sorted({row.unit for row in grouped if row.unit})
            names: dict[str, tuple[str, str]] = {}
            for first in range(0, len(id_list), 500):
                chunk = id_list[first : first + 500]
                for unit_id, code, name in await session.execute(
                    select(table.id, table.code, table.name).where(table.id.in_(chunk))
                ):
                    names[unit_id] = (code, name)
            for row in grouped:
                parent = agencies[row.agency_id][0]
                code, name = names.get(row.unit, (NO_UNIT, ""))
                cells[(parent, code)] = _fill(Cell(code, name, parent), row)
        else:
            for parent_id, label, day in await _day_cells(session, agency_id, period):
                parent = agencies[parent_id][0]
                cells.setdefault((parent, label), Cell(label, label, parent)).add(day)
    result = list(cells.values())
    for cell in result:
        cell.bands = thresholds.bands_766
    k = thresholds.k_for(level)
    single, _ = await single_official_agencies(sessions)

    def k_cell(cell: Cell) -> int:
        agency = cell.key if level == "agency" else cell.parent
        return max(k, thresholds.k_official) if agency in single else k

    suppress(result, k, k_cell)
    if level == "period":
        return sorted(result, key=lambda c: (c.parent, c.key))
    return rank(result, k)


@dataclass(slots=True)
class Overview:
    total: Cell
    trend: list[Cell]
    levels: dict[int, int]
    classes: dict[str, int]
    k: int


CLASS_ORDER = ("Xuất sắc", "Tốt", "Khá", "Trung bình", "Yếu")


async def overview(
    sessions: Sessions, thresholds: Thresholds, agency_id: str | None = None
) -> Overview:
    """Headline figures; under k responses nothing but the count is shown."""
    # Counts per agency, level and classification give the total, the levels and the classes.
    stmt = (
        select(ResponseTally.satisfaction, ResponseTally.unit, *_counts())
        .where(*_tally(EVERY_RESPONSE, agency_id))
        .group_by(ResponseTally.agency_id, ResponseTally.satisfaction, ResponseTally.unit)
    )
    total = Cell("all", "", "")
    levels: dict[int, int] = defaultdict(int)
    classes: dict[str, int] = defaultdict(int)
    async with sessions() as session:
        for row in await session.execute(stmt):
            total.add(_fill(Cell("", "", ""), row))
            if row.satisfaction:
                levels[int(row.satisfaction)] += int(row.responses)
            if row.unit:
                classes[str(row.unit)] += int(row.responses)
    levels, classes = dict(levels), dict(classes)
    total.bands = thresholds.bands_766
    k = thresholds.k_group
    single, everywhere = await single_official_agencies(sessions)
    agency_code = (await agency_names(sessions)).get(agency_id or "", ("", ""))[0]
    if everywhere or (agency_id is not None and agency_code in single):
        k = max(k, thresholds.k_official)  # this total is one official's total
    if total.responses < k:
        total.suppressed = "small"
        levels, classes = {}, {}
    if agency_id is not None:
        trend = await unit_cells(sessions, "period", thresholds, agency_id, "month")
    else:
        merged: dict[str, Cell] = {}
        for cell in await _all_periods(sessions):
            merged.setdefault(cell.key, Cell(cell.key, cell.key, "")).add(cell)
        trend = list(merged.values())
        for cell in trend:
            cell.bands = thresholds.bands_766
        suppress(trend, k)
        trend.sort(key=lambda c: c.key)
    return Overview(total, trend, levels, {c: classes.get(c, 0) for c in CLASS_ORDER}, k)


async def _all_periods(sessions: Sessions) -> list[Cell]:
    """Monthly cells over all agencies."""
    months: dict[str, Cell] = {}
    async with sessions() as session:
        for _, label, day in await _day_cells(session, None, "month"):
            months.setdefault(label, Cell(label, "", "")).add(day)
    return list(months.values())


async def _day_cells(
    session: AsyncSession, agency_id: str | None, period: Period
) -> list[tuple[str, str, Cell]]:
    """(agency id, period label, that day's counts) for every day with responses."""
    stmt = (
        select(ResponseTally.agency_id, ResponseTally.unit, *_counts())
        .where(*_tally("day", agency_id))
        .group_by(ResponseTally.agency_id, ResponseTally.unit)
    )
    result = []
    for row in await session.execute(stmt):
        label = period_label(dt.date.fromisoformat(row.unit), period)
        result.append((row.agency_id, label, _fill(Cell(label, label, ""), row)))
    return result


def _criteria_points(text: str | None) -> dict[str, int]:
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
    scored: int
    mean_points: float | None
    zero_share: float | None
    zero_share_dissatisfied: float | None
    dissatisfied: int
    suppressed: bool

    @property
    def lift(self) -> float | None:
        """How much likelier a 0 is among dissatisfied raters: what drives dissatisfaction."""
        if not self.zero_share or self.zero_share_dissatisfied is None:
            return None
        return self.zero_share_dissatisfied / self.zero_share


async def criteria_stats(
    sessions: Sessions, thresholds: Thresholds, agency_id: str | None = None
) -> list[CriterionStat]:
    """Per agency and criterion, drivers of dissatisfaction first."""
    agencies = await agency_names(sessions)
    # Responses per (agency, satisfaction, criteria JSON): the JSON repeats (a handful of
    # points per criterion), so it is parsed once per distinct value.
    stmt = (
        select(
            ResponseTally.agency_id,
            ResponseTally.satisfaction,
            ResponseTally.unit,
            func.sum(ResponseTally.responses),
        )
        .where(*_tally("criteria", agency_id), ResponseTally.unit != "")
        .group_by(ResponseTally.agency_id, ResponseTally.satisfaction, ResponseTally.unit)
    )
    # per (agency, criterion): scored, points, zeros, zeros among dissatisfied, dissatisfied
    sums: dict[tuple[str, str], list[int]] = {}
    parsed: dict[str, dict[str, int]] = {}
    async with sessions() as session:
        for agency_db_id, satisfaction, text, count in await session.execute(stmt):
            points = parsed.get(text)
            if points is None:
                points = parsed[text] = _criteria_points(text)
            count = int(count)
            dis = 0 < satisfaction <= DISSATISFIED_MAX_LEVEL
            for c, value in points.items():
                acc = sums.setdefault((agency_db_id, c), [0, 0, 0, 0, 0])
                acc[0] += count
                acc[1] += value * count
                if value == 0:
                    acc[2] += count
                    if dis:
                        acc[3] += count
                if dis:
                    acc[4] += count
    k = thresholds.k_group
    result: list[CriterionStat] = []
    for (agency_db_id, c), (n, total, zeros, zeros_dis, n_dis) in sums.items():
        small = n < k
        result.append(
            CriterionStat(
                agency=agencies[agency_db_id][0],
                criterion=c,
                scored=n,
                mean_points=None if small else round(total / n, 2),
                zero_share=None if small else 100.0 * zeros / n,
                zero_share_dissatisfied=(None if small or n_dis < k else 100.0 * zeros_dis / n_dis),
                dissatisfied=n_dis,
                suppressed=small,
            )
        )
    result.sort(key=lambda s: (s.agency, -(s.zero_share_dissatisfied or -1), s.criterion))
    return result


@dataclass(slots=True)
class Coverage:
    """Who was asked vs who answered: exposes an agency that only surveys happy citizens."""

    agency: str
    channel: str
    reported: int = 0
    sent: int = 0
    delivered: int = 0
    answered: int = 0

    def share(self, part: int, whole: int) -> float | None:
        return 100.0 * part / whole if whole else None

    @property
    def response_rate(self) -> float | None:
        return self.share(self.answered, self.reported)


async def coverage(sessions: Sessions, agency_id: str | None = None) -> list[Coverage]:
    """Per agency (channel "*") and per agency and channel ("" when none was reachable)."""
    agencies = await agency_names(sessions)
    where = [SurveyLedger.agency_id == agency_id] if agency_id else []
    stmt = (
        select(
            SurveyLedger.agency_id,
            SurveyLedger.channel,
            func.count(),
            func.count(SurveyLedger.channel),
            func.sum(case((SurveyLedger.delivered == True, 1), else_=0)),  # noqa: E712
            func.sum(case((SurveyLedger.completed == True, 1), else_=0)),  # noqa: E712
        )
        .where(*where)
        .group_by(SurveyLedger.agency_id, SurveyLedger.channel)
    )
    rows: dict[tuple[str, str], Coverage] = {}
    async with sessions() as session:
        for agency_db_id, channel, reported, sent, delivered, answered in await session.execute(
            stmt
        ):
            agency = agencies[agency_db_id][0]
            for key in ((agency, "*"), (agency, channel or "")):
                row = rows.setdefault(key, Coverage(agency, key[1]))
                row.reported += reported
                row.sent += sent
                row.delivered += int(delivered or 0)
                row.answered += int(answered or 0)
    return sorted(rows.values(), key=lambda c: (c.agency, c.channel != "*", c.channel))


def as_percent(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def flatten(cells: Iterable[Cell]) -> list[dict[str, Any]]:
    """Plain dicts for templates and JSON: suppressed cells keep only their label and status."""
    out = []
    for c in cells:
        out.append(
            {
                "parent": c.parent,
                "key": c.key,
                "label": c.label,
                "responses": c.responses if c.shown else None,
                "rated": c.rated if c.shown else None,
                "satisfied": c.satisfied if c.shown else None,
                "rate": c.rate,
                "low": c.low,
                "high": c.high,
                "band": c.band,
                "rank": c.rank,
                "avg_score18": c.avg_score18,
                "suppressed": c.suppressed,
            }
        )
    return out
