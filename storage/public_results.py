"""The public results: quarters and years built only from what releases already published.

The public page (``bot/public``) and its open data read one function, ``public_results``. A
quarter's or a year's figure is the sum of the figures its releases published (each a month by
default), never a count of live rows: a sum of published numbers tells nobody anything the
releases did not, and late answers or erasures after a release change nothing here either.

A period is offered only when releases wholly inside it cover every one of its days (a week
release straddling two quarters belongs to neither, so a province releasing weekly shows no
quarter). A unit withheld in one of the period's releases is summed over the releases that
published it and says so (``withheld_in``): its figure then covers part of the period and it is
not ranked, since a ranking of part-periods against whole ones would mislead. Per-official
figures are read only when the caller asks (``SURVEYBOT_PUBLIC_OFFICIALS``).

Quarters, years and the summing of released cells are the periodic reports' own
(``storage.reports``): a page and a report of the same period add the same numbers the same way.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from storage import releases
from storage.db import Sessions
from storage.releases import PROVINCE, ReleaseInfo
from storage.reports import KINDS as KINDS_OF_PERIOD
from storage.reports import accumulate, period_of
from storage.stats import NO_UNIT, Cell, Thresholds, rank
from storage.units import KINDS

PublicKind = Literal["quarter", "year"]
STATUSES = ("published", "partial", "withheld")


@dataclass(frozen=True, slots=True)
class PublicPeriod:
    """A closed quarter or year and the releases (wholly inside it) that cover it."""

    kind: PublicKind
    label: str
    starts_on: dt.date
    ends_on: dt.date
    releases: tuple[ReleaseInfo, ...]


@dataclass(slots=True)
class PublicFigure:
    """One unit's figure over a period: sums of its published figures, and where it was not.

    ``cell`` carries the sums (rate, Wilson interval, band and rank come from ``stats.Cell``);
    ``published_in`` and ``withheld_in`` name the releases, so every figure says what is
    behind it.
    """

    cell: Cell
    published_in: list[str] = field(default_factory=list)
    withheld_in: list[str] = field(default_factory=list)
    #: The unit's kind (``storage.units.KINDS``): units are ranked among their own kind.
    kind: str = "commune"

    @property
    def status(self) -> str:
        if not self.published_in:
            return "withheld"
        return "partial" if self.withheld_in else "published"


@dataclass(slots=True)
class PublicResults:
    """What the public may see of one period (None period: nothing is closed yet)."""

    period: PublicPeriod | None
    periods: list[PublicPeriod]
    total: PublicFigure | None
    #: Every unit's figure (its subtree's total), ranked within its kind, kinds top down.
    units: list[PublicFigure]
    officials: list[PublicFigure]
    #: How many ranked units with no units under them fall in each band (Decision 766), best
    #: band first: a district and its wards would otherwise count the same ratings twice.
    band_counts: dict[str, int]
    #: The k values the releases behind the period were cut with (the largest, if they differ).
    k_group: int
    k_official: int


def closed_periods(history: Sequence[ReleaseInfo]) -> list[PublicPeriod]:
    """Every quarter and year wholly covered by releases, newest first (quarters before years
    of the same end)."""
    candidates: dict[tuple[PublicKind, str], tuple[dt.date, dt.date]] = {}
    for info in history:
        for kind in KINDS_OF_PERIOD:
            period = period_of(kind, info.starts_on)
            candidates[(kind, period.label)] = (period.starts_on, period.ends_on)
    found = []
    for (kind, label), (start, end) in candidates.items():
        inside = sorted(
            (r for r in history if r.starts_on >= start and r.ends_on <= end),
            key=lambda r: r.starts_on,
        )
        if _covers(inside, start, end):
            found.append(PublicPeriod(kind, label, start, end, tuple(inside)))
    found.sort(key=lambda p: (p.ends_on, p.kind == "quarter"), reverse=True)
    return found


def _covers(inside: Sequence[ReleaseInfo], start: dt.date, end: dt.date) -> bool:
    day = start
    for info in inside:
        if info.starts_on != day:
            return False
        day = info.ends_on + dt.timedelta(days=1)
    return bool(inside) and day == end + dt.timedelta(days=1)


def _summed(
    entries: Iterable[tuple[str, tuple[str, str], dict[str, Any]]], thresholds: Thresholds
) -> dict[tuple[str, str], PublicFigure]:
    """(release label, (parent, key), document) → each unit's figure over them all: the sums of
    the releases that published it (``reports.accumulate``, the reports' summing too)."""
    figures: dict[tuple[str, str], PublicFigure] = {}
    for ident, summed in accumulate(entries).items():
        cell = Cell(summed.key, summed.label, summed.parent, bands=thresholds.bands_766)
        figures[ident] = PublicFigure(
            summed.into(cell),
            summed.published_in,
            summed.withheld_in,
            kind=summed.kind or "commune",
        )
        # Withheld in every release it appears in: nothing of it is known, so nothing is shown.
        cell.suppressed = None if summed.published_in else "withheld"
    return figures


def _ranked(figures: Iterable[PublicFigure], k: int) -> list[PublicFigure]:
    """Whole-period figures ranked by their Wilson lower bound; partial and withheld after."""
    figures = list(figures)
    whole = {id(f.cell): f for f in figures if f.status == "published"}
    ranked = [whole[id(c)] for c in rank([f.cell for f in whole.values()], k)]
    rest = sorted(
        (f for f in figures if f.status != "published"),
        key=lambda f: (STATUSES.index(f.status), f.cell.parent, f.cell.key),
    )
    return ranked + rest


def _kind_order(kind: str) -> int:
    return KINDS.index(kind) if kind in KINDS else len(KINDS)


async def public_results(
    sessions: Sessions,
    thresholds: Thresholds,
    label: str | None = None,
    *,
    officials: bool = False,
) -> PublicResults:
    """The public figures of one closed quarter or year (``label``, else the latest quarter).

    Raises ``LookupError`` for a label that is no closed period (the page answers 404).
    """
    periods = closed_periods(await releases.list_releases(sessions))
    if label is None:
        period = next((p for p in periods if p.kind == "quarter"), None)
    else:
        period = next((p for p in periods if p.label == label), None)
        if period is None:
            raise LookupError(label)
    empty = PublicResults(
        period, periods, None, [], [], {}, thresholds.k_group, thresholds.k_official
    )
    if period is None:
        return empty
    ids = {r.id: r.label for r in period.releases}
    docs = await releases.documents(sessions, list(ids), None if officials else [PROVINCE])
    ordered = sorted(docs.items(), key=lambda kv: (ids[kv[0][0]], kv[0][1]))
    province = [(ids[rid], doc) for (rid, scope), doc in ordered if scope == PROVINCE]
    totals = _summed(((lab, ("", "all"), doc["total"]) for lab, doc in province), thresholds)
    total = totals.get(("", "all"))
    units = _summed(
        ((lab, ("", u["key"]), u) for lab, doc in province for u in doc.get("agencies", [])),
        thresholds,
    )
    people: dict[tuple[str, str], PublicFigure] = {}
    if officials:
        people = _summed(
            (
                (ids[rid], (o["parent"], o["key"]), o)
                for (rid, scope), doc in ordered
                if scope != PROVINCE
                for o in doc.get("officials", [])
                if o["key"] != NO_UNIT  # ratings naming no official are not a person
            ),
            thresholds,
        )
    rules = [r.rule for r in period.releases]
    k_group = max([int(r.get("k_group", thresholds.k_group)) for r in rules])
    k_official = max([int(r.get("k_official", thresholds.k_official)) for r in rules])
    ranked = [
        figure
        for kind in sorted({f.kind for f in units.values()}, key=_kind_order)
        for figure in _ranked((f for f in units.values() if f.kind == kind), k_group)
    ]
    parents = {f.cell.parent for f in ranked}
    band_counts = {name: 0 for name, _ in thresholds.bands_766.thresholds}
    band_counts[thresholds.bands_766.lowest] = 0
    for figure in ranked:
        if figure.cell.rank is not None and figure.cell.key not in parents:
            band_counts[figure.cell.band] += 1
    return PublicResults(
        period=period,
        periods=periods,
        total=total,
        units=ranked,
        officials=_ranked(people.values(), k_official),
        band_counts=band_counts,
        k_group=k_group,
        k_official=k_official,
    )
