"""Releases: the only source of every figure a person sees (pages, aggregate exports, CLI).

A release holds the figures of one closed period (a month by default), computed once, after the
period has ended and every survey answered in it has closed (``release_delay_hours``), cut by
the disclosure rule (``storage.disclosure``) and stored frozen. It is never recomputed: a late
answer, an erasure or a changed setting leaves it as it was, and periods never overlap (a new
period starts after the last released one ends). Live counts are never shown, so two looks at a
page an hour apart differ by nothing, and two looks around a release differ by a whole period
whose every cell passed the rule.

Each release has one document per scope: ``""`` for the province (its total and its agencies,
ranked) and one per agency (its total, officials, procedures, satisfaction levels, Circular
01/2018 classes, criteria and coverage). An agency's total is the same figure in both, decided
once, so no page can show it where another withholds it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import case, cast, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import Text

from bot.flows.scoring import DISSATISFIED_MAX_LEVEL
from storage import disclosure, fields, units
from storage.db import Sessions
from storage.disclosure import Figure, Line, Rule
from storage.models import (
    Official,
    Procedure,
    Release,
    ReleaseFigures,
    Response,
    SurveyLedger,
    utcnow,
)
from storage.release_fields import (
    field_criteria,
    field_lines,
    province_crossed,
    province_field_lines,
)
from storage.stats import (
    CLASS_ORDER,
    NO_UNIT,
    Cell,
    Coverage,
    CriterionStat,
    Thresholds,
    criteria_points,
    period_label,
    rank,
)

PeriodKind = Literal["week", "month", "quarter"]
PROVINCE = ""
LEVELS = (5, 4, 3, 2, 1)
UNIT_COUNTS = ("responses", "rated", "scored")


# ------------------------------------------------------------------------------ periods
@dataclass(frozen=True, slots=True)
class Period:
    kind: str
    label: str
    starts_on: dt.date
    ends_on: dt.date

    def next(self) -> Period:
        return period_of(self.kind, self.ends_on + dt.timedelta(days=1))

    def covers(self, day: Any) -> list[ColumnElement[bool]]:
        """The conditions that a date column falls in this period."""
        return [day >= self.starts_on, day <= self.ends_on]


def period_of(kind: str, day: dt.date) -> Period:
    """The period of ``kind`` that contains ``day``."""
    if kind == "week":
        start = day - dt.timedelta(days=day.weekday())
        end = start + dt.timedelta(days=6)
    elif kind == "quarter":
        start = dt.date(day.year, (day.month - 1) // 3 * 3 + 1, 1)
        end = _month_end(dt.date(day.year, start.month + 2, 1))
    elif kind == "month":
        start = day.replace(day=1)
        end = _month_end(start)
    else:
        raise ValueError(f"unknown release period {kind!r}; use week, month or quarter")
    return Period(kind, period_label(start, kind), start, end)  # type: ignore[arg-type]


def _month_end(first: dt.date) -> dt.date:
    following = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return following - dt.timedelta(days=1)


def release_time(period: Period, delay_hours: int) -> dt.datetime:
    """When ``period`` is released: its last day is over (UTC+7, Vietnam) plus the delay."""
    end = dt.datetime.combine(period.ends_on + dt.timedelta(days=1), dt.time(), VIETNAM)
    return end.astimezone(dt.UTC) + dt.timedelta(hours=delay_hours)


VIETNAM = dt.timezone(dt.timedelta(hours=7))


def due_periods(
    kind: str,
    first_day: dt.date | None,
    last_end: dt.date | None,
    delay_hours: int,
    now: dt.datetime,
) -> list[Period]:
    """Closed periods not yet released, oldest first, none overlapping a released one.

    After a change of period kind the partial period between the last release and the next
    whole period of the new kind is never released: it would overlap the last release.
    """
    if last_end is not None:
        start = last_end + dt.timedelta(days=1)
        period = period_of(kind, start)
        if period.starts_on < start:
            period = period.next()
    elif first_day is not None:
        period = period_of(kind, first_day)
    else:
        return []
    due = []
    while release_time(period, delay_hours) <= now:
        due.append(period)
        period = period.next()
    return due


# ------------------------------------------------------------------------------ building
@dataclass(slots=True)
class _Group:
    """Counts of one group of responses and the officials its raters rated."""

    responses: int = 0
    rated: int = 0
    satisfied: int = 0
    scored: int = 0
    score_sum: float = 0.0
    score_max_sum: float = 0.0
    officials: set[str | None] = field(default_factory=set)
    levels: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    classes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: Ratings per survey: the scales differ (mot-cua never gives 1 or 3), so a level can be
    #: one survey's raters alone.
    rated_by_survey: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, row: Any) -> None:
        n = int(row.n)
        self.responses += n
        self.scored += int(row.scored)
        self.score_sum += float(row.score_sum or 0.0)
        self.score_max_sum += float(row.score_max_sum or 0.0)
        self.officials.add(row.official_id)
        level = int(row.satisfaction or 0)
        if level > 0:
            self.rated += n
            self.levels[level] += n
            self.rated_by_survey[str(row.survey_id)] += n
            if level > DISSATISFIED_MAX_LEVEL:
                self.satisfied += n
        if row.score_band:
            self.classes[str(row.score_band)] += n

    def merge(self, other: _Group) -> None:
        """Add another group's counts (a field is the sum of its procedures' groups)."""
        self.responses += other.responses
        self.rated += other.rated
        self.satisfied += other.satisfied
        self.scored += other.scored
        self.score_sum += other.score_sum
        self.score_max_sum += other.score_max_sum
        self.officials |= other.officials
        for mine, theirs in (
            (self.levels, other.levels),
            (self.classes, other.classes),
            (self.rated_by_survey, other.rated_by_survey),
        ):
            for key, n in theirs.items():
                mine[key] += n  # type: ignore[index]

    def counts(self) -> dict[str, int]:
        return {"responses": self.responses, "rated": self.rated, "scored": self.scored}


@dataclass(slots=True)
class _Unit:
    key: str
    label: str
    parent: str
    group: _Group
    figure: Figure
    #: A procedure's field as the release cut it ('' for none), kept with its figures.
    field: str | None = None

    def document(self) -> dict[str, Any]:
        shown = self.figure.shown
        g = self.group
        extra = {"field": self.field} if self.field is not None else {}
        return {
            **extra,
            "key": self.key,
            "label": self.label,
            "parent": self.parent,
            "responses": g.responses if shown else None,
            "rated": g.rated if shown else None,
            "satisfied": g.satisfied if shown else None,
            "scored": g.scored if shown else None,
            "score_sum": round(g.score_sum, 1) if shown else None,
            "score_max_sum": round(g.score_max_sum, 1) if shown else None,
            "suppressed": self.figure.suppressed,
        }


#: What a response group is told apart by: every breakdown a release shows is a sum of them.
GROUP_COLUMNS = (
    Response.agency_id,
    Response.official_id,
    Response.procedure_id,
    Response.survey_id,
    Response.satisfaction,
    Response.score_band,
)


async def _response_groups(session: AsyncSession, period: Period) -> list[Any]:
    stmt = (
        select(
            *GROUP_COLUMNS,
            func.count().label("n"),
            func.count(Response.score_total).label("scored"),
            func.sum(Response.score_total).label("score_sum"),
            # A maximum counts only beside a total: the mean is "mean total / mean maximum".
            func.sum(case((Response.score_total.is_not(None), Response.score_maximum))).label(
                "score_max_sum"
            ),
        )
        .where(*period.covers(Response.answered_on))
        .group_by(*GROUP_COLUMNS)
    )
    return list(await session.execute(stmt))


async def _criteria_groups(session: AsyncSession, period: Period) -> list[Any]:
    stmt = (
        select(
            Response.agency_id,
            Response.procedure_id,
            Response.satisfaction,
            cast(Response.criteria, Text).label("criteria"),
            func.count().label("n"),
        )
        .where(*period.covers(Response.answered_on), Response.criteria.is_not(None))
        .group_by(
            Response.agency_id,
            Response.procedure_id,
            Response.satisfaction,
            cast(Response.criteria, Text),
        )
    )
    return list(await session.execute(stmt))


async def _coverage_groups(session: AsyncSession, period: Period) -> list[Any]:
    stmt = (
        select(
            SurveyLedger.agency_id,
            SurveyLedger.channel,
            func.count().label("reported"),
            func.count(SurveyLedger.channel).label("sent"),
            func.sum(case((SurveyLedger.delivered.is_(True), 1), else_=0)).label("delivered"),
            func.sum(case((SurveyLedger.completed.is_(True), 1), else_=0)).label("answered"),
            func.sum(case((SurveyLedger.status == "capped", 1), else_=0)).label("capped"),
        )
        .where(*period.covers(SurveyLedger.reported_on))
        .group_by(SurveyLedger.agency_id, SurveyLedger.channel)
    )
    return list(await session.execute(stmt))


async def _fields(session: AsyncSession) -> dict[str, str]:
    """Each procedure's field as the release cuts it (its field at release time, frozen)."""
    rows = await session.execute(select(Procedure.id, Procedure.field))
    return {pid: field_code or NO_UNIT for pid, field_code in rows}


async def _names(session: AsyncSession, model: Any) -> dict[str, tuple[str, str]]:
    return {
        r.id: (r.code, r.name)
        for r in await session.execute(select(model.id, model.code, model.name))
    }


async def build(session: AsyncSession, period: Period, rule: Rule) -> dict[str, dict[str, Any]]:
    """Every scope's document for ``period``, cut by the disclosure rule.

    Units form a tree (``storage.units``): a unit's ``total`` is its whole subtree (its own
    responses and every descendant's), so every figure is rolled up to every ancestor. Each
    unit with sub-units is a line of the difference rule: its total, its own responses
    (``own``) and each child's subtree total, so no level lets anyone subtract the shown
    children from a parent to recover a withheld one. The province's line is its roots.
    """
    tree = await units.read_tree(session)
    agencies = {u.id: (u.code, u.name) for u in tree.units.values()}
    officials = await _names(session, Official)
    procedures = await _names(session, Procedure)
    field_of = await _fields(session)
    province = _Group()
    per_agency: dict[str, _Group] = defaultdict(_Group)
    per_subtree: dict[str, _Group] = defaultdict(_Group)
    per_official: dict[tuple[str, str | None], _Group] = defaultdict(_Group)
    per_procedure: dict[tuple[str, str | None], _Group] = defaultdict(_Group)
    per_pair: dict[tuple[str, str | None, str | None], _Group] = defaultdict(_Group)
    #: Each unit and its ancestors, walked once per unit rather than once per grouped row.
    chains = {aid: (aid, *tree.ancestors(aid)) for aid in tree.units}
    per_field: dict[tuple[str, str | None], _Group] = defaultdict(_Group)
    per_official_field: dict[tuple[str, str | None, str | None], _Group] = defaultdict(_Group)
    province_fields: dict[str, _Group] = defaultdict(_Group)
    for row in await _response_groups(session, period):
        aid = row.agency_id
        for group in (
            province,
            per_agency[aid],
            *(per_subtree[u] for u in chains.get(aid, (aid,))),
            per_official[(aid, row.official_id)],
            per_procedure[(aid, row.procedure_id)],
            per_pair[(aid, row.official_id, row.procedure_id)],
        ):
            group.add(row)
    # Fields are unions of procedures: summed from the procedures' groups, not row by row.
    for (aid, pid), group in per_procedure.items():
        field_code = field_of.get(pid or "", NO_UNIT)
        per_field[(aid, field_code)].merge(group)
        province_fields[field_code].merge(group)
    for (aid, oid, pid), group in per_pair.items():
        per_official_field[(aid, oid, field_of.get(pid or "", NO_UNIT))].merge(group)

    def unit(key: str, label: str, parent: str, group: _Group, about_official: bool) -> _Unit:
        k = rule.k_for(group.officials, about_official=about_official)
        return _Unit(key, label, parent, group, Figure(group.counts(), k))

    def parent_code(aid: str) -> str:
        parent = tree.units[aid].parent_id
        return agencies[parent][0] if parent in agencies else ""

    top = unit("all", "", "", province, False)
    subtree_units = {
        aid: unit(agencies[aid][0], agencies[aid][1], parent_code(aid), group, False)
        for aid, group in per_subtree.items()
    }
    #: The sub-units of each unit that hold responses (their subtree totals are its parts).
    sub: dict[str, list[str]] = {
        aid: [c for c in tree.children.get(aid, []) if c in subtree_units] for aid in subtree_units
    }
    # A unit's own responses: the same figure as its total when it has no sub-unit with
    # responses, else a part of its own line next to its sub-units.
    agency_units = {
        aid: subtree_units[aid]
        if not sub[aid]
        else unit(agencies[aid][0], agencies[aid][1], agencies[aid][0], group, False)
        for aid, group in per_agency.items()
    }
    children: dict[str, dict[str, list[_Unit]]] = defaultdict(lambda: defaultdict(list))
    ids: dict[str, dict[str, list[str | None]]] = defaultdict(lambda: defaultdict(list))
    field_names = {code: (code, fields.label(code)) for code in fields.CODES}
    for level, table, source in (
        ("officials", officials, per_official),
        ("procedures", procedures, per_procedure),
        ("fields", field_names, per_field),
    ):
        for (aid, unit_id), group in source.items():
            code, name = table.get(unit_id or "", (NO_UNIT, ""))
            about = level == "officials" and unit_id is not None
            part = unit(code, name, agencies[aid][0], group, about)
            if level == "procedures":
                part.field = "" if unit_id is None else field_of.get(unit_id, NO_UNIT)
            children[aid][level].append(part)
            ids[aid][level].append(unit_id)
    roots = [aid for aid in tree.roots() if aid in subtree_units]
    lines = [Line([subtree_units[a].figure for a in roots], top.figure, UNIT_COUNTS, rule.k_group)]
    line_parts = _tree_lines(sub, agency_units, subtree_units)
    lines += [
        Line([u.figure for u in parts], subtree_units[aid].figure, UNIT_COUNTS, rule.k_group)
        for aid, parts in line_parts.items()
    ]
    for aid, levels in children.items():
        for members in levels.values():
            # A remainder of several officials mixes their raters: the group's k holds it (a
            # lone official's remainder is held to the official's k by the rule itself).
            member_figures = [u.figure for u in members]
            lines.append(Line(member_figures, agency_units[aid].figure, UNIT_COUNTS, rule.k_group))
    lines += field_lines(children, ids, field_of, rule)
    field_units = {
        code: unit(code, fields.label(code), "", group, False)
        for code, group in province_fields.items()
    }
    lines += province_field_lines(field_units, top, children, ids, rule)
    figures = [top.figure, *(u.figure for u in subtree_units.values())]
    figures += [u.figure for aid, u in agency_units.items() if u is not subtree_units[aid]]
    figures += [u.figure for levels in children.values() for us in levels.values() for u in us]
    figures += [u.figure for u in field_units.values()]
    pairs: dict[str, dict[tuple[str | None, str | None], _Group]] = defaultdict(dict)
    for (aid, oid, pid), group in per_pair.items():
        pairs[aid][(oid, pid)] = group
    field_pairs: dict[str, dict[tuple[str | None, str | None], _Group]] = defaultdict(dict)
    for (aid, oid, field_key), group in per_official_field.items():
        field_pairs[aid][(oid, field_key)] = group
    crossed = [_Crossed(aid, ids[aid], children[aid], pairs[aid], rule) for aid in children]
    # Officials against fields too: a field is a union of procedures, so an official minus
    # the fields wholly theirs is a remainder the procedures' audit does not see when one of
    # those procedures is withheld.
    crossed += [
        _Crossed(aid, ids[aid], children[aid], field_pairs[aid], rule, "fields") for aid in children
    ]
    across = province_crossed(agency_units, field_units, per_field, rule)
    while True:
        disclosure.apply(figures, lines, UNIT_COUNTS)
        changed = False
        for audit in crossed:
            while agency_units[audit.agency_id].figure.shown and audit.run():
                changed = True
        while top.figure.shown and across():
            changed = True
        if not changed:
            break

    # Levels and classes of a total are shown only when those of each of its parts are:
    # otherwise the total's minus the shown parts' would give a withheld part's.
    open_levels: dict[int, bool] = {}

    def levels_open(u: _Unit) -> bool:
        if id(u) not in open_levels:
            open_levels[id(u)] = _levels_may_show(u)
        return open_levels[id(u)]

    for aid in sorted(subtree_units, key=tree.depth, reverse=True):
        whole = subtree_units[aid]
        if aid in line_parts:
            open_levels[id(whole)] = _levels_may_show(whole) and all(
                levels_open(p) for p in line_parts[aid]
            )
    province_open = top.figure.shown and all(levels_open(subtree_units[a]) for a in roots)
    documents: dict[str, dict[str, Any]] = {
        PROVINCE: {
            "total": top.document(),
            "agencies": [
                subtree_units[u.id].document() | {"kind": u.kind}
                for u, _ in tree.walk()
                if u.id in subtree_units
            ],
            "fields": [u.document() for u in field_units.values()],
            **_distributions(top, shown=province_open),
        }
    }
    criteria_rows = await _criteria_groups(session, period)
    criteria = _criteria(criteria_rows, agency_units, subtree_units, tree, rule)
    # A unit's fields are of its own responses: checked against its own criteria rows.
    own_criteria = {
        aid: [c for c in rows if not c.get("subtree")] for aid, rows in criteria.items()
    }
    by_field = field_criteria(criteria_rows, field_of, children, own_criteria, rule)
    coverage = _coverage(await _coverage_groups(session, period), tree, rule)
    for aid in set(agencies) & (set(subtree_units) | set(coverage)):
        whole = subtree_units.get(aid) or unit(
            agencies[aid][0], agencies[aid][1], parent_code(aid), _Group(), False
        )
        own = agency_units.get(aid)
        within = [u for u in tree.subtree(aid) if u in subtree_units or u in coverage]
        documents[aid] = {
            "total": whole.document(),
            "own": own.document() if own is not None and own is not whole else None,
            "subtree": within,
            "units": [
                subtree_units[u].document() | {"kind": tree.units[u].kind}
                for u in within
                if u in subtree_units
            ],
            "officials": [u.document() for u in children[aid]["officials"]],
            "procedures": [u.document() for u in children[aid]["procedures"]],
            "fields": [u.document() for u in children[aid]["fields"]],
            "field_criteria": by_field.get(aid, []),
            **_distributions(whole, shown=aid in subtree_units and levels_open(whole)),
            # The unit's own rows keep their keys (readers that sum them stay right); the
            # subtree's rows, for a unit with sub-units, sit apart.
            "criteria": [c for c in criteria.get(aid, []) if not c.get("subtree")],
            "coverage": [r for r in coverage.get(aid, []) if r["channel"] != SUBTREE],
            "criteria_subtree": [c for c in criteria.get(aid, []) if c.get("subtree")],
            "coverage_subtree": [r for r in coverage.get(aid, []) if r["channel"] == SUBTREE],
        }
    return documents


def _tree_lines(
    sub: dict[str, list[str]], own: dict[str, _Unit], whole: dict[str, _Unit]
) -> dict[str, list[_Unit]]:
    """The parts of each unit's line: its own responses (when it has any) and each sub-unit's
    subtree total, the figures a reader can subtract from the unit's total."""
    line_parts: dict[str, list[_Unit]] = {}
    for aid, below in sub.items():
        if below:
            line_parts[aid] = ([own[aid]] if aid in own else []) + [whole[c] for c in below]
    return line_parts


def _levels_may_show(unit: _Unit) -> bool:
    """A group's own condition for its levels: shown, and each survey's raters 0 or ≥ k."""
    by_survey = unit.group.rated_by_survey.values()
    return unit.figure.shown and not any(0 < n < unit.figure.k for n in by_survey)


def _distributions(unit: _Unit, *, shown: bool) -> dict[str, Any]:
    """Satisfaction levels and Circular 01/2018 classes of a published group.

    These parts are defined by the answer, not by who answered, so a level of 1 among 40 raters
    names nobody; they are shown exactly when their group is, and when each survey's raters in
    it are 0 or at least k (the scales differ: the ZNS stars reach levels mot-cua never gives,
    so a level could be the few ZNS raters alone). The province's are shown only when every
    agency is: otherwise the province's minus the agencies' would give a withheld agency's.
    """
    if not shown or not _levels_may_show(unit):
        return {"levels": None, "classes": None}
    return {
        "levels": {str(level): unit.group.levels.get(level, 0) for level in LEVELS},
        "classes": {name: unit.group.classes.get(name, 0) for name in CLASS_ORDER},
    }


def _criteria(
    rows: Iterable[Any],
    agency_units: dict[str, _Unit],
    subtree_units: dict[str, _Unit],
    tree: units.Tree,
    rule: Rule,
) -> dict[str, list[dict[str, Any]]]:
    """Per unit and criterion: how often it scored 0, overall and among the dissatisfied; and,
    for a unit with sub-units, the same over its whole subtree (``"subtree": true``).

    A criterion's figures need k scored responses; its share among the dissatisfied needs k
    dissatisfied and k others, since the overall share minus it would give the others', and
    the unit's raters outside the criterion's responses to be 0 or at least k. A subtree's row
    is a line of the difference rule over its own row and each sub-unit's (on the scored
    count), and shows its dissatisfied split only when every part shows its own.
    """
    sums: dict[tuple[str, str], list[int]] = {}
    parsed: dict[str, dict[str, int]] = {}
    for row in rows:
        points = parsed.get(row.criteria)
        if points is None:
            points = parsed[row.criteria] = criteria_points(row.criteria)
        n = int(row.n)
        dissatisfied = 0 < int(row.satisfaction or 0) <= DISSATISFIED_MAX_LEVEL
        for criterion, value in points.items():
            acc = sums.setdefault((row.agency_id, criterion), [0, 0, 0, 0, 0, 0])
            acc[5] += n if int(row.satisfaction or 0) > 0 else 0
            acc[0] += n
            acc[1] += value * n
            if value == 0:
                acc[2] += n
                acc[3] += n if dissatisfied else 0
            acc[4] += n if dissatisfied else 0
    whole_sums: dict[tuple[str, str], list[int]] = {}
    for (aid, criterion), acc in sums.items():
        for uid in (aid, *tree.ancestors(aid)):
            rolled = whole_sums.setdefault((uid, criterion), [0] * 6)
            for i, value in enumerate(acc):
                rolled[i] += value
    # A unit whose sub-units hold no scored responses for the criterion: its row is the subtree's.
    own_keys = set(sums)
    subtree_keys = {
        (uid, c)
        for (uid, c) in whole_sums
        if any((child, c) in whole_sums for child in tree.children.get(uid, []))
    }

    def figure(unit: _Unit | None, n: int) -> Figure:
        k = unit.figure.k if unit else rule.k_official
        made = Figure({"scored": n}, k)
        if unit is None or not unit.figure.shown:
            made.hide(PARENT_HIDDEN)
        return made

    own_fig = {key: figure(agency_units.get(key[0]), sums[key][0]) for key in own_keys}
    sub_fig = {key: figure(subtree_units.get(key[0]), whole_sums[key][0]) for key in subtree_keys}

    def part_of(uid: str, criterion: str) -> Figure | None:
        return sub_fig.get((uid, criterion)) or own_fig.get((uid, criterion))

    lines = []
    line_parts: dict[tuple[str, str], list[Figure]] = {}
    for uid, criterion in subtree_keys:
        parts = [own_fig[(uid, criterion)]] if (uid, criterion) in own_fig else []
        for child in tree.children.get(uid, []):
            found = part_of(child, criterion)
            if found is not None:
                parts.append(found)
        line_parts[(uid, criterion)] = parts
        lines += _criteria_tree_line(parts, sub_fig[(uid, criterion)], rule.k_group)
    disclosure.apply([*own_fig.values(), *sub_fig.values()], lines, ("scored",))

    splits: dict[int, bool] = {}

    def split_of(fig: Figure, acc: list[int], unit: _Unit | None) -> bool:
        n, _, _, _, n_dis, rated = acc
        others = unit.group.rated - rated if unit else 0
        k = fig.k
        return fig.shown and n_dis >= k and n - n_dis >= k and (others == 0 or others >= k)

    for key, fig in own_fig.items():
        splits[id(fig)] = split_of(fig, sums[key], agency_units.get(key[0]))
    for key in sorted(subtree_keys, key=lambda k: tree.depth(k[0]), reverse=True):
        fig = sub_fig[key]
        splits[id(fig)] = split_of(fig, whole_sums[key], subtree_units.get(key[0])) and all(
            splits.get(id(p), False) for p in line_parts[key]
        )

    result: dict[str, list[dict[str, Any]]] = defaultdict(list)
    entries = [(key, own_fig[key], sums[key], False) for key in sorted(own_keys)]
    entries += [(key, sub_fig[key], whole_sums[key], True) for key in sorted(subtree_keys)]
    for (aid, criterion), fig, acc, whole in entries:
        n, total, zeros, zeros_dis, n_dis, _ = acc
        shown, split = fig.shown, splits[id(fig)]
        result[aid].append(
            {
                "agency": tree.units[aid].code if aid in tree.units else "",
                "criterion": criterion,
                "scored": n if shown else None,
                "mean_points": round(total / n, 2) if shown else None,
                "zero_share": 100.0 * zeros / n if shown else None,
                "zero_share_dissatisfied": 100.0 * zeros_dis / n_dis if split else None,
                "dissatisfied": n_dis if split else None,
                "suppressed": not shown,
                **({"subtree": True} if whole else {}),
            }
        )
    return result


#: A criterion row whose unit's total is withheld: hidden with it (never published).
PARENT_HIDDEN = disclosure.PARENT


def _criteria_tree_line(parts: list[Figure], total: Figure, k: int) -> list[Line]:
    """A subtree's criterion row against its own row and its sub-units' (the tree's line)."""
    return [Line(parts, total, ("scored",), k)]


#: The coverage row of a unit's whole subtree (itself and every unit under it, all channels).
SUBTREE = "subtree"
COVERAGE_COUNTS = ("reported", "sent", "delivered", "answered", "capped")


def _coverage(rows: Iterable[Any], tree: units.Tree, rule: Rule) -> dict[str, list[dict[str, Any]]]:
    """Who was asked against who answered, per unit and channel, cut by the same rule, and
    rolled up: a unit with sub-units also gets its subtree's row (``SUBTREE``), a line of the
    difference rule over its own all-channel row and each sub-unit's subtree row, so no level
    lets a reader subtract the shown sub-units to recover a withheld one.

    ``capped`` (results that started no survey because the citizen had been invited within
    the invitation cap's window) is shown exactly when its row is, like sent and delivered:
    it is a part of ``reported`` that the agency was told of result by result anyway."""
    per: dict[str, dict[str, Coverage]] = defaultdict(dict)
    for row in rows:
        code = tree.units[row.agency_id].code if row.agency_id in tree.units else ""
        for channel in ("*", row.channel or ""):
            item = per[row.agency_id].setdefault(channel, Coverage(code, channel))
            item.reported += int(row.reported)
            item.sent += int(row.sent)
            item.delivered += int(row.delivered or 0)
            item.answered += int(row.answered or 0)
            item.capped += int(row.capped or 0)
    counts = ("reported", "answered")
    figures = {
        (aid, ch): Figure({"reported": c.reported, "answered": c.answered}, rule.k_group)
        for aid, items in per.items()
        for ch, c in items.items()
    }
    lines = [
        Line([f for ch, f in _channels(figures, aid)], figures[(aid, "*")], counts, rule.k_group)
        for aid in per
    ]
    # Subtree rows, bottom up: a unit without sub-units holding coverage is its own row.
    whole: dict[str, tuple[Coverage, Figure]] = {}
    for aid in sorted(tree.units, key=tree.depth, reverse=True):
        below = [c for c in tree.children.get(aid, []) if c in whole]
        if not below:
            if aid in per:
                whole[aid] = (per[aid]["*"], figures[(aid, "*")])
            continue
        total = Coverage(tree.units[aid].code, SUBTREE)
        parts = ([(per[aid]["*"], figures[(aid, "*")])] if aid in per else []) + [
            whole[c] for c in below
        ]
        for part, _ in parts:
            for name in COVERAGE_COUNTS:
                setattr(total, name, getattr(total, name) + getattr(part, name))
        figure = Figure({"reported": total.reported, "answered": total.answered}, rule.k_group)
        figures[(aid, SUBTREE)] = figure
        per[aid][SUBTREE] = total
        whole[aid] = (total, figure)
        lines += _coverage_tree_line([f for _, f in parts], figure, counts, rule.k_group)
    disclosure.apply(figures.values(), lines, counts)
    result: dict[str, list[dict[str, Any]]] = {}
    order = {"*": 0, SUBTREE: 1}
    for aid, items in per.items():
        result[aid] = [
            {
                "agency": c.agency,
                "channel": ch,
                **{
                    name: getattr(c, name) if figures[(aid, ch)].shown else None
                    for name in COVERAGE_COUNTS
                },
                "suppressed": figures[(aid, ch)].suppressed,
            }
            for ch, c in sorted(items.items(), key=lambda kv: (order.get(kv[0], 2), kv[0]))
        ]
    return result


def _coverage_tree_line(
    parts: list[Figure], total: Figure, counts: tuple[str, ...], k: int
) -> list[Line]:
    """A subtree's coverage row against its own row and its sub-units' (the tree's line)."""
    return [Line(parts, total, counts, k)]


def _channels(figures: dict[tuple[str, str], Figure], aid: str) -> list[tuple[str, Figure]]:
    return [(ch, f) for (a, ch), f in figures.items() if a == aid and ch not in ("*", SUBTREE)]


# ------------------------------------------------------------------------------ publishing
#: Taken by a publication (exclusive) for its whole transaction, and (shared) by every change of
#: inputs a release must not miss, such as a quarter's agency criteria (``storage.unit_criteria``
#: re-scores that quarter only while no release covers it): either the change commits before the
#: release reads the responses, or it sees the release and is refused. "Release" in hex.
FREEZE_LOCK = 0x52_656C_6561_7365


async def _hold_freeze(session: AsyncSession, *, shared: bool) -> None:
    """PostgreSQL's transaction-level advisory lock (SQLite serialises writers at BEGIN)."""
    if session.get_bind().dialect.name == "postgresql":
        function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        await session.execute(text(f"SELECT {function}(:key)"), {"key": FREEZE_LOCK})


async def hold_off_publication(session: AsyncSession) -> None:
    """Keep a release from being computed until the caller's transaction ends."""
    await _hold_freeze(session, shared=True)


async def covering(session: AsyncSession, starts_on: dt.date, ends_on: dt.date) -> list[str]:
    """The labels of the releases that cover any day from ``starts_on`` to ``ends_on``."""
    rows = await session.execute(
        select(Release.label)
        .where(Release.starts_on <= ends_on, Release.ends_on >= starts_on)
        .order_by(Release.starts_on)
    )
    return [label for (label,) in rows]


async def publish(
    sessions: Sessions, period: Period, rule: Rule, now: dt.datetime | None = None
) -> Release | None:
    """Compute and store the release of ``period`` once; None when it exists already.

    Several processes may try at the same tick: the unique start date lets one win and the
    others roll back, so a period is never released twice with different figures.
    """
    async with sessions() as session:
        await _hold_freeze(session, shared=False)
        documents = await build(session, period, rule)
        release = Release(
            label=period.label,
            period=period.kind,
            starts_on=period.starts_on,
            ends_on=period.ends_on,
            published_at=now or utcnow(),
            rule={**rule.as_dict(), "period": period.kind},
        )
        session.add(release)
        try:
            await session.flush()
            for scope, document in documents.items():
                session.add(ReleaseFigures(release_id=release.id, scope=scope, document=document))
            await session.commit()
        except IntegrityError:
            await session.rollback()
            return None
    return release


async def publish_due(
    sessions: Sessions,
    rule: Rule,
    kind: str,
    delay_hours: int,
    now: dt.datetime | None = None,
) -> list[Release]:
    """Release every closed period that is due (the periodic job and ``surveybot release``)."""
    now = now or utcnow()
    async with sessions() as session:
        last_end = await session.scalar(select(func.max(Release.ends_on)))
        first_day = None
        if last_end is None:
            first_response = await session.scalar(select(func.min(Response.answered_on)))
            first_report = await session.scalar(select(func.min(SurveyLedger.reported_on)))
            days = [d for d in (first_response, first_report) if d is not None]
            first_day = min(days) if days else None
    published = []
    for period in due_periods(kind, first_day, last_end, delay_hours, now):
        release = await publish(sessions, period, rule, now)
        if release is not None:
            published.append(release)
    return published


# ------------------------------------------------------------------------------ reading
@dataclass(frozen=True, slots=True)
class ReleaseInfo:
    id: str
    label: str
    period: str
    starts_on: dt.date
    ends_on: dt.date
    published_at: dt.datetime
    rule: dict[str, Any]


async def list_releases(sessions: Sessions) -> list[ReleaseInfo]:
    """Every release, oldest first."""
    async with sessions() as session:
        rows = (await session.execute(select(Release).order_by(Release.starts_on))).scalars()
        return [
            ReleaseInfo(r.id, r.label, r.period, r.starts_on, r.ends_on, r.published_at, r.rule)
            for r in rows
        ]


async def released_until(sessions: Sessions) -> dt.date:
    """The last day of the last released period (the first day ever when none is): row-level
    exports stop there, so an open period never reaches a file."""
    async with sessions() as session:
        last = await session.scalar(select(func.max(Release.ends_on)))
    return last or dt.date.min


def next_release(
    releases: Sequence[ReleaseInfo], kind: str, delay_hours: int, today: dt.date
) -> tuple[Period, dt.datetime]:
    """The next period to be released and when, for the dashboard's notice."""
    if releases:
        start = releases[-1].ends_on + dt.timedelta(days=1)
        period = period_of(kind, start)
        if period.starts_on < start:
            period = period.next()
    else:
        period = period_of(kind, today)
    return period, release_time(period, delay_hours)


async def documents(
    sessions: Sessions, release_ids: Sequence[str], scopes: Sequence[str] | None
) -> dict[tuple[str, str], dict[str, Any]]:
    """(release id, scope) → document, for the given scopes (None: every scope)."""
    if not release_ids:
        return {}
    stmt = select(ReleaseFigures).where(ReleaseFigures.release_id.in_(list(release_ids)))
    if scopes is not None:
        stmt = stmt.where(ReleaseFigures.scope.in_(list(scopes)))
    async with sessions() as session:
        rows = (await session.execute(stmt)).scalars()
        return {(r.release_id, r.scope): _loaded(r.document) for r in rows}


def _loaded(document: Any) -> dict[str, Any]:
    return json.loads(document) if isinstance(document, str) else dict(document)


# ------------------------------------------------------------------------------ views
def cell(doc: dict[str, Any], thresholds: Thresholds) -> Cell:
    """A stored cell as the dashboard's and exports' ``Cell`` (withheld counts stay unknown)."""
    result = Cell(doc["key"], doc["label"], doc["parent"])
    result.responses = doc["responses"] or 0
    result.rated = doc["rated"] or 0
    result.satisfied = doc["satisfied"] or 0
    result.scored = doc["scored"] or 0
    result.score_sum = doc["score_sum"] or 0.0
    result.maximum_sum = doc.get("score_max_sum") or 0.0
    result.suppressed = doc["suppressed"]
    result.field = doc.get("field", "")
    result.bands = thresholds.bands_766
    return result


@dataclass(slots=True)
class Published:
    """What one scope (the province, or one agency) may see of one release."""

    release: ReleaseInfo | None
    total: Cell
    agencies: list[Cell]
    officials: list[Cell]
    procedures: list[Cell]
    levels: dict[int, int] | None
    classes: dict[str, int] | None
    criteria: list[CriterionStat]
    coverage: list[dict[str, Any]]
    trend: list[Cell]
    #: Every release, oldest first (the page's choice of release and its next-release notice).
    history: list[ReleaseInfo]
    #: Fields (lĩnh vực), ranked: the province's own, or the agency's.
    fields: list[Cell] = field(default_factory=list)
    #: Per field and criterion of the agency (or of every agency, for the province).
    field_criteria: list[CriterionStat] = field(default_factory=list)


def _criterion(doc: dict[str, Any], agency: str | None = None) -> CriterionStat:
    return CriterionStat(
        field=doc.get("field", ""),
        agency=agency if agency is not None else doc["agency"],
        criterion=doc["criterion"],
        scored=doc["scored"],
        mean_points=doc["mean_points"],
        zero_share=doc["zero_share"],
        zero_share_dissatisfied=doc["zero_share_dissatisfied"],
        dissatisfied=doc["dissatisfied"],
        suppressed=doc["suppressed"],
        subtree=bool(doc.get("subtree", False)),
    )


async def published(
    sessions: Sessions,
    thresholds: Thresholds,
    agency_id: str | None,
    label: str | None = None,
    within: Collection[str] | None = None,
) -> Published:
    """The figures of one release (the latest, or ``label``) for a scope, and the trend.

    ``agency_id`` None is the province: its own document plus every unit's parts. A unit's
    scope is its subtree as the release froze it, cut to ``within`` (the units the reader may
    see now, ``bot.dashboard.scope``): its total, its sub-units ranked, and the officials,
    procedures, criteria and coverage of each unit in it.
    """
    releases = await list_releases(sessions)
    chosen = next((r for r in releases if r.label == label), None) if label else None
    chosen = chosen or (releases[-1] if releases else None)
    own = agency_id if agency_id is not None else PROVINCE
    docs = await documents(sessions, [r.id for r in releases], [own])
    trend = []
    for info in releases:
        doc = docs.get((info.id, own))
        if doc is not None:
            trend.append(_relabel(cell(doc["total"], thresholds), info.label))
    empty = Published(chosen, Cell("all", "", ""), [], [], [], None, None, [], [], trend, releases)
    if chosen is None:
        return empty
    own_doc = docs.get((chosen.id, own))
    if own_doc is None:
        return empty
    if agency_id is None:
        current = await documents(sessions, [chosen.id], None)
        ranked = own_doc.get("agencies", [])
    else:
        allowed = set(own_doc.get("subtree", [agency_id]))
        if within is not None:
            allowed &= set(within)
        allowed.add(agency_id)
        current = await documents(sessions, [chosen.id], sorted(allowed))
        codes = {d["total"]["key"] for (_, scope), d in current.items()}
        # Releases cut before units were a tree hold no "units": the unit's own total then.
        ranked = [u for u in own_doc.get("units", [own_doc["total"]]) if u["key"] in codes]
    parts = [d for (_, scope), d in sorted(current.items()) if scope != PROVINCE]
    view = Published(
        release=chosen,
        total=cell(own_doc["total"], thresholds),
        agencies=rank([cell(c, thresholds) for c in ranked], thresholds.k_group),
        officials=_ranked(parts, "officials", thresholds, thresholds.k_official),
        procedures=_ranked(parts, "procedures", thresholds, thresholds.k_group),
        levels=_int_keys(own_doc.get("levels")),
        classes=own_doc.get("classes"),
        criteria=[
            _criterion(c)
            for d in parts
            for key in ("criteria", "criteria_subtree")
            for c in d.get(key, [])
        ],
        coverage=[
            r for d in parts for key in ("coverage", "coverage_subtree") for r in d.get(key, [])
        ],
        trend=trend,
        history=releases,
        fields=rank([cell(c, thresholds) for c in own_doc.get("fields", [])], thresholds.k_group),
        field_criteria=[
            _criterion(c, d["total"]["key"]) for d in parts for c in d.get("field_criteria", [])
        ],
    )
    return view


def _relabel(c: Cell, label: str) -> Cell:
    c.key = c.label = label
    return c


def _ranked(
    parts: Iterable[dict[str, Any]], level: str, thresholds: Thresholds, k: int
) -> list[Cell]:
    return rank([cell(c, thresholds) for d in parts for c in d.get(level, [])], k)


def _int_keys(levels: dict[str, int] | None) -> dict[int, int] | None:
    return None if levels is None else {int(k): v for k, v in levels.items()}


@dataclass(slots=True)
class _Crossed:
    """An agency's officials against its procedures: the audit of ``disclosure.audit_crossed``."""

    agency_id: str
    ids: dict[str, list[str | None]]
    children: dict[str, list[_Unit]]
    pairs: dict[tuple[str | None, str | None], _Group]
    rule: Rule
    #: The breakdown the officials are crossed with: procedures, or fields.
    column: str = "procedures"
    #: The intersections' counts by (official index, procedure index): they never change, only
    #: which parts are shown does, so they are counted once for every run.
    cells: dict[tuple[int, int], dict[str, int]] = field(init=False)

    def __post_init__(self) -> None:
        row = {oid: i for i, oid in enumerate(self.ids.get("officials", []))}
        column = {pid: i for i, pid in enumerate(self.ids.get(self.column, []))}
        self.cells = {
            (row[oid], column[pid]): group.counts() for (oid, pid), group in self.pairs.items()
        }

    def run(self) -> bool:
        """Withhold one more part if a remainder is too small; False when none is."""
        officials = self.ids.get("officials", [])
        if not officials or not self.ids.get(self.column):
            return False
        return disclosure.audit_crossed(
            [u.figure for u in self.children["officials"]],
            [u.figure for u in self.children[self.column]],
            self.cells,
            UNIT_COUNTS,
            lambda rows: self.rule.k_for({officials[r] for r in rows}),
            max(self.rule.k_group, self.rule.k_official),
        )
