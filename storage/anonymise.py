"""k-anonymity of the row-level ratings file, planned on counts alone (no database, no rows).

The adversary is the agency, and the official it rates: for every dossier they know the
citizen, the official, the procedure, the day and the channel. A ratings row they can match to
one dossier tells them what that citizen answered. So the rule below makes every combination of
the quasi-identifiers in the file hold at least k rows; each row is then one of at least k
citizens the agency cannot tell apart.

THE RULE (docs/threat-model.md quotes it)

* Quasi-identifiers: agency, official, procedure, channel, language and period; survey and
  survey version frame every combination (the answer columns show which survey a row is, so
  they are never generalised). The language counts because a citizen who answered in English is
  one the agency remembers.
* k: a combination whose rows all rate one and the same official needs k_official (default 10),
  because it is that official's group whatever its label says ("(other officials)" holding one
  official is still that official); any other combination needs k_group (default 5), the
  threshold of every other published group (brief, invariant 4). The same rule as the
  aggregates' (``storage.disclosure``).
* Values first (per agency, over the whole file): an official with fewer than k_official rows
  becomes "(other officials)"; a procedure, channel or language with fewer than k_group rows
  becomes "(other procedures)", "(other channels)", "(other languages)". Such a value can
  never stand in a combination that passes.
* The field (lĩnh vực) is a quasi-identifier the file shows without planning it: a row shows
  the field every true procedure of its released combination shares, else "*"
  (``export_rows.planned_heads``). It is a function of the released combination, so it splits
  none and every combination still holds k.
* Then whole columns, per agency, along this ladder: language → "*", channel → "*", period
  month → quarter, procedure → "*", official → "*", period → year. The order gives up first
  what analyses need least. A step that would merge nothing is skipped (it would only blur a
  label). The period never shows a day: it starts at the month, or at the requested period
  when that is coarser.
* Each rung is scored by the quasi-identifier values the file loses there: one per row for
  each column (or period step) generalised, the values a row still had when it is blanked
  below, all of them and one more when it is dropped. The agency's file is cut at the rung
  that loses least (ties: the finer one). So three ZNS ratings cost their own details, not
  every official's name.
* Then local suppression: the rows of a combination still below its k have all their
  quasi-identifiers blanked ("*") but agency and survey; if even that agency-level combination
  is below its k, its rows are dropped.
* Cells, not rows, are recoded: all the responses that share a true combination get the same
  released one, so each released combination is a union of true ones and the agency, knowing
  the rule and every dossier, still has at least k candidates for every row.
* The plan is checked again on the rows actually written (``Plan.summary``): responses erased
  while the export ran cannot leave a combination below k unnoticed.

What it does not stop, said here so the threat model says it too: a combination whose k rows
all gave the same answer tells the agency that answer (homogeneity; accepted as a group fact);
an answer that is also in the agency's own records (how many times the citizen came to the desk)
can single a row out within its combination. Two row-level exports of an open period would
differ by the ratings given in between, so the dashboard and the CLI export only up to the end
of the last released period (``ExportSpec.until``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

ALL = "*"
OTHER = {
    "official": "(other officials)",
    "procedure": "(other procedures)",
    "channel": "(other channels)",
    "language": "(other languages)",
}
MARKERS = frozenset([ALL, *OTHER.values()])
#: The quasi-identifier columns that are generalised, in the order a key holds them.
COLUMNS = ("official", "procedure", "channel", "language")
PERIODS = ("month", "quarter", "year")
#: Whole-column steps, in the order they are tried.
STEPS = ("language", "channel", "quarter", "procedure", "official", "year")
#: The rule in the words report.json carries with every file.
RULE = (
    "Quasi-identifiers: agency, official, procedure, channel, language, period; survey and "
    "survey version frame every combination and are never generalised.",
    "The field shown is the one every procedure of a row's combination shares, else '*': it "
    "follows the combination and splits none.",
    "Every combination of quasi-identifiers in ratings holds at least k rows: k_official when "
    "all its rows rate one and the same official, k_group otherwise.",
    "The period is never a day: month, or the requested period when coarser.",
    "Per agency, an official with fewer than k_official rows becomes '(other officials)'; a "
    "procedure, channel or language with fewer than k_group rows becomes '(other ...)'.",
    "Then, per agency, whole columns are generalised along a ladder (language, channel, "
    "period to quarter, procedure, official, period to year), cut at the rung that loses the "
    "fewest values: one per row and column generalised, a blanked row's remaining values, a "
    "dropped row's values plus one.",
    "Then the rows of a combination still below k keep agency and survey only ('*' elsewhere); "
    "rows whose agency-level combination is below k are dropped.",
    "Score out of 18 and classification are not in ratings (criteria 1-2 come from the "
    "dossier's dates); free-text answers are not in ratings but in comments.",
    "Comments carry agency, quarter and text only, shuffled, and only for agency-quarter "
    "groups of at least k_official responses; nothing links a comment to a ratings row.",
    "Pseudonyms are keyed hashes of the response id under a fresh random key per export, and "
    "rows come in a fresh random order: two exports cannot be joined.",
)

#: A true combination: agency id, survey, version, official id, procedure id, channel,
#: language, month ("YYYY-MM").
Key = tuple[str, str, int, str | None, str | None, str, str, str]
#: A released combination: the same places, each value an id, None, a marker, or a period label.
Released = tuple[str, str, int, str | None, str | None, str, str, str]
_COL = {"official": 3, "procedure": 4, "channel": 5, "language": 6}


class AnonymityError(RuntimeError):
    """The rows written do not meet the plan (responses were erased while the export ran)."""


@dataclass(frozen=True, slots=True)
class Rule:
    k_group: int = 5
    k_official: int = 10

    def k(self, one_official: bool) -> int:
        return max(self.k_group, self.k_official) if one_official else self.k_group

    def as_dict(self) -> dict[str, Any]:
        return {"k_group": self.k_group, "k_official": self.k_official}


def start_period(requested: str) -> str:
    """Never a day (nor a week, which is no coarser than a month): month or coarser."""
    return requested if requested in ("quarter", "year") else "month"


def period_label(month: str, level: str) -> str:
    if level == "month":
        return month
    if level == "quarter":
        return f"{month[:4]}-Q{(int(month[5:7]) - 1) // 3 + 1}"
    return month[:4]


@dataclass(slots=True)
class _Group:
    """A released combination's count and whether its rows rate one official only."""

    rows: int = 0
    official: str | None = None
    several: bool = False
    started: bool = False

    def add(self, rows: int, official: str | None) -> None:
        if not self.started:
            self.official, self.started = official, True
        elif official != self.official:
            self.several = True
        self.rows += rows

    def k(self, rule: Rule) -> int:
        return rule.k(not self.several and self.official is not None)


@dataclass(frozen=True, slots=True)
class _State:
    generalised: frozenset[str] = frozenset()
    period: str = "month"

    def after(self, step: str) -> _State:
        if step in ("quarter", "year"):
            return replace(self, period=step)
        return replace(self, generalised=self.generalised | {step})


@dataclass(slots=True)
class AgencyPlan:
    agency: str
    rows: int
    steps: list[str] = field(default_factory=list)
    period: str = "month"


@dataclass(slots=True)
class Plan:
    """Per true combination (a cell), what the file shows: a released combination, or None
    for a dropped cell. ``index`` gives each key its cell number for the row counts."""

    rule: Rule
    period_start: str
    keys: list[Key]
    released: list[Released | None]
    blanked: list[bool]
    agencies: dict[str, AgencyPlan]
    comment_period: str

    def index(self) -> dict[Key, int]:
        return {key: i for i, key in enumerate(self.keys)}

    def summary(self, counts: Sequence[int], unplanned: int = 0) -> Summary:
        """The counts of the rows written (``counts[i]`` rows of cell i; ``unplanned`` rows in
        no planned cell, hence dropped), checked against the rule again."""
        groups: dict[Released, _Group] = defaultdict(_Group)
        for i, rows in enumerate(counts):
            out = self.released[i]
            if rows and out is not None:
                groups[out].add(rows, self.keys[i][3])
        small = [g for g in groups.values() if g.rows < g.k(self.rule)]
        if small:
            raise AnonymityError(
                f"{len(small)} combinations ended below k: responses changed during the export"
            )
        return Summary.of(self, counts, unplanned, groups)

    def comment_groups(self, counts: Sequence[int]) -> set[tuple[str, str]]:
        """(agency id, period) groups whose responses reach k_official: only their comments are
        released. Counted on every response read, dropped ones included."""
        totals: dict[tuple[str, str], int] = defaultdict(int)
        for key, rows in zip(self.keys, counts, strict=True):
            totals[key[0], period_label(key[7], self.comment_period)] += rows
        k = max(self.rule.k_official, self.rule.k_group)
        return {group for group, rows in totals.items() if rows >= k}


@dataclass(slots=True)
class Summary:
    """What report.json says about the ratings file."""

    rows_read: int
    released: int
    suppressed: int
    dropped: int
    generalised: dict[str, dict[str, int]]
    combinations: int
    smallest: int
    period_start: str
    period_coarsest: str
    agencies: list[dict[str, Any]]

    @classmethod
    def of(
        cls, plan: Plan, counts: Sequence[int], unplanned: int, groups: dict[Released, _Group]
    ) -> Summary:
        columns = (*COLUMNS, "period")
        rows_by = dict.fromkeys(columns, 0)
        values: dict[str, set[Any]] = {c: set() for c in columns}
        per_agency: dict[str, dict[str, int]] = defaultdict(
            lambda: {"rows": 0, "released": 0, "suppressed": 0, "dropped": 0}
        )
        released = suppressed = dropped = 0
        start = PERIODS.index(plan.period_start)
        coarsest = plan.period_start
        for i, rows in enumerate(counts):
            if not rows:
                continue
            key, out = plan.keys[i], plan.released[i]
            tally = per_agency[key[0]]
            tally["rows"] += rows
            if out is None:
                dropped += rows
                tally["dropped"] += rows
                continue
            released += rows
            tally["released"] += rows
            if plan.blanked[i]:
                suppressed += rows
                tally["suppressed"] += rows
                continue
            for column in COLUMNS:
                if out[_COL[column]] in MARKERS:
                    rows_by[column] += rows
                    values[column].add(key[_COL[column]])
            level = plan.agencies[key[0]].period
            if PERIODS.index(level) > start:
                rows_by["period"] += rows
                values["period"].add(key[7])
            coarsest = max(coarsest, level, key=PERIODS.index)
        agencies = [
            {
                "agency": agency,
                **per_agency[agency],
                "steps": a.steps,
                "period": a.period,
            }
            for agency, a in plan.agencies.items()
        ]
        return cls(
            rows_read=sum(counts) + unplanned,
            released=released,
            suppressed=suppressed,
            dropped=dropped + unplanned,
            generalised={c: {"rows": rows_by[c], "values": len(values[c])} for c in columns},
            combinations=len(groups),
            smallest=min((g.rows for g in groups.values()), default=0),
            period_start=plan.period_start,
            period_coarsest=coarsest,
            agencies=agencies,
        )


def plan(cells: Iterable[tuple[Key, int]], rule: Rule, requested_period: str) -> Plan:
    """Decide every cell's released combination from the cell counts (one GROUP BY)."""
    start = start_period(requested_period)
    by_agency: dict[str, list[tuple[int, Key, int]]] = defaultdict(list)
    keys: list[Key] = []
    for key, rows in cells:
        by_agency[key[0]].append((len(keys), key, rows))
        keys.append(key)
    released: list[Released | None] = [None] * len(keys)
    blanked = [False] * len(keys)
    agencies: dict[str, AgencyPlan] = {}
    for agency, members in by_agency.items():
        agencies[agency] = _plan_agency(agency, members, rule, start, released, blanked)
    return Plan(rule, start, keys, released, blanked, agencies, "quarter")


def _small_values(members: list[tuple[int, Key, int]], rule: Rule) -> dict[str, set[Any]]:
    """Per column, the values too rare in this agency to stand in any combination that passes."""
    totals: dict[str, dict[Any, int]] = {c: defaultdict(int) for c in COLUMNS}
    for _, key, rows in members:
        for column in COLUMNS:
            totals[column][key[_COL[column]]] += rows
    small: dict[str, set[Any]] = {}
    for column in COLUMNS:
        k = rule.k(True) if column == "official" else rule.k_group
        # None (no official, no procedure) is a value of its own, never merged with others.
        small[column] = {v for v, n in totals[column].items() if v is not None and n < k}
    return small


def _released(
    members: list[tuple[int, Key, int]], state: _State, small: dict[str, set[Any]]
) -> list[Released]:
    """Every cell's released combination at ``state`` (one value map per column, built once:
    this runs for every cell on every rung tried)."""
    maps: list[dict[Any, Any] | None] = [
        None if column in state.generalised else dict.fromkeys(small[column], OTHER[column])
        for column in COLUMNS
    ]
    official, procedure, channel, language = maps
    labels: dict[str, str] = {}
    outs: list[Released] = []
    for _, key, _ in members:
        agency, survey, version, off, proc, chan, lang, month = key
        label = labels.get(month)
        if label is None:
            label = labels[month] = period_label(month, state.period)
        outs.append(
            (
                agency,
                survey,
                version,
                ALL if official is None else official.get(off, off),
                ALL if procedure is None else procedure.get(proc, proc),
                ALL if channel is None else channel.get(chan, chan),
                ALL if language is None else language.get(lang, lang),
                label,
            )
        )
    return outs


@dataclass(slots=True)
class _Outcome:
    """One rung of the ladder: every cell's combination, the groups, and what it loses."""

    state: _State
    outs: list[Released]
    groups: dict[Released, _Group]
    #: the combinations below their k
    below: set[Released]
    loss: int


def _units(state: _State, start: str) -> int:
    """Quasi-identifier values a row has lost to whole-column steps at ``state``."""
    return len(state.generalised) + PERIODS.index(state.period) - PERIODS.index(start)


def _evaluate(
    members: list[tuple[int, Key, int]],
    state: _State,
    small: dict[str, set[Any]],
    rule: Rule,
    start: str,
) -> _Outcome:
    outs = _released(members, state, small)
    groups: dict[Released, _Group] = defaultdict(_Group)
    for out, (_, key, rows) in zip(outs, members, strict=True):
        groups[out].add(rows, key[3])
    below = {out for out, group in groups.items() if group.rows < group.k(rule)}
    lost = _units(state, start)
    # every column, every period step from the start, and the period itself
    values = len(COLUMNS) + len(PERIODS) - PERIODS.index(start)
    loss = lost * sum(rows for _, _, rows in members)
    frames: dict[tuple[Any, ...], _Group] = defaultdict(_Group)
    if below:
        for out, (_, key, rows) in zip(outs, members, strict=True):
            if out in below:
                frames[key[:3]].add(rows, key[3])
    for frame in frames.values():
        kept = frame.rows >= frame.k(rule)
        loss += frame.rows * ((values - lost) if kept else (values + 1))
    return _Outcome(state, outs, groups, below, loss)


def _merges(members: list[tuple[int, Key, int]], step: str, small: dict[str, set[Any]]) -> bool:
    """Whether a step can merge anything: its column has two values or more (a cheap test
    before the full evaluation, which still checks that groups did merge)."""
    if step in PERIODS:
        finer = PERIODS[PERIODS.index(step) - 1]
        months = {key[7] for _, key, _ in members}
        return len({period_label(m, step) for m in months}) < len(
            {period_label(m, finer) for m in months}
        )
    place = _COL[step]
    seen = {OTHER[step] if key[place] in small[step] else key[place] for _, key, _ in members}
    return len(seen) > 1


def _plan_agency(
    agency: str,
    members: list[tuple[int, Key, int]],
    rule: Rule,
    start: str,
    released: list[Released | None],
    blanked: list[bool],
) -> AgencyPlan:
    total = sum(rows for _, _, rows in members)
    small = _small_values(members, rule)
    current = best = _evaluate(members, _State(period=start), small, rule, start)
    steps: list[str] = []
    best_steps: list[str] = []
    for step in STEPS:
        if step in PERIODS and PERIODS.index(step) <= PERIODS.index(current.state.period):
            continue
        state = current.state.after(step)
        if best.loss <= _units(state, start) * total:
            break  # this rung and every later one lose at least that much
        if not _merges(members, step, small):
            continue
        candidate = _evaluate(members, state, small, rule, start)
        if len(candidate.groups) == len(current.groups):
            continue  # merges nothing: keep the finer label
        current = candidate
        steps.append(step)
        if current.loss < best.loss:
            best, best_steps = current, list(steps)
    # Local suppression: blank to the agency (and survey) level, then drop what is still small.
    agency_level: dict[Released, _Group] = defaultdict(_Group)
    final: list[Released] = []
    for out, (_, key, rows) in zip(best.outs, members, strict=True):
        if out in best.below:
            out = (key[0], key[1], key[2], ALL, ALL, ALL, ALL, ALL)
            agency_level[out].add(rows, key[3])
        final.append(out)
    shared: dict[Released, Released] = {}  # one tuple per combination, not one per cell
    for out, (index, _key, _) in zip(final, members, strict=True):
        level = agency_level.get(out)
        if level is None:
            released[index] = shared.setdefault(out, out)
        elif level.rows >= level.k(rule):
            released[index], blanked[index] = shared.setdefault(out, out), True
    return AgencyPlan(agency, total, best_steps, best.state.period)
