"""Fields (lĩnh vực) in a release: the lines and audits that keep them from giving away a
withheld procedure or agency, and the criteria that drive dissatisfaction per field.

A field is a union of procedures, so three subtractions open up, each closed here by the
disclosure rule of ``storage.disclosure``:

* a field minus its shown procedures is its withheld procedures: one line per field, whose
  parts are the agency's procedures of that field;
* a province field minus the agencies' shown figures of that field is the withheld ones: one
  line per field across agencies, and the province's fields as parts of the province;
* agencies against fields (as officials against procedures): ``disclosure.audit_crossed``.

The criteria per field are cut like the agency's (``releases._criteria``) and then held by a
line to the agency's own criterion figure: the agency's minus the shown fields' must leave 0 or
at least k scored responses (and dissatisfied ones, and others).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from bot.flows.scoring import DISSATISFIED_MAX_LEVEL
from storage import disclosure
from storage.disclosure import Figure, Line, Rule
from storage.stats import NO_UNIT, criteria_points

COUNTS = ("responses", "rated", "scored")
SPLIT = ("dissatisfied", "others")


class _Counts(Protocol):
    rated: int


class Unit(Protocol):
    """What a release's unit offers here (``releases._Unit``)."""

    key: str
    figure: Figure

    @property
    def group(self) -> _Counts: ...


Children = Mapping[str, Mapping[str, Sequence[Unit]]]
Ids = Mapping[str, Mapping[str, Sequence[str | None]]]


def field_lines(
    children: Children, ids: Ids, field_of: Mapping[str, str], rule: Rule
) -> list[Line]:
    """Per agency and field: the field's procedures as its parts."""
    lines = []
    for aid, levels in children.items():
        by_code = dict(zip(ids[aid].get("fields", []), levels.get("fields", []), strict=True))
        parts: dict[str, list[Figure]] = defaultdict(list)
        for pid, unit in zip(ids[aid].get("procedures", []), levels.get("procedures", []), strict=True):  # fmt: skip
            parts[field_of.get(pid or "", NO_UNIT)].append(unit.figure)
        for code, figures in parts.items():
            total = by_code.get(code)
            if total is not None:
                lines.append(Line(figures, total.figure, COUNTS, rule.k_group))
    return lines


def province_field_lines(
    province_fields: Mapping[str, Unit], top: Unit, children: Children, ids: Ids, rule: Rule
) -> list[Line]:
    """The province's fields as parts of the province, and each as the sum of the agencies'."""
    lines = [Line([u.figure for u in province_fields.values()], top.figure, COUNTS, rule.k_group)]
    parts: dict[str | None, list[Figure]] = defaultdict(list)
    for aid, levels in children.items():
        for code, unit in zip(ids[aid].get("fields", []), levels.get("fields", []), strict=True):
            parts[code].append(unit.figure)
    for code, figures in parts.items():
        total = province_fields.get(code or NO_UNIT)
        if total is not None:
            lines.append(Line(figures, total.figure, COUNTS, rule.k_group))
    return lines


def province_crossed(
    agencies: Mapping[str, Unit],
    province_fields: Mapping[str, Unit],
    cells: Mapping[tuple[str, str | None], Any],
    rule: Rule,
) -> Callable[[], bool]:
    """Agencies against the province's fields: a set of agencies minus the fields wholly
    inside it leaves a remainder held to k (``disclosure.audit_crossed``)."""
    row = {aid: i for i, aid in enumerate(agencies)}
    column = {code: i for i, code in enumerate(province_fields)}
    counts = {
        (row[aid], column[code or NO_UNIT]): group.counts()
        for (aid, code), group in cells.items()
        if aid in row and (code or NO_UNIT) in column
    }
    rows = [u.figure for u in agencies.values()]
    columns = [u.figure for u in province_fields.values()]

    def run() -> bool:
        return disclosure.audit_crossed(
            rows, columns, counts, COUNTS, lambda _: rule.k_group, rule.k_group
        )

    return run


def field_criteria(
    rows: Iterable[Any],
    field_of: Mapping[str, str],
    children: Children,
    agency_criteria: Mapping[str, list[dict[str, Any]]],
    rule: Rule,
) -> dict[str, list[dict[str, Any]]]:
    """Per agency, field and criterion: how often it scored 0, overall and among the
    dissatisfied, shown only where the field and the agency's own criterion are."""
    sums: dict[tuple[str, str, str], list[int]] = {}
    parsed: dict[str, dict[str, int]] = {}
    for row in rows:
        points = parsed.get(row.criteria)
        if points is None:
            points = parsed[row.criteria] = criteria_points(row.criteria)
        n, level = int(row.n), int(row.satisfaction or 0)
        dissatisfied = 0 < level <= DISSATISFIED_MAX_LEVEL
        code = field_of.get(row.procedure_id or "", NO_UNIT)
        for criterion, value in points.items():
            acc = sums.setdefault((row.agency_id, code, criterion), [0, 0, 0, 0, 0, 0])
            acc[0] += n
            acc[1] += value * n
            acc[2] += n if value == 0 else 0
            acc[3] += n if value == 0 and dissatisfied else 0
            acc[4] += n if dissatisfied else 0
            acc[5] += n if level > 0 else 0
    units = {
        (aid, unit.key): unit
        for aid, levels in children.items()
        for unit in levels.get("fields", [])
    }
    own = {(aid, c["criterion"]): c for aid, cs in agency_criteria.items() for c in cs}
    scored: dict[tuple[str, str, str], Figure] = {}
    split: dict[tuple[str, str, str], Figure] = {}
    for key, (n, _, _, _, n_dis, rated) in sums.items():
        aid, code, criterion = key
        unit, agency = units.get((aid, code)), own.get((aid, criterion))
        k = unit.figure.k if unit else rule.k_official
        scored[key] = Figure({"scored": n}, k)
        split[key] = Figure({"dissatisfied": n_dis, "others": n - n_dis}, rule.k_group)
        if unit is None or not unit.figure.shown or agency is None or agency["suppressed"]:
            scored[key].hide(disclosure.PARENT)
        elif n < k:
            scored[key].hide(disclosure.SMALL)
        # Raters of the field outside the criterion's responses (another survey's) must be
        # 0 or at least k, or the field's dissatisfied minus these would name them.
        others = unit.group.rated - rated if unit else 0
        if n_dis < k or n - n_dis < k or 0 < others < k:
            split[key].hide(disclosure.SMALL)
    lines = []
    by_criterion: dict[tuple[str, str], list[tuple[str, str, str]]] = defaultdict(list)
    for key in sums:
        by_criterion[(key[0], key[2])].append(key)
    for (aid, criterion), keys in by_criterion.items():
        agency = own.get((aid, criterion)) or {"scored": None, "dissatisfied": None}
        n_agency, dis_agency = agency["scored"] or 0, agency["dissatisfied"] or 0
        total = Figure({"scored": n_agency}, rule.k_group)
        whole = Figure({"dissatisfied": dis_agency, "others": n_agency - dis_agency}, rule.k_group)
        if agency["scored"] is None:
            total.hide(disclosure.PARENT)
        if agency["dissatisfied"] is None:
            whole.hide(disclosure.PARENT)
        lines.append(Line([scored[k] for k in keys], total, ("scored",), rule.k_group))
        lines.append(Line([split[k] for k in keys], whole, SPLIT, rule.k_group))
    disclosure.apply([], lines, ())
    result: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for key, (n, total_points, zeros, zeros_dis, n_dis, _) in sorted(sums.items()):
        aid, code, criterion = key
        shown = scored[key].shown
        split_shown = shown and split[key].shown
        result[aid].append(
            {
                "field": code,
                "criterion": criterion,
                "scored": n if shown else None,
                "mean_points": round(total_points / n, 2) if shown else None,
                "zero_share": 100.0 * zeros / n if shown else None,
                "zero_share_dissatisfied": 100.0 * zeros_dis / n_dis if split_shown else None,
                "dissatisfied": n_dis if split_shown else None,
                "suppressed": not shown,
            }
        )
    return result
