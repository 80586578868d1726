"""Procedures and surveys managed in the dashboard within a subtree: a district manager assigns
and unassigns catalogue procedures to its wards and chooses a ward's survey, which the next
dossier registered there gets; only a province admin edits the catalogue; a form edited to reach
outside the subtree is refused (403, audited), and a viewer manages nothing."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select

from bot.dashboard import auth
from bot.runtime import Runtime
from storage import directory, units
from storage.models import Dossier, Procedure
from tests.test_dashboard_manage import PASSWORD, As, _actions, _province


async def _assigned(runtime: Runtime, unit: str, code: str) -> bool:
    tree = await units.load_tree(runtime.sessions)
    found = tree.by_code(unit)
    assert found is not None
    view = await directory.procedure_view(runtime.sessions, found.id, code)
    return view is not None and view[1]


async def test_a_district_manager_assigns_procedures_to_its_wards_only(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    await _province(runtime)
    await auth.create_user(runtime.sessions, "tinh-admin", PASSWORD, "admin")
    await auth.create_user(runtime.sessions, "ql-quan-1", PASSWORD, "manager", "quan-1")
    await auth.create_user(runtime.sessions, "xem-quan-1", PASSWORD, "viewer", "quan-1")

    admin = await As.login(client, "tinh-admin", PASSWORD)
    added = await admin.post(
        "/admin/catalogue/procedure", code="2.000815", name="Chứng thực bản sao", field="tu-phap"
    )
    assert added == (303, "/admin/catalogue#procedure-2.000815")
    assert (await admin.post("/admin/catalogue/procedure", code="1.001234", name="Khai sinh"))[
        0
    ] == 303
    bad_field = await admin.post("/admin/catalogue/procedure", code="3.1", name="X", field="nope")
    assert bad_field[0] == 400 and "lĩnh vực" in bad_field[1]
    bad_code = await admin.post("/admin/catalogue/procedure", code="a b/c", name="X")
    assert bad_code[0] == 400 and "mã quốc gia" in bad_code[1]
    async with runtime.sessions() as session:
        rows = {p.code: p for p in (await session.execute(select(Procedure))).scalars()}
    assert set(rows) == {"1.001234", "2.000815"}
    assert (rows["2.000815"].field, rows["1.001234"].name) == ("tu-phap", "Khai sinh")

    manager = await As.login(client, "ql-quan-1", PASSWORD)
    status, page = await manager.get("/admin/catalogue")
    assert status == 200 and 'data-procedure="2.000815"' in page and "Tư pháp" in page
    assert 'data-cell="phuong-a:2.000815"' in page
    assert "phuong-x" not in page and 'data-testid="procedure-set"' not in page

    assert (await manager.post("/admin/catalogue/assign", unit="phuong-a", code="2.000815", active="1"))[0] == 303  # fmt: skip
    assert await _assigned(runtime, "phuong-a", "2.000815")
    status, page = await manager.get("/admin/catalogue")
    assert 'data-testid="toggle-phuong-a-2.000815"' in page and "Bỏ giao" in page

    # Forms edited to reach another district's ward, or the national catalogue: refused.
    outside = await manager.post(
        "/admin/catalogue/assign", unit="phuong-x", code="2.000815", active="1"
    )
    assert outside[0] == 403
    assert not await _assigned(runtime, "phuong-x", "2.000815")
    renamed = await manager.post("/admin/catalogue/procedure", code="2.000815", name="Đổi tên")
    assert renamed[0] == 403
    unknown = await manager.post("/admin/catalogue/assign", unit="phuong-a", code="9.9", active="1")
    assert unknown[0] == 404

    assert (await manager.post("/admin/catalogue/assign", unit="phuong-a", code="2.000815", active="0"))[0] == 303  # fmt: skip
    assert not await _assigned(runtime, "phuong-a", "2.000815")

    actions = await _actions(runtime)
    assert ("admin:ql-quan-1", "procedure.unassign", {"agency": "phuong-a", "procedure": "2.000815"}) in actions  # fmt: skip
    assert (
        "admin:tinh-admin",
        "procedure.add",
        {"procedure": "2.000815", "name": "Chứng thực bản sao", "field": "tu-phap"},
    ) in actions
    assert any(a == "access.denied" and d.get("unit") == "phuong-x" for _, a, d in actions)
    async with runtime.sessions() as session:
        name = await session.scalar(select(Procedure.name).where(Procedure.code == "2.000815"))
    assert name == "Chứng thực bản sao"

    viewer = await As.login(client, "xem-quan-1", PASSWORD)
    assert (await viewer.get("/admin/catalogue"))[0] == 403
    viewer.csrf = manager.csrf  # even with a token, a viewer's form changes nothing
    refused = await viewer.post(
        "/admin/catalogue/assign", unit="phuong-a", code="2.000815", active="1"
    )
    assert refused[0] == 403 and not await _assigned(runtime, "phuong-a", "2.000815")


async def test_the_survey_a_manager_chooses_for_a_ward_is_the_one_its_next_dossier_gets(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    await _province(runtime)
    await auth.create_user(runtime.sessions, "ql-quan-1", PASSWORD, "manager", "quan-1")
    manager = await As.login(client, "ql-quan-1", PASSWORD)
    status, page = await manager.get("/admin/catalogue")
    assert (
        status == 200
        and 'data-testid="survey-phuong-a"' in page
        and 'data-testid="survey-quan-1"' not in page
    )

    chosen = await manager.post("/admin/catalogue/survey", unit="phuong-a", survey="hanoi-4")
    assert chosen == (303, "/admin/catalogue#survey-phuong-a")
    for target, survey, expected in (
        ("phuong-x", "hanoi-4", 403),  # another district's ward
        ("quan-1", "hanoi-4", 403),  # its own unit is the province's to configure
        ("phuong-b", "nope", 400),
    ):
        refused = await manager.post("/admin/catalogue/survey", unit=target, survey=survey)
        assert refused[0] == expected, (target, survey)
    _, page = await manager.get("/admin/catalogue")
    assert '<option value="hanoi-4" selected>' in page

    registered: dict[str, str | None] = {}
    for ward in ("phuong-a", "phuong-b"):
        key = await runtime.service.create_api_key(ward, "tests")
        answer = await client.post(
            "/api/v1/dossiers",
            headers={"Authorization": f"Bearer {key}"},
            json={"dossier_code": f"HS-{ward}"},
        )
        assert answer.status == 201, await answer.text()
        tree = await units.load_tree(runtime.sessions)
        unit = tree.by_code(ward)
        assert unit is not None
        async with runtime.sessions() as session:
            registered[ward] = await session.scalar(
                select(Dossier.survey_id).where(Dossier.agency_id == unit.id)
            )
    assert registered == {"phuong-a": "hanoi-4", "phuong-b": runtime.settings.default_survey}

    assert (await manager.post("/admin/catalogue/survey", unit="phuong-a", survey=""))[0] == 303
    actions = await _actions(runtime)
    assert ("admin:ql-quan-1", "unit.survey", {"unit": "phuong-a", "from": "hanoi-4", "to": None}) in actions  # fmt: skip
    assert any(a == "access.denied" and d.get("unit") == "phuong-x" for _, a, d in actions)
