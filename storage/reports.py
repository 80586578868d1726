"""Periodic reports (quarter, year): sums of released figures, never of live rows.

A report covers a quarter or a year of one unit (the province, or one agency) and reads only the
releases lying wholly inside that period (``storage.releases``): each figure is the sum of the
unit's released figures of those periods, with its count and Wilson interval recomputed from the
sums. A unit withheld in any one of them is withheld in the report too (its sum would need the
withheld month), and says in which release. So every number a report shows is a sum of numbers
the releases published: whatever can be learnt from a report, and from comparing two reports,
could already be learnt from the releases, which the disclosure rule cut (docs/threat-model.md).

The data source is one function, ``source``: it picks the releases, the unit's document in
each and, for a unit with sub-units, the documents of every unit its subtree held in that
release (as the release froze it). A unit's report then ranks its sub-units within their kind
(each one's subtree total, read from the unit's own released ``units`` list, the same figure as
the sub-unit's own total) and lists the officials and procedures of the whole subtree, each under
its unit. The arithmetic below works on whatever documents it gets; ``accumulate`` is the one
summing of released cells, which the public results (``storage.public_results``) use too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from storage import releases
from storage.db import Sessions
from storage.stats import CLASS_ORDER, NOT_ENOUGH, Cell, Thresholds, rank
from storage.units import KINDS as UNIT_KINDS

ReportKind = Literal["quarter", "year"]
KINDS: tuple[ReportKind, ...] = ("quarter", "year")
#: The additive counts of a released unit cell.
SUMMED = ("responses", "rated", "satisfied", "scored", "score_sum", "score_max_sum")
#: Coverage counts per channel.
COVERAGE_COUNTS = ("reported", "sent", "delivered", "answered", "capped")


class ReportError(ValueError):
    """A report that cannot be made (unknown period, nothing released in it)."""


# ------------------------------------------------------------------------------ periods
@dataclass(frozen=True, slots=True)
class ReportPeriod:
    kind: ReportKind
    label: str
    starts_on: dt.date
    ends_on: dt.date

    @property
    def days(self) -> int:
        return (self.ends_on - self.starts_on).days + 1

    def quarters(self) -> list[ReportPeriod]:
        """A year's four quarters (a quarter is its own only quarter)."""
        if self.kind == "quarter":
            return [self]
        return [period_of("quarter", dt.date(self.starts_on.year, m, 1)) for m in (1, 4, 7, 10)]


def period_of(kind: str, day: dt.date) -> ReportPeriod:
    """The quarter or year that contains ``day``."""
    if kind == "year":
        return ReportPeriod(
            "year", str(day.year), dt.date(day.year, 1, 1), dt.date(day.year, 12, 31)
        )
    if kind == "quarter":
        q = releases.period_of("quarter", day)
        return ReportPeriod("quarter", q.label, q.starts_on, q.ends_on)
    raise ReportError(f"unknown report period {kind!r}; use quarter or year")


def parse_period(label: str) -> ReportPeriod:
    """ "2026-Q4" or "2026" (what the dashboard and the CLI are given), checked."""
    text = label.strip()
    try:
        if len(text) == 4 and text.isdigit():
            return period_of("year", dt.date(int(text), 1, 1))
        year, _, quarter = text.partition("-Q")
        if len(year) == 4 and year.isdigit() and quarter in ("1", "2", "3", "4"):
            return period_of("quarter", dt.date(int(year), 3 * int(quarter) - 2, 1))
    except ValueError:
        pass
    raise ReportError(
        f"unknown period {label[:20]!r}; write a quarter as 2026-Q4 or a year as 2026"
    )


# ------------------------------------------------------------------------------ the source
@dataclass(frozen=True, slots=True)
class Source:
    """Everything a report reads: the releases inside its period and the unit's document in each
    (a release in which the unit had nothing has no document)."""

    scope: str
    period: ReportPeriod
    releases: list[releases.ReleaseInfo]
    documents: dict[str, dict[str, Any]]
    #: No release can still come that falls inside the period.
    complete: bool
    #: Per release id, the documents of the other units of the scope's subtree in that release
    #: (its ``subtree`` as frozen then): their officials and procedures are the report's too.
    parts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def through(self) -> dt.date | None:
        return self.releases[-1].ends_on if self.releases else None


def inside(
    infos: Iterable[releases.ReleaseInfo], period: ReportPeriod
) -> list[releases.ReleaseInfo]:
    """The releases lying wholly inside ``period`` (a week across its edge belongs to neither)."""
    return [r for r in infos if r.starts_on >= period.starts_on and r.ends_on <= period.ends_on]


def periods_with_releases(infos: Iterable[releases.ReleaseInfo]) -> list[ReportPeriod]:
    """Every quarter and year some release lies inside, newest first (what can be reported)."""
    found: dict[str, ReportPeriod] = {}
    for info in infos:
        for kind in KINDS:
            period = period_of(kind, info.starts_on)
            if info.ends_on <= period.ends_on:
                found[period.label] = period
    return sorted(found.values(), key=lambda p: (p.ends_on, p.kind == "quarter"), reverse=True)


async def source(sessions: Sessions, scope: str, period: ReportPeriod) -> Source:
    """The releases of ``period`` and the document of ``scope`` (``releases.PROVINCE`` or an
    agency id) in each: the one place a report's figures come from."""
    every = await releases.list_releases(sessions)
    chosen = inside(every, period)
    docs = await releases.documents(sessions, [r.id for r in chosen], [scope])
    own = {rid: doc for (rid, _), doc in docs.items()}
    complete = bool(every) and every[-1].ends_on >= period.ends_on
    wanted = {u for doc in own.values() for u in doc.get("subtree", []) if u != scope}
    parts: dict[str, list[dict[str, Any]]] = {}
    if scope != releases.PROVINCE and wanted:
        below = await releases.documents(sessions, list(own), sorted(wanted))
        for rid, doc in own.items():
            # Only the units that release put under the scope (parents first): a later move
            # changes nothing.
            held = [below[(rid, u)] for u in doc.get("subtree", []) if (rid, u) in below]
            if held:
                parts[rid] = held
    return Source(scope, period, chosen, own, complete, parts)


# ------------------------------------------------------------------------------ sums
Ident = tuple[str, str]


@dataclass(slots=True)
class Summed:
    """One unit's released cells over several releases: the sums of those that published it,
    and which releases did and which withheld it (the caller decides what a withheld one
    means: a report withholds the whole sum, the public page shows it as partial)."""

    key: str
    label: str
    parent: str
    #: A unit's kind as released ('' for officials, procedures and releases before kinds).
    kind: str
    sums: dict[str, float]
    published_in: list[str] = field(default_factory=list)
    withheld_in: list[str] = field(default_factory=list)

    def into(self, cell: Cell) -> Cell:
        """The sums written into ``cell`` (integer counts; score sums as they were added)."""
        cell.responses = int(self.sums["responses"])
        cell.rated = int(self.sums["rated"])
        cell.satisfied = int(self.sums["satisfied"])
        cell.scored = int(self.sums["scored"])
        cell.score_sum = self.sums["score_sum"]
        cell.maximum_sum = self.sums["score_max_sum"]
        return cell


def default_ident(doc: dict[str, Any]) -> Ident:
    """A released cell is one unit's by (parent, key): an official in two units is two rows."""
    return (doc["parent"], doc["key"])


def accumulate(entries: Iterable[tuple[str, Ident, dict[str, Any]]]) -> dict[Ident, Summed]:
    """(release label, identity, released cell) → each identity's sums over the releases that
    published it, in order of first appearance: the one summing of released figures (the
    reports' and the public page's)."""
    found: dict[Ident, Summed] = {}
    for label, ident, doc in entries:
        summed = found.get(ident)
        if summed is None:
            summed = found[ident] = Summed(
                doc["key"],
                doc["label"],
                doc["parent"],
                str(doc.get("kind") or ""),
                dict.fromkeys(SUMMED, 0.0),
            )
        if doc["suppressed"]:
            summed.withheld_in.append(label)
            continue
        for name in SUMMED:
            summed.sums[name] += float(doc.get(name) or 0)
        summed.published_in.append(label)
    return found


@dataclass(slots=True)
class Row:
    """One unit over the report's period: the sum of its released cells, or withheld."""

    cell: Cell
    #: The releases in which this unit was withheld (then the report withholds it too).
    withheld_in: list[str] = field(default_factory=list)
    #: A sub-unit's kind (``storage.units.KINDS``): sub-units are ranked within their kind.
    kind: str = ""
    #: The name of the unit an official or a procedure belongs to, in a report of a subtree.
    unit: str = ""

    @property
    def status(self) -> str:
        if not self.withheld_in:
            return ""
        return f"{NOT_ENOUGH} ({', '.join(self.withheld_in)})"


def sum_cells(
    series: Sequence[tuple[str, Iterable[dict[str, Any]]]],
    thresholds: Thresholds,
    ident: Callable[[dict[str, Any]], Ident] = default_ident,
) -> list[Row]:
    """Per unit (``ident``: parent and key): its released cells over ``series`` ((release
    label, cells)), summed; withheld when it was withheld in any of them. Order of first
    appearance."""
    summed = accumulate((label, ident(doc), doc) for label, cells in series for doc in cells)
    rows = []
    for unit in summed.values():
        cell = Cell(unit.key, unit.label, unit.parent)
        if unit.withheld_in:
            cell.suppressed = "release"
        else:
            unit.into(cell)
            cell.score_sum = round(cell.score_sum, 1)
            cell.maximum_sum = round(cell.maximum_sum, 1)
        cell.bands = thresholds.bands_766
        rows.append(Row(cell, unit.withheld_in, unit.kind))
    return rows


def ranked(rows: list[Row], k: int) -> list[Row]:
    """Best Wilson lower bound first among shown units with k ratings (``stats.rank``)."""
    by_cell = {id(r.cell): r for r in rows}
    return [by_cell[id(c)] for c in rank([r.cell for r in rows], k)]


def _kind_order(kind: str) -> int:
    return UNIT_KINDS.index(kind) if kind in UNIT_KINDS else len(UNIT_KINDS)


def ranked_by_kind(rows: list[Row], k: int) -> list[Row]:
    """Units ranked within their kind (a district against districts, a ward against wards, as
    on the public page), kinds top down: a district holds its wards' ratings, so ranking it
    against them would compare a sum with its own parts."""
    return [
        row
        for kind in sorted({r.kind for r in rows}, key=_kind_order)
        for row in ranked([r for r in rows if r.kind == kind], k)
    ]


def _summed_counts(
    parts: Sequence[tuple[str, dict[str, int] | None]], keys: Iterable[str]
) -> tuple[dict[str, int] | None, list[str]]:
    """Distributions (levels, classes) summed; None with the releases that withheld them."""
    missing = [label for label, counts in parts if counts is None]
    if missing:
        return None, missing
    names = list(keys)
    total = dict.fromkeys(names, 0)
    for _, counts in parts:
        for name in names:
            total[name] += int((counts or {}).get(name, 0))
    return total, []


@dataclass(slots=True)
class CoverageRow:
    channel: str
    counts: dict[str, int] | None
    withheld_in: list[str]

    @property
    def response_rate(self) -> float | None:
        if not self.counts or not self.counts["reported"]:
            return None
        return 100.0 * self.counts["answered"] / self.counts["reported"]


def sum_coverage(series: Sequence[tuple[str, Iterable[dict[str, Any]]]]) -> list[CoverageRow]:
    """Per channel ("*" is all of them; ``releases.SUBTREE`` a unit's whole subtree, first), the
    released coverage rows summed."""
    acc: dict[str, dict[str, int]] = {}
    withheld: dict[str, list[str]] = {}
    for label, rows in series:
        for row in rows:
            channel = row["channel"]
            counts = acc.setdefault(channel, dict.fromkeys(COVERAGE_COUNTS, 0))
            withheld.setdefault(channel, [])
            if row["suppressed"]:
                withheld[channel].append(label)
                continue
            for name in COVERAGE_COUNTS:
                counts[name] += int(row.get(name) or 0)
    order = sorted(acc, key=lambda ch: (ch != releases.SUBTREE, ch != "*", ch))
    return [CoverageRow(ch, None if withheld[ch] else acc[ch], withheld[ch]) for ch in order]


@dataclass(slots=True)
class CriterionRow:
    criterion: str
    scored: int | None
    mean_points: float | None
    zero_share: float | None
    zero_share_dissatisfied: float | None
    dissatisfied: int | None
    withheld_in: list[str]


def sum_criteria(series: Sequence[tuple[str, Iterable[dict[str, Any]]]]) -> list[CriterionRow]:
    """Per criterion: scored summed, the released means and shares weighted by their counts; the
    share among the dissatisfied only when every release published it."""
    acc: dict[str, list[float]] = {}
    withheld: dict[str, list[str]] = {}
    unsplit: dict[str, bool] = {}
    for label, rows in series:
        for row in rows:
            c = str(row["criterion"])
            sums = acc.setdefault(c, [0.0, 0.0, 0.0, 0.0, 0.0])
            withheld.setdefault(c, [])
            if row["suppressed"]:
                withheld[c].append(label)
                continue
            n = float(row["scored"] or 0)
            sums[0] += n
            sums[1] += float(row["mean_points"] or 0) * n
            sums[2] += float(row["zero_share"] or 0) * n
            if row["dissatisfied"] is None:
                unsplit[c] = True
            else:
                d = float(row["dissatisfied"])
                sums[3] += d
                sums[4] += float(row["zero_share_dissatisfied"] or 0) * d
    result = []
    for c in sorted(acc, key=lambda x: (len(x), x)):
        n, points, zeros, dis, zeros_dis = acc[c]
        if withheld[c] or not n:
            result.append(CriterionRow(c, None, None, None, None, None, withheld[c]))
            continue
        split = not unsplit.get(c) and dis > 0
        result.append(
            CriterionRow(
                c,
                int(n),
                round(points / n, 2),
                zeros / n,
                zeros_dis / dis if split else None,
                int(dis) if split else None,
                [],
            )
        )
    return result


# ------------------------------------------------------------------------------ the report
@dataclass(slots=True)
class Report:
    """What a report file shows, computed from a ``Source`` alone."""

    scope: str
    #: The unit's code and name ("" for the province).
    code: str
    name: str
    period: ReportPeriod
    releases: list[str]
    complete: bool
    days_covered: int
    rule: dict[str, Any]
    total: Row
    #: Agencies (the province's report, ranked within their kind) or officials (an agency's:
    #: those of its whole subtree, ranked together, each with its unit), ranked.
    ranking: list[Row]
    ranking_level: str
    procedures: list[Row]
    levels: dict[int, int] | None
    levels_withheld_in: list[str]
    classes: dict[str, int] | None
    classes_withheld_in: list[str]
    #: Each release's total (a quarter) or each quarter's sum (a year).
    trend: list[Row]
    coverage: list[CoverageRow]
    criteria: list[CriterionRow]
    k_group: int
    k_official: int
    #: An agency's sub-units (its whole subtree below it), each its subtree's total, ranked
    #: within their kind; empty for a unit without sub-units and for the province.
    units: list[Row] = field(default_factory=list)

    @property
    def bands(self) -> dict[str, int]:
        """How many ranked units fall in each band of Decision 766, and how many lack ratings.

        Units with units under them in the ranking are not counted: a district and its wards
        would count the same ratings twice (the public page counts the same way)."""
        bands = self.total.cell.bands
        names = [name for name, _ in bands.thresholds] + [bands.lowest] if bands else []
        counts = dict.fromkeys([*names, NOT_ENOUGH], 0)
        parents = (
            {row.cell.parent for row in self.ranking} if self.ranking_level == "agency" else set()
        )
        for row in self.ranking:
            if row.cell.key not in parents:
                counts[row.cell.band] = counts.get(row.cell.band, 0) + 1
        return counts


def build(src: Source, thresholds: Thresholds) -> Report:
    """The report of ``src``: pure arithmetic over the released documents."""
    if not src.releases:
        raise ReportError(f"nothing has been released for {src.period.label} yet")
    labelled = [(r.label, src.documents[r.id]) for r in src.releases if r.id in src.documents]
    province = src.scope == releases.PROVINCE
    totals = sum_cells([(label, [d["total"]]) for label, d in labelled], thresholds)
    total = totals[0] if totals else Row(_empty_cell(thresholds))
    units: list[Row] = []
    if province:
        total.cell.key, total.cell.label = "", ""
        ranking_level = "agency"
        ranking = ranked_by_kind(
            sum_cells([(lb, d.get("agencies", [])) for lb, d in labelled], thresholds),
            thresholds.k_group,
        )
        procedures: list[Row] = []
    else:
        # The sub-units, from the unit's own documents: each one's subtree total as released.
        units = ranked_by_kind(
            sum_cells(
                [
                    (lb, [u for u in d.get("units", []) if u["key"] != d["total"]["key"]])
                    for lb, d in labelled
                ],
                thresholds,
                # One row per unit even if it moved between parents inside the subtree.
                lambda doc: ("", doc["key"]),
            ),
            thresholds.k_group,
        )
        whole = [
            (r.label, [src.documents[r.id], *src.parts.get(r.id, [])])
            for r in src.releases
            if r.id in src.documents
        ]
        ranking_level = "official"
        ranking = _of_units(whole, "officials", thresholds, thresholds.k_official, bool(units))
        procedures = _of_units(whole, "procedures", thresholds, thresholds.k_group, bool(units))
    levels, levels_withheld = _summed_counts(
        [(lb, d.get("levels")) for lb, d in labelled], [str(v) for v in releases.LEVELS]
    )
    classes, classes_withheld = _summed_counts(
        [(lb, d.get("classes")) for lb, d in labelled], CLASS_ORDER
    )
    trend = _trend(src, thresholds)
    rules = [r.rule for r in src.releases]
    return Report(
        scope=src.scope,
        code=total.cell.key,
        name=total.cell.label,
        period=src.period,
        releases=[r.label for r in src.releases],
        complete=src.complete,
        days_covered=sum((r.ends_on - r.starts_on).days + 1 for r in src.releases),
        rule=rules[-1] if all(r == rules[-1] for r in rules) else {"differs": rules},
        total=total,
        ranking=ranking,
        ranking_level=ranking_level,
        procedures=procedures,
        units=units,
        levels=None if levels is None else {int(k): v for k, v in levels.items()},
        levels_withheld_in=levels_withheld,
        classes=classes,
        classes_withheld_in=classes_withheld,
        trend=trend,
        coverage=sum_coverage([(lb, _coverage_of(d, bool(units))) for lb, d in labelled]),
        criteria=sum_criteria([(lb, _criteria_of(d)) for lb, d in labelled]),
        k_group=thresholds.k_group,
        k_official=thresholds.k_official,
    )


def _criteria_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """A unit's criteria rows over its whole subtree, like its total: the subtree's row of a
    criterion when one was released (its sub-units scored it), else its own row, which then is
    the subtree's."""
    rows = {str(c["criterion"]): c for c in doc.get("criteria", [])}
    rows.update({str(c["criterion"]): c for c in doc.get("criteria_subtree", [])})
    return list(rows.values())


def _coverage_of(doc: dict[str, Any], subtree: bool) -> list[dict[str, Any]]:
    """A unit's coverage rows; with sub-units, first its whole subtree's row (all channels;
    its own all-channel row in a release where no sub-unit had any), then its own rows."""
    own = list(doc.get("coverage", []))
    if not subtree:
        return own
    whole = doc.get("coverage_subtree") or [
        {**r, "channel": releases.SUBTREE} for r in own if r["channel"] == "*"
    ]
    return [*whole, *own]


def _of_units(
    whole: Sequence[tuple[str, Sequence[dict[str, Any]]]],
    level: str,
    thresholds: Thresholds,
    k: int,
    named: bool,
) -> list[Row]:
    """The officials (or procedures) of every unit in each release's subtree, summed per unit
    (an official who moved is a row under each unit), ranked together; ``named``: each row
    says its unit's name, as the latest release inside the period called it."""
    names = {d["total"]["key"]: d["total"]["label"] for _, docs in whole for d in docs}
    rows = ranked(
        sum_cells(
            [(lb, [c for d in docs for c in d.get(level, [])]) for lb, docs in whole], thresholds
        ),
        k,
    )
    if named:
        for row in rows:
            row.unit = names.get(row.cell.parent, row.cell.parent)
    return rows


def _trend(src: Source, thresholds: Thresholds) -> list[Row]:
    """A quarter's releases one by one; a year's quarters, each the sum of its releases."""
    rows = []
    for part in src.period.quarters() if src.period.kind == "year" else []:
        inner = [r for r in inside(src.releases, part) if r.id in src.documents]
        summed = sum_cells([(r.label, [src.documents[r.id]["total"]]) for r in inner], thresholds)
        row = summed[0] if summed else Row(_empty_cell(thresholds))
        row.cell.key = row.cell.label = part.label
        rows.append(row)
    if src.period.kind == "quarter":
        for info in src.releases:
            doc = src.documents.get(info.id)
            summed = sum_cells([(info.label, [doc["total"]])], thresholds) if doc else []
            row = summed[0] if summed else Row(_empty_cell(thresholds))
            row.cell.key = row.cell.label = info.label
            rows.append(row)
    return rows


def _empty_cell(thresholds: Thresholds) -> Cell:
    cell = Cell("", "", "")
    cell.bands = thresholds.bands_766
    return cell
