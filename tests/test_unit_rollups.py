"""Units as a tree in the releases: every figure rolled up to every ancestor, and complementary
suppression on every level, so no reader subtracts the shown sub-units from a parent's total
to recover a withheld one (``storage/releases.py``, docs/threat-model.md rule 2)."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from typing import Any

import pytest
from sqlalchemy import select

from bot.runtime import Runtime
from storage import releases, units
from storage.disclosure import Rule
from storage.models import Agency, Procedure
from storage.stats import Thresholds
from tests.adminseed import Batch, release, seed

THRESHOLDS = Thresholds()
K = THRESHOLDS.k_group
COUNTS = ("responses", "rated", "scored")
RULE = Rule(THRESHOLDS.k_group, THRESHOLDS.k_official)
OCTOBER = releases.period_of("month", dt.date(2026, 10, 1))


async def _tree(runtime: Runtime, shape: list[tuple[str, str | None, str]]) -> dict[str, str]:
    """(code, parent code, kind) top down → code: id."""
    async with runtime.sessions() as session:
        session.add(Procedure(code="1.001234", name="Đăng ký khai sinh"))
        await session.commit()
    ids: dict[str, str] = {}
    for code, parent, kind in shape:
        made = await units.create_unit(
            runtime.sessions, code, f"Đơn vị {code}", kind, ids[parent] if parent else None
        )
        ids[code] = made.id
    return ids


async def _documents(runtime: Runtime) -> dict[str, dict[str, Any]]:
    infos = await releases.list_releases(runtime.sessions)
    docs = await releases.documents(runtime.sessions, [infos[-1].id], None)
    return {scope: doc for (_, scope), doc in docs.items()}


def subtraction_attack(
    docs: dict[str, dict[str, Any]], truth: dict[str, int], k: int
) -> list[tuple[str, str, int]]:
    """Plays a reader of every document: for each unit's published total, subtract its shown
    own figure and shown sub-units; a withheld remainder of 1..k-1 (of any count) is a small
    group exposed. ``truth`` (code → own responses) tells the attacker which parts hold
    responses, as an agency that knows whom it served does. Returns (unit, count, value)."""
    found = []
    province = docs[releases.PROVINCE]
    by_code = {u["key"]: u for u in province["agencies"]}
    lines: list[tuple[str, dict[str, Any], list[dict[str, Any] | None]]] = [
        ("(province)", province["total"], [u for u in province["agencies"] if not u["parent"]])
    ]
    for scope, doc in docs.items():
        if scope == releases.PROVINCE:
            continue
        code = doc["total"]["key"]
        subs = [u for u in doc.get("units", []) if u["parent"] == code]
        if subs:
            own = doc.get("own")
            held = truth.get(code, 0) > 0
            lines.append((code, doc["total"], [*([own] if held else []), *subs]))
    for name, total, parts in lines:
        if total["suppressed"] is not None:
            continue
        for count in COUNTS:
            shown = sum(p[count] for p in parts if p is not None and p["suppressed"] is None)
            left = total[count] - shown
            if 0 < left < k:
                found.append((name, count, left))
    # Coverage: a unit's subtree row minus its own all-channel row and its sub-units' rows.
    rows = {
        (row["agency"], row["channel"]): row
        for scope, doc in docs.items()
        if scope != releases.PROVINCE
        for key in ("coverage", "coverage_subtree")
        for row in doc.get(key, [])
    }
    for (code, channel), row in rows.items():
        if channel != releases.SUBTREE or row["suppressed"] is not None:
            continue
        parts = [rows.get((code, "*"))] if truth.get(code, 0) > 0 else []
        for child in (u["key"] for u in province["agencies"] if u["parent"] == code):
            parts.append(rows.get((child, releases.SUBTREE)) or rows.get((child, "*")))
        for count in ("reported", "answered"):
            shown = sum(p[count] for p in parts if p is not None and p["suppressed"] is None)
            if 0 < row[count] - shown < k:
                found.append((f"{code} coverage", count, row[count] - shown))
    # Criteria: a unit's subtree row minus its own row and its sub-units' rows, on "scored".
    crit: dict[tuple[str, str, bool], dict[str, Any]] = {
        (row["agency"], row["criterion"], bool(row.get("subtree"))): row
        for scope, doc in docs.items()
        if scope != releases.PROVINCE
        for key in ("criteria", "criteria_subtree")
        for row in doc.get(key, [])
    }
    for (code, criterion, whole), row in crit.items():
        if not whole or row["suppressed"]:
            continue
        parts = [crit.get((code, criterion, False))] if truth.get(code, 0) > 0 else []
        for child in (u["key"] for u in province["agencies"] if u["parent"] == code):
            parts.append(crit.get((child, criterion, True)) or crit.get((child, criterion, False)))
        shown = sum(p["scored"] for p in parts if p is not None and not p["suppressed"])
        if 0 < row["scored"] - shown < k:
            found.append((f"{code} criterion {criterion}", "scored", row["scored"] - shown))
    # A published figure is never smaller than k either (the threshold, on every level).
    for unit in by_code.values():
        if unit["suppressed"] is None and 0 < unit["responses"] < k:
            found.append((unit["key"], "responses", unit["responses"]))
    return found


SHAPE = [
    ("tinh", None, "province"),
    ("so-tp", "tinh", "department"),
    ("quan-1", "tinh", "district"),
    ("phuong-a", "quan-1", "commune"),
    ("phuong-b", "quan-1", "commune"),
    ("phuong-c", "quan-1", "commune"),
    ("mot-cua-c", "phuong-c", "desk"),
]
#: The district's desk, its wards and one desk under a ward: phuong-a has 3 responses.
OWN = {"so-tp": 20, "quan-1": 8, "phuong-a": 3, "phuong-b": 12, "phuong-c": 6, "mot-cua-c": 7}


async def _seed_shape(runtime: Runtime, own: dict[str, int]) -> None:
    for code, n in own.items():
        if n:
            await seed(runtime, code, [Batch(n, None)])


async def test_every_figure_rolls_up_to_every_ancestor(runtime: Runtime) -> None:
    await _tree(runtime, SHAPE)
    await _seed_shape(runtime, OWN)
    assert await release(runtime) == ["2026-10"]
    docs = await _documents(runtime)
    province = docs[releases.PROVINCE]
    rolled = {u["key"]: u for u in province["agencies"]}
    assert province["total"]["responses"] == sum(OWN.values()) == 56
    assert rolled["tinh"]["responses"] == 56 and rolled["tinh"]["kind"] == "province"
    # The district: its own desk (8) and its wards with the desk under phuong-c (3+12+6+7).
    assert rolled["quan-1"]["responses"] == 36 and rolled["quan-1"]["parent"] == "tinh"
    assert rolled["phuong-c"]["responses"] == 13 and rolled["mot-cua-c"]["parent"] == "phuong-c"
    assert rolled["phuong-a"]["suppressed"] == "small" and rolled["phuong-a"]["responses"] is None
    ids = {u.code: u.id for u in (await units.load_tree(runtime.sessions)).units.values()}
    district = docs[ids["quan-1"]]
    assert district["total"]["responses"] == 36
    assert [u["key"] for u in district["units"]] == [
        "quan-1", "phuong-a", "phuong-b", "phuong-c", "mot-cua-c",
    ]  # fmt: skip
    assert district["own"]["key"] == "quan-1"
    coverage = {r["channel"]: r for r in district["coverage"] + district["coverage_subtree"]}
    assert {r["channel"] for r in district["coverage"]} == {"*", "telegram"}  # its own rows
    assert coverage[releases.SUBTREE]["reported"] == 36  # its desk and every ward, rolled up
    assert coverage["*"]["suppressed"] == "complementary"  # phuong-a's 3 cannot be subtracted
    criteria = {
        (row["criterion"], bool(row.get("subtree"))): row
        for row in district["criteria"] + district["criteria_subtree"]
    }
    assert not any(row.get("subtree") for row in district["criteria"])
    assert criteria[("3", True)]["scored"] == 36 and criteria[("3", True)]["mean_points"] == 2.0
    assert criteria[("3", False)]["suppressed"]  # the district's own 8, withheld with phuong-a
    # A unit's page reads its subtree only, and a reader cut to a smaller set sees less.
    view = await releases.published(runtime.sessions, THRESHOLDS, ids["quan-1"])
    assert {c.key for c in view.agencies} == {
        "quan-1", "phuong-a", "phuong-b", "phuong-c", "mot-cua-c",
    }  # fmt: skip
    assert "so-tp" not in {c.key for c in view.agencies}
    narrowed = await releases.published(
        runtime.sessions, THRESHOLDS, ids["quan-1"], within={ids["quan-1"], ids["phuong-b"]}
    )
    assert {c.key for c in narrowed.agencies} == {"quan-1", "phuong-b"}


async def test_no_level_of_the_tree_lets_a_withheld_unit_be_subtracted(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The adversary test: phuong-a's 3 responses are recoverable from the district's total
    minus its desk and other wards when the tree's lines are off, and from nothing when on."""
    await _tree(runtime, SHAPE)
    await _seed_shape(runtime, OWN)
    with monkeypatch.context() as off:
        off.setattr(releases, "_tree_lines", lambda sub, own, whole: {})
        off.setattr(releases, "_coverage_tree_line", lambda parts, total, counts, k: [])
        off.setattr(releases, "_criteria_tree_line", lambda parts, total, k: [])
        async with runtime.sessions() as session:
            unprotected = await releases.build(session, OCTOBER, RULE)
    leaks = subtraction_attack(unprotected, OWN, K)
    assert ("quan-1", "responses", 3) in leaks  # phuong-a, recovered exactly
    assert ("quan-1 coverage", "reported", 3) in leaks  # and its 3 reported results
    assert ("quan-1 criterion 3", "scored", 3) in leaks  # and its 3 scored criteria
    assert await release(runtime) == ["2026-10"]
    docs = await _documents(runtime)
    assert subtraction_attack(docs, OWN, K) == []
    rolled = {u["key"]: u for u in docs[releases.PROVINCE]["agencies"]}
    assert rolled["phuong-a"]["suppressed"] == "small"
    # The smallest other part of the district's line goes with it: the district's own desk.
    ids = {u.code: u.id for u in (await units.load_tree(runtime.sessions)).units.values()}
    assert docs[ids["quan-1"]]["own"]["suppressed"] == "complementary"
    assert rolled["quan-1"]["responses"] == 36  # the district's total itself stays published
    # Levels of the district are withheld too: its minus the shown wards' would give phuong-a's.
    assert docs[ids["quan-1"]]["levels"] is None


async def test_random_trees_never_leave_a_small_remainder_on_any_level(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A random province of 24 units, up to five levels deep, with loads from 0 to 14: the
    attack finds remainders with the protection off and none with it on."""
    rng = random.Random(20261203)
    shape: list[tuple[str, str | None, str]] = [("p", None, "province")]
    for i in range(1, 24):
        parent = rng.choice(shape[: max(1, i)])
        depth = units.KINDS.index(parent[2])
        kind = units.KINDS[min(depth + 1, len(units.KINDS) - 1)]
        shape.append((f"u{i:02d}", parent[0], kind))
    own = {code: rng.choice([0, 0, 1, 2, 3, 4, 6, 9, 14]) for code, _, _ in shape}
    await _tree(runtime, shape)
    await _seed_shape(runtime, own)
    with monkeypatch.context() as off:
        off.setattr(releases, "_tree_lines", lambda sub, own_, whole: {})
        off.setattr(releases, "_coverage_tree_line", lambda parts, total, counts, k: [])
        off.setattr(releases, "_criteria_tree_line", lambda parts, total, k: [])
        async with runtime.sessions() as session:
            unprotected = await releases.build(session, OCTOBER, RULE)
    assert subtraction_attack(unprotected, own, K) != []
    assert await release(runtime) == ["2026-10"]
    assert subtraction_attack(await _documents(runtime), own, K) == []


async def test_a_tree_unit_cannot_move_under_itself_and_racing_moves_make_no_cycle(
    runtime: Runtime,
) -> None:
    ids = await _tree(runtime, SHAPE)
    with pytest.raises(units.UnitError) as under_child:
        await units.move_unit(runtime.sessions, ids["quan-1"], ids["mot-cua-c"])
    assert under_child.value.reason == "cycle"
    with pytest.raises(units.UnitError):
        await units.move_unit(runtime.sessions, ids["quan-1"], ids["quan-1"])
    # phuong-a under phuong-b and phuong-b under phuong-a, at once: one wins, never a cycle.
    results = await asyncio.gather(
        units.move_unit(runtime.sessions, ids["phuong-a"], ids["phuong-b"]),
        units.move_unit(runtime.sessions, ids["phuong-b"], ids["phuong-a"]),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["Unit", "UnitError"]
    tree = await units.load_tree(runtime.sessions)
    for unit_id in tree.units:
        assert unit_id not in tree.ancestors(unit_id)
    assert len(list(tree.walk())) == len(SHAPE)
    async with runtime.sessions() as session:
        assert len((await session.execute(select(Agency))).all()) == 7
