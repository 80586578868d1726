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
   agency next to its officials, procedures, satisfaction levels or Circular 01/2018 classes;
   a column of satisfaction levels next to the province's) lets anyone subtract: total minus the
   published parts is the sum of the withheld parts. So, for every such *line* and every count,
   the withheld parts must together hold 0 or at least k; while they do not, the smallest
   published part with a non-zero count is withheld too ("complementary"). A part that nobody
   displays (responses with no classification) is still a member of its line and always
   withheld, so the residue it leaves is held to the same rule.
3. **Cascade.** When a line's total is withheld, all its parts are too ("parent"): otherwise
   their sum would give the withheld total back.

Periods never overlap and a release is never recomputed (``storage.releases``), so no figure
is ever published twice over a changed set of responses: the difference between two moments is
a whole release, never one rating.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

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
    extra: list[Figure] = field(default_factory=list)

    @property
    def members(self) -> list[Figure]:
        return self.parts + self.extra


def residue(total: Mapping[str, int], parts: Sequence[Figure], counts: Sequence[str]) -> Figure:
    """The undisplayed part of a line: what the total holds beyond its displayed parts."""
    left = {c: total.get(c, 0) - sum(p.counts.get(c, 0) for p in parts) for c in counts}
    return Figure(left, k=0, suppressed=SMALL if any(left.values()) else None)


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
                for member in line.members:
                    changed |= member.hide(PARENT)
                continue
            for count in line.counts:
                changed |= _close_gap(line, count)


def _close_gap(line: Line, count: str) -> bool:
    """Withhold parts until the withheld ones of ``count`` sum to 0 or at least k."""
    changed = False
    while True:
        hidden = [m for m in line.members if not m.shown and m.counts.get(count, 0) > 0]
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
