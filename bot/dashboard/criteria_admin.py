"""The agency-level criteria of Circular 01/2018 (5, 8 and 9) per unit and quarter, in the
dashboard: choose a unit of the subtree and a quarter, see each criterion's value beside its
2/1/0 rule, set or clear them.

Who may: a province admin everywhere, a unit manager on every unit of its subtree
(``Action.CRITERIA``), a viewer reads only. A change re-scores the unit's surveys of that
quarter (``storage.unit_criteria``) and is refused once a release covers the quarter (released
figures are frozen; the page says so). Every change is audited; the page shows no count of
responses (a live count would tell a unit when its citizens answered).
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bot.dashboard.manage import _bad, _field, _subtree, _unit_field
from bot.dashboard.scope import Action
from bot.dashboard.views import PREFIX, Ctx, _view, error_page, page, redirect, render
from bot.flows.scoring import AGENCY_CRITERIA
from bot.i18n import N_, gettext
from bot.responses import apply_score
from storage import unit_criteria
from storage.models import Response, utcnow
from storage.unit_criteria import Quarter
from storage.units import Unit

PATH = f"{PREFIX}/unit-criteria"
#: Quarters offered in the chooser, around the current one (any other by its label in the URL).
BACK, AHEAD = 7, 1


@dataclass(frozen=True, slots=True)
class Rule:
    """One criterion as the assessor reads it: its name and what earns 2, 1 and 0 points."""

    criterion: str
    name: str
    points: tuple[tuple[int, str], ...]


#: After Circular 01/2018 as deployed (docs: /work/shared/reference/regulation.md §1.2).
RULES: tuple[Rule, ...] = (
    Rule(
        "5",
        N_("Receiving, handling and returning results at the one-stop desk"),
        (
            (
                2,
                N_(
                    "The desk receives, appraises and approves at least the set share of the "
                    "procedure list (20%% at ministry and province, 50%% at district, 100%% at "
                    "commune level)."
                ),
            ),
            (1, N_("All eligible procedures are received and returned at the desk.")),
            (0, N_("Fewer than all eligible procedures are received and returned at the desk.")),
        ),
    ),
    Rule(
        "8",
        N_("Receiving and answering feedback and petitions"),
        (
            (2, N_("No feedback or petitions, or all handled on time and none dragging on.")),
            (1, N_("At least 90%% handled on time and none dragging on.")),
            (0, N_("Under 90%% handled on time, or a case dragging on.")),
        ),
    ),
    Rule(
        "9",
        N_("Progress and quality of online public services"),
        (
            (
                2,
                N_(
                    "At least 20%% of eligible procedures online at level 3 or 4, at least 30%% "
                    "of dossiers filed online, and no online dossier late or unresolved."
                ),
            ),
            (
                1,
                N_(
                    "Level 3 or 4 services deployed, 15%% to under 30%% of dossiers filed "
                    "online, none late."
                ),
            ),
            (0, N_("No level 3 or 4 service, under 15%% filed online, or a dossier late.")),
        ),
    ),
)
assert tuple(r.criterion for r in RULES) == AGENCY_CRITERIA


def _today_quarter() -> Quarter:
    return Quarter.of(utcnow().date())


def _quarter(ctx: Ctx, raw: str) -> Quarter | web.Response:
    if not raw:
        return _today_quarter()
    try:
        return Quarter.parse(raw[:16])
    except ValueError:
        return _bad(ctx, "bad_quarter")


def _back(unit_code: str, quarter: Quarter) -> web.Response:
    return redirect(f"{PATH}?agency={unit_code}&quarter={quarter.label}#criteria-form")


@page()
async def criteria_page(ctx: Ctx) -> web.StreamResponse:
    quarter = _quarter(ctx, ctx.request.query.get("quarter", ""))
    if isinstance(quarter, web.Response):
        return quarter
    sessions = ctx.services.sessions
    scope = _subtree(ctx)
    listed = [u for u in ctx.agencies if scope is None or u.id in scope]
    current = _today_quarter()
    quarters = sorted({current.shift(n) for n in range(-BACK, AHEAD + 1)} | {quarter})[::-1]
    frozen = await unit_criteria.frozen_by(sessions, quarter)
    values = await unit_criteria.list_for(sessions, [u.id for u in listed], quarter)
    unit = ctx.agency
    return _view(
        ctx,
        "manage_criteria.html",
        quarter=quarter,
        quarters=quarters,
        frozen=frozen,
        rules=RULES,
        rows=listed,
        values=values,
        unit=unit,
        chosen=values.get(unit.id) if unit else None,
        editable=bool(unit and ctx.may(unit.id, Action.CRITERIA)),
    )


async def _form_quarter(ctx: Ctx) -> Quarter | web.Response:
    return _quarter(ctx, await _field(ctx, "quarter", 16) or "-")


def _refused(ctx: Ctx, quarter: Quarter, labels: list[str]) -> web.Response:
    """409: the quarter is released, so its criteria stay as they were."""
    message = gettext(
        ctx.lang,
        N_(
            "The criteria of {quarter} can no longer change: the release of {releases} "
            "covers it, and released figures are frozen."
        ),
        quarter=quarter.label,
        releases=", ".join(labels),
    )
    return render(ctx.request, "error.html", ctx.lang, status=409, message=message, ctx=None)


def _rescorer(ctx: Ctx) -> unit_criteria.Rescore:
    bands = ctx.thresholds.bands

    def rescore(response: Response) -> bool:
        return apply_score(response, bands)

    return rescore


@page(manage=True)
async def criteria_set(ctx: Ctx) -> web.StreamResponse:
    """Set a unit's criteria for a quarter (a blank one: not assessed)."""
    unit = await _unit_field(ctx, "unit", Action.CRITERIA)
    if isinstance(unit, web.Response):
        return unit
    quarter = await _form_quarter(ctx)
    if isinstance(quarter, web.Response):
        return quarter
    given: dict[str, int | None] = {}
    for criterion in AGENCY_CRITERIA:
        raw = await _field(ctx, f"c{criterion}", 4)
        if raw not in ("", "0", "1", "2"):
            return _bad(ctx, "bad_criterion")
        given[criterion] = int(raw) if raw else None
    return await _changed(
        ctx,
        "unit.criteria",
        unit,
        quarter,
        unit_criteria.set_criteria(ctx.services.sessions, unit.id, quarter, given, _rescorer(ctx)),
    )


@page(manage=True)
async def criteria_clear(ctx: Ctx) -> web.StreamResponse:
    """Forget a quarter's own values: its surveys are scored with the unit's earlier ones."""
    unit = await _unit_field(ctx, "unit", Action.CRITERIA)
    if isinstance(unit, web.Response):
        return unit
    quarter = await _form_quarter(ctx)
    if isinstance(quarter, web.Response):
        return quarter
    return await _changed(
        ctx,
        "unit.criteria.clear",
        unit,
        quarter,
        unit_criteria.clear(ctx.services.sessions, unit.id, quarter, _rescorer(ctx)),
    )


async def _changed(
    ctx: Ctx,
    action: str,
    unit: Unit,
    quarter: Quarter,
    work: Coroutine[Any, Any, unit_criteria.Change],
) -> web.Response:
    """Run a set or a clear, then audit what it changed and go back to the quarter; a released
    quarter is refused (409), a unit gone meanwhile is 404."""
    try:
        change = await work
    except unit_criteria.Frozen as exc:
        return _refused(ctx, quarter, exc.labels)
    except LookupError:
        return error_page(ctx.request, ctx.lang, 404, "not_found")
    await ctx.services.audit.record(
        ctx.actor,
        action,
        {"unit": unit.code, "quarter": quarter.label, "from": change.before, "to": change.after},
    )
    return _back(unit.code, quarter)


def setup(app: web.Application) -> None:
    app.router.add_get(PATH, criteria_page, name="admin_unit_criteria")
    app.router.add_post(f"{PATH}/set", criteria_set, name="admin_unit_criteria_set")
    app.router.add_post(f"{PATH}/clear", criteria_clear, name="admin_unit_criteria_clear")
