"""Fields (lĩnh vực) as a dimension of releases: ranked, with the criteria that drive
dissatisfaction per field, and never a way to subtract a withheld procedure or agency."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from bot.runtime import Runtime
from storage import release_fields, releases
from storage.models import Agency, Procedure
from storage.stats import Thresholds
from tests.adminseed import Batch, add_agency, release, seed

THRESHOLDS = Thresholds()
K = THRESHOLDS.k_group


async def add_procedures(runtime: Runtime, procedures: Iterable[tuple[str, str]]) -> None:
    async with runtime.sessions() as session:
        for code, field_code in procedures:
            session.add(Procedure(code=code, name=f"Thủ tục {code}", field=field_code))
        await session.commit()


def spread(count: int, procedure: str, satisfaction: int) -> list[Batch]:
    """``count`` ratings of one procedure shared between two officials (neither alone in it)."""
    first = (count + 1) // 2
    return [
        Batch(first, "CB01", procedure, satisfaction),
        Batch(count - first, "CB02", procedure, satisfaction),
    ]


async def latest(runtime: Runtime, scope: str) -> dict[str, Any]:
    infos = await releases.list_releases(runtime.sessions)
    docs = await releases.documents(runtime.sessions, [infos[-1].id], [scope])
    return docs[(infos[-1].id, scope)]


def field_remainders(agency_doc: dict[str, Any], field_of: dict[str, str]) -> list[tuple[str, int]]:
    """The adversary: each shown field minus its shown procedures, when that names fewer than
    k raters (the withheld procedures' raters, and how many of them were satisfied)."""
    found = []
    for unit in agency_doc["fields"]:
        if unit["suppressed"]:
            continue
        shown = [
            p
            for p in agency_doc["procedures"]
            if not p["suppressed"] and field_of.get(p["key"]) == unit["key"]
        ]
        left = unit["responses"] - sum(p["responses"] for p in shown)
        if 0 < left < K:
            found.append((unit["key"], left))
    return found


async def seed_two_fields(runtime: Runtime) -> dict[str, str]:
    """P2 (3 ratings, all dissatisfied) hides among its field's 23; P4 (4) among the other's
    24: the agency's procedures alone withhold 7, enough for the agency line."""
    field_of = {"1.0001": "tu-phap", "1.0002": "tu-phap", "2.0001": "tnmt", "2.0002": "tnmt"}
    await add_procedures(runtime, field_of.items())
    batches = [
        *spread(20, "1.0001", 5),
        *spread(3, "1.0002", 1),
        *spread(20, "2.0001", 4),
        *spread(4, "2.0002", 5),
    ]
    await seed(runtime, "ubnd-test", batches)
    return field_of


async def test_a_field_minus_its_shown_procedures_never_reveals_a_withheld_one(
    runtime: Runtime, agency: Agency
) -> None:
    field_of = await seed_two_fields(runtime)
    assert await release(runtime) == ["2026-10"]
    doc = await latest(runtime, agency.id)
    procedures = {p["key"]: p["suppressed"] for p in doc["procedures"]}
    assert procedures["1.0002"] == "small" and procedures["2.0002"] == "small"
    assert field_remainders(doc, field_of) == []
    assert {f["key"]: f["responses"] for f in doc["fields"]} == {"tu-phap": 23, "tnmt": 24}
    # The fields stay published: the procedures beside the small ones went instead.
    assert procedures["1.0001"] == procedures["2.0001"] == "complementary"


async def test_the_field_attack_finds_the_withheld_procedure_with_the_protection_off(
    runtime: Runtime, agency: Agency, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same release without the per-field lines: the adversary above finds P2's three
    dissatisfied raters, so the test before this one can fail."""
    monkeypatch.setattr(releases, "field_lines", lambda *args: [])
    field_of = await seed_two_fields(runtime)
    await release(runtime)
    doc = await latest(runtime, agency.id)
    assert sorted(field_remainders(doc, field_of)) == [("tnmt", 4), ("tu-phap", 3)]
    unit = next(f for f in doc["fields"] if f["key"] == "tu-phap")
    shown = next(p for p in doc["procedures"] if p["key"] == "1.0001")
    assert unit["satisfied"] - shown["satisfied"] == 0  # all three were dissatisfied


async def test_fields_ranked_with_the_criteria_that_drive_dissatisfaction(
    runtime: Runtime, agency: Agency
) -> None:
    await add_agency(runtime, "ubnd-khac", "UBND khác", ["CB01", "CB02"])
    await add_procedures(runtime, [("1.0001", "tu-phap"), ("3.0001", "y-te")])
    await seed(runtime, "ubnd-test", [*spread(30, "1.0001", 5), *spread(30, "3.0001", 1)])
    await seed(runtime, "ubnd-khac", [*spread(20, "1.0001", 4), *spread(10, "3.0001", 2)])
    await release(runtime)
    view = await releases.published(runtime.sessions, THRESHOLDS, agency.id)
    assert [(c.key, c.rank) for c in view.fields] == [("tu-phap", 1), ("y-te", 2)]
    assert view.fields[1].label == "Y tế" and view.fields[1].rate == 0.0
    health = {s.criterion: s for s in view.field_criteria if s.field == "y-te"}
    assert health["3"].zero_share == 100.0 and health["3"].agency == agency.code
    justice = {s.criterion: s for s in view.field_criteria if s.field == "tu-phap"}
    assert justice["3"].zero_share == 0.0
    province = await releases.published(runtime.sessions, THRESHOLDS, None)
    by_key = {c.key: c for c in province.fields}
    assert (by_key["tu-phap"].responses, by_key["y-te"].responses) == (50, 40)
    assert province.fields[0].key == "tu-phap"


@pytest.mark.parametrize("protected", [True, False], ids=["protected", "protection-off"])
async def test_a_province_field_minus_the_agencies_shown_never_reveals_a_withheld_one(
    runtime: Runtime, agency: Agency, monkeypatch: pytest.MonkeyPatch, protected: bool
) -> None:
    """Health is 30 ratings in one agency and 3 in another: the province's health figure
    minus the first agency's would be the second's three (and is, with the lines off)."""
    if not protected:
        monkeypatch.setattr(releases, "province_field_lines", lambda *args: [])
    other = await add_agency(runtime, "ubnd-khac", "UBND khác", ["CB01", "CB02"])
    await add_procedures(runtime, [("1.0001", "tu-phap"), ("3.0001", "y-te")])
    await seed(runtime, "ubnd-test", [*spread(30, "1.0001", 5), *spread(30, "3.0001", 4)])
    await seed(runtime, "ubnd-khac", [*spread(30, "1.0001", 5), *spread(3, "3.0001", 1)])
    await release(runtime)
    province = await latest(runtime, "")
    fields = {f["key"]: f for f in province["fields"]}
    parts = []
    for scope in (agency.id, other.id):
        parts += [f for f in (await latest(runtime, scope))["fields"] if f["key"] == "y-te"]
    left = (fields["y-te"]["responses"] or 0) - sum(
        p["responses"] for p in parts if not p["suppressed"]
    )
    assert any(p["suppressed"] == "small" for p in parts)
    if protected:
        assert fields["y-te"]["suppressed"] or not 0 < left < K
    else:
        assert not fields["y-te"]["suppressed"] and left == 3


def test_field_criteria_follow_the_agencys_own_criterion() -> None:
    """A field's criterion is withheld with the agency's, and the agency's minus the shown
    fields never leaves fewer than k scored responses."""

    class Row:
        def __init__(self, procedure: str, satisfaction: int, n: int) -> None:
            self.agency_id, self.procedure_id = "a", procedure
            self.satisfaction, self.n = satisfaction, n
            self.criteria = '{"3": 0}'

    class Group:
        rated = 0

    class Unit:
        def __init__(self, key: str, n: int) -> None:
            self.key = key
            self.figure = releases.Figure({"responses": n}, K)
            self.group = Group()

    units: Sequence[Any] = [Unit("tu-phap", 20), Unit("y-te", 3)]
    rows = [Row("p1", 5, 20), Row("p2", 1, 3)]
    field_of = {"p1": "tu-phap", "p2": "y-te"}
    own = {"a": [{"criterion": "3", "scored": 23, "dissatisfied": None, "suppressed": False}]}
    result = release_fields.field_criteria(
        rows, field_of, {"a": {"fields": units}}, own, releases.Rule()
    )
    by_field = {c["field"]: c for c in result["a"]}
    assert by_field["tu-phap"]["suppressed"] and by_field["y-te"]["suppressed"]
    own["a"][0]["suppressed"] = True
    result = release_fields.field_criteria(
        rows, field_of, {"a": {"fields": units[:1]}}, own, releases.Rule()
    )
    assert all(c["suppressed"] for c in result["a"])
