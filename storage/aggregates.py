"""Aggregate exports (agency, official, procedure, field, criterion, criterion per field,
period), read from releases only.

The same frozen, rule-cut documents the dashboard shows (``storage.releases``), so an export can
never show a figure a page withholds, and two exports taken an hour apart are identical until
the next period is released. Every row names the release it comes from.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from storage import releases
from storage.cells import clean
from storage.db import Sessions
from storage.export_formats import write_file
from storage.stats import NOT_ENOUGH, Cell, Thresholds

LEVELS: tuple[str, ...] = (
    "agency",
    "official",
    "procedure",
    "field",
    "criterion",
    "field_criterion",
    "period",
)
UNIT_COLUMNS = [
    "release",
    "agency",
    "unit",
    "name",
    "responses",
    "rated",
    "satisfied",
    "rate_pct",
    "wilson_low_pct",
    "wilson_high_pct",
    "band",
    "rank",
    "avg_score",
    "avg_maximum",
    "status",
]
CRITERION_COLUMNS = [
    "release",
    "agency",
    "field",
    "criterion",
    "scored",
    "mean_points",
    "zero_pct",
    "zero_pct_dissatisfied",
    "dissatisfied",
    "status",
    "scope",
]


class AggregateError(ValueError):
    """An aggregate that cannot be made (unknown level or release)."""


@dataclass(frozen=True, slots=True)
class AggregateSpec:
    level: str = "agency"
    #: A release label ("2026-11"); None is the latest.
    release: str | None = None
    #: Restrict to one agency (an agency viewer's exports always are).
    agency_id: str | None = None
    #: The units the reader may see (None: all); a unit's scope is its subtree cut to these.
    within: frozenset[str] | set[str] | None = None

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise AggregateError(f"unknown level {self.level!r}; use one of {', '.join(LEVELS)}")


async def aggregate_table(
    sessions: Sessions, spec: AggregateSpec, thresholds: Thresholds
) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of one aggregate level; a withheld cell shows its label and status only."""
    if spec.release is not None:
        known = {r.label for r in await releases.list_releases(sessions)}
        if spec.release not in known:
            raise AggregateError(
                f"no release {spec.release!r}; released: {', '.join(sorted(known)) or 'none yet'}"
            )
    if spec.level == "period":
        return UNIT_COLUMNS, await _period_rows(sessions, spec, thresholds)
    view = await releases.published(
        sessions, thresholds, spec.agency_id, spec.release, within=spec.within
    )
    label = view.release.label if view.release else ""
    if spec.level in ("criterion", "field_criterion"):
        stats = view.criteria if spec.level == "criterion" else view.field_criteria
        rows = [
            [
                label,
                s.agency,
                s.field,
                s.criterion,
                _blank(s.scored),
                _blank(s.mean_points),
                _pct(s.zero_share),
                _pct(s.zero_share_dissatisfied),
                _blank(s.dissatisfied),
                NOT_ENOUGH if s.suppressed else "",
                # "subtree": the unit and every unit under it; "unit": the unit alone.
                "subtree" if s.subtree else "unit",
            ]
            for s in stats
        ]
        return CRITERION_COLUMNS, rows
    if spec.level == "agency":
        # A unit's scope: itself and the units under it, each its subtree's total.
        cells = view.agencies
    elif spec.level == "official":
        cells = view.officials
    elif spec.level == "field":
        cells = view.fields
    else:
        cells = view.procedures
    return UNIT_COLUMNS, [_unit_row(label, c, spec.level) for c in cells]


async def _period_rows(
    sessions: Sessions, spec: AggregateSpec, thresholds: Thresholds
) -> list[list[Any]]:
    """Each release's total per agency in scope: the series of closed, non-overlapping periods."""
    infos = await releases.list_releases(sessions)
    scopes: list[str] | None = None
    if spec.agency_id is not None:
        # The unit's subtree as each release froze it, cut to what the reader may see now.
        own = await releases.documents(sessions, [r.id for r in infos], [spec.agency_id])
        subtree = {u for doc in own.values() for u in doc.get("subtree", [spec.agency_id])}
        if spec.within is not None:
            subtree &= set(spec.within)
        scopes = sorted(subtree | {spec.agency_id})
    docs = await releases.documents(sessions, [r.id for r in infos], scopes)
    rows = []
    for info in infos:
        for (release_id, scope), doc in sorted(docs.items()):
            if release_id == info.id and scope != releases.PROVINCE:
                total = releases.cell(doc["total"], thresholds)
                rows.append(_unit_row(info.label, total, "agency"))
    return rows


def _unit_row(label: str, c: Cell, level: str) -> list[Any]:
    agency = c.key if level == "agency" else c.parent
    return [
        label,
        agency,
        c.key,
        c.label,
        c.responses if c.shown else "",
        c.rated if c.shown else "",
        c.satisfied if c.shown else "",
        _pct(c.rate),
        _pct(c.low),
        _pct(c.high),
        c.band,
        c.rank or "",
        _blank(c.avg_score),
        _blank(c.avg_maximum),
        "" if c.shown else f"{NOT_ENOUGH} ({c.suppressed})",
    ]


def _pct(value: float | None) -> Any:
    return "" if value is None else round(value, 1)


def _blank(value: Any) -> Any:
    return "" if value is None else value


async def stream_table(header: list[str], rows: list[list[Any]], fmt: str) -> AsyncIterator[bytes]:
    """The table as CSV, JSON Lines or XLSX, every cell cleaned last (formulas neutralised)."""

    async def batches() -> AsyncIterator[list[list[Any]]]:
        yield [header]
        yield [[clean(v) for v in row] for row in rows]

    buffer = io.BytesIO()
    await write_file(batches(), fmt, buffer)
    yield buffer.getvalue()
