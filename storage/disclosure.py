"""The disclosure rule: which published figures may show their counts. Pure, no database.

Every page, aggregate export and API figure comes from a release (``storage.releases``), and
every release is cut by this one rule before it is stored:

1. **Threshold.** A figure whose group holds fewer than its k responses is withheld ("small"):
   k is the group's k (default 5), or the official's k (default 10) for a figure about one
   official, which includes any group whose responses all rate one and the same official (an
   agency, a procedure or a satisfaction level that only one official handled is that
   official's figure in disguise). Every denominator counts: a cell of 40 responses of which
   only 2 were rated would publish the rate of those 2, so a cell is withheld when any of its
   additive counts (responses, rated, scored) lies between 1 and k-1.
2. **Differences.** A figure published next to its parts (a province next to its agencies, an
   agency next to its officials or its procedures, coverage next to its channels) lets anyone
   subtract: total minus the published parts is the sum of the withheld parts. So, for every
   such *line* and every count, the withheld parts must together hold 0 or at least k (a
   remainder that is a single part is that part's figure and needs that part's k); while they
   do not, the smallest published part with a non-zero count is withheld too ("complementary").
3. **Cascade.** When a line's total is withheld, all its parts are too ("parent"): otherwise
   their sum would give the withheld total back.
4. **Two breakdowns of one total** (``audit_crossed``): a set of officials minus the
   procedures wholly inside it (or the other way round) leaves a remainder held to k too.

Periods never overlap and a release is never recomputed (``storage.releases``), so no figure
is ever published twice over a changed set of responses: the difference between two moments is
a whole release, never one rating.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

SMALL = "small"
COMPLEMENTARY = "complementary"
PARENT = "parent"


@dataclass(frozen=True, slots=True)
class Rule:
    """The thresholds a release is cut under (stored with it, so old releases stay explained)."""

    k_group: int = 5
    k_official: int = 10

    def k_for(self, officials: Iterable[str | None], about_official: bool = False) -> int:
        """The official's k for a figure about one official (by level or by its raters)."""
        distinct = set(officials)
        single = len(distinct) == 1 and None not in distinct
        return max(self.k_group, self.k_official) if about_official or single else self.k_group

    def as_dict(self) -> dict[str, int]:
        return {"k_group": self.k_group, "k_official": self.k_official}


@dataclass(eq=False, slots=True)
class Figure:
    """A group's additive counts and whether they may be published."""

    counts: dict[str, int]
    k: int
    suppressed: str | None = None

    @property
    def shown(self) -> bool:
        return self.suppressed is None

    def hide(self, reason: str) -> bool:
        if self.suppressed is None:
            self.suppressed = reason
            return True
        return False


@dataclass(eq=False, slots=True)
class Line:
    """Parts whose sum is published as ``total`` (checked on ``counts``)."""

    parts: list[Figure]
    total: Figure | None
    counts: tuple[str, ...]
    k: int


def apply(figures: Iterable[Figure], lines: Sequence[Line], primary: Sequence[str]) -> None:
    """Threshold, difference and cascade rules to a fixed point (in place).

    Withholding only ever grows, so the loop ends; each pass is linear in the figures.
    """
    for figure in figures:
        if any(0 < figure.counts.get(c, 0) < figure.k for c in primary):
            figure.hide(SMALL)
    changed = True
    while changed:
        changed = False
        for line in lines:
            if line.total is not None and not line.total.shown:
                for member in line.parts:
                    changed |= member.hide(PARENT)
                continue
            for count in line.counts:
                changed |= _close_gap(line, count)


def _close_gap(line: Line, count: str) -> bool:
    """Withhold parts until the withheld ones of ``count`` sum to 0 or at least k."""
    changed = False
    while True:
        hidden = [m for m in line.parts if not m.shown and m.counts.get(count, 0) > 0]
        withheld = sum(m.counts.get(count, 0) for m in hidden)
        # A remainder made of one part is that part's figure: it needs that part's k (a lone
        # withheld official, or an agency rated through one official, needs the official's).
        k = max(line.k, hidden[0].k) if len(hidden) == 1 else line.k
        if not 0 < withheld < k:
            return changed
        visible = [m for m in line.parts if m.shown and m.counts.get(count, 0) > 0]
        if not visible:
            # Only possible when the total itself is below k, i.e. withheld already.
            if line.total is not None:
                changed |= line.total.hide(COMPLEMENTARY)
            return changed
        min(visible, key=lambda m: (m.counts.get(count, 0), sum(m.counts.values()))).hide(
            COMPLEMENTARY
        )
        changed = True


#: Up to this many units of one breakdown in one connected block, every subset is audited;
#: above it, single units and pairs (and what is left of the block without them).
EXHAUSTIVE_UNITS = 10


def audit_crossed(
    rows: Sequence[Figure],
    columns: Sequence[Figure],
    cells: Mapping[tuple[int, int], Mapping[str, int]],
    counts: Sequence[str],
    k_of: Callable[[set[int]], int],
    k_most: int,
) -> bool:
    """Two breakdowns of one total (officials and procedures of an agency): withhold a part
    until no set of units of one breakdown, minus the units of the other lying wholly inside
    it, leaves a remainder between 1 and k-1. Returns True when it withheld something.

    The agency knows who sits in every intersection (which official handled which procedure),
    only not what they answered. An official's figure minus the figures of the procedures only
    that official handled is the figure of that official's other raters: a group the other
    rules never see. In general, for a set S of units of one breakdown, every unit of the other
    whose raters all lie in S can be subtracted, and what is left is the raters of S in units
    that reach outside S. Withheld units of a breakdown count as one unit (their sum is the
    total minus the published ones). ``cells`` maps (row index, column index) to the counts of
    that intersection; ``k_of`` gives the k of a remainder from the rows (officials) it holds,
    ``k_most`` the largest it can give (remainders at or above it need no closer look).
    """
    units = (_units(rows), _units(columns))
    figures = (rows, columns)
    weights: dict[tuple[int, int], dict[str, int]] = {}
    origin: dict[tuple[int, int], set[int]] = {}
    for (r, c), value in cells.items():
        if value.get(counts[0], 0) > 0:
            key = (units[0][r], units[1][c])
            acc = weights.setdefault(key, dict.fromkeys(counts, 0))
            for count in counts:
                acc[count] += value.get(count, 0)
            origin.setdefault(key, set()).add(r)
    for block in _blocks(weights):
        for side in (0, 1):
            hidden = _audit_side(block, weights, origin, side, counts, k_of, k_most)
            if hidden is None:
                continue
            members = [
                figures[axis][i]
                for axis, unit_ids in ((1 - side, hidden[1]), (side, hidden[0]))
                for unit in unit_ids
                for i, u in enumerate(units[axis])
                if u == unit
            ]
            candidates = [f for f in members if f.shown]
            if candidates:
                min(candidates, key=lambda f: f.counts.get(counts[0], 0)).hide(COMPLEMENTARY)
                return True
    return False


def _audit_side(
    block: set[tuple[int, int]],
    weights: Mapping[tuple[int, int], Mapping[str, int]],
    origin: Mapping[tuple[int, int], set[int]],
    side: int,
    counts: Sequence[str],
    k_of: Callable[[set[int]], int],
    k_most: int,
) -> tuple[list[int], list[int]] | None:
    """The first subset of ``side``'s units whose remainder is too small: (its units, the
    other side's units inside it), or None. Bit masks keep each subset to a few additions:
    the remainder is the subset's total minus the totals of the units wholly inside it."""
    other = 1 - side
    mine = sorted({key[side] for key in block})
    theirs = sorted({key[other] for key in block})
    position = {unit: i for i, unit in enumerate(mine)}
    own_total = [dict.fromkeys(counts, 0) for _ in mine]
    support = dict.fromkeys(theirs, 0)
    their_total = {unit: dict.fromkeys(counts, 0) for unit in theirs}
    for key in block:
        index = position[key[side]]
        support[key[other]] |= 1 << index
        for count in counts:
            own_total[index][count] += weights[key][count]
            their_total[key[other]][count] += weights[key][count]
    for mask in _masks(len(mine)):
        inside = [u for u in theirs if support[u] & ~mask == 0]
        left = {
            count: sum(own_total[i][count] for i in range(len(mine)) if mask >> i & 1)
            - sum(their_total[u][count] for u in inside)
            for count in counts
        }
        if not any(0 < value < k_most for value in left.values()):
            continue
        chosen = {mine[i] for i in range(len(mine)) if mask >> i & 1}
        subtracted = set(inside)
        keys = [k for k in block if k[side] in chosen and k[other] not in subtracted]
        k = k_of({r for key in keys for r in origin[key]})
        if any(0 < left[count] < k for count in counts):
            return sorted(chosen), inside
    return None


def _masks(n: int) -> Iterable[int]:
    """Every non-empty proper subset of n units, or singles and pairs and their complements."""
    full = (1 << n) - 1
    if n <= EXHAUSTIVE_UNITS:
        yield from range(1, full)
        return
    for a in range(n):
        yield 1 << a
        yield full ^ (1 << a)
        for b in range(a + 1, n):
            yield (1 << a) | (1 << b)
            yield full ^ ((1 << a) | (1 << b))


def _units(figures: Sequence[Figure]) -> list[int]:
    """Each figure's unit: itself when shown, one shared unit (-1) for all withheld ones."""
    return [i if f.shown else -1 for i, f in enumerate(figures)]


def _blocks(weights: Mapping[tuple[int, int], object]) -> list[set[tuple[int, int]]]:
    """Connected blocks of intersections (rows and columns joined by a non-empty one)."""
    parent: dict[tuple[int, int], tuple[int, int]] = {}

    def find(node: tuple[int, int]) -> tuple[int, int]:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for r, c in weights:
        parent[find((0, r))] = find((1, c))
    blocks: dict[tuple[int, int], set[tuple[int, int]]] = {}
    for r, c in weights:
        blocks.setdefault(find((0, r)), set()).add((r, c))
    return list(blocks.values())
