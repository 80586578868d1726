"""Officials managed in the dashboard within a subtree: a district manager adds an official to
one of its wards, moves one between its wards and records one as left; a left official is then
refused by the result API; reaching a unit outside the subtree by a form field is refused
(403, audited), and a viewer manages nothing."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from bot.dashboard import auth
from bot.runtime import Runtime
from storage import directory
from tests.conftest import today
from tests.test_dashboard_manage import PASSWORD, As, _actions, _province


async def test_a_district_manager_adds_moves_and_retires_officials_of_its_wards(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    await _province(runtime)
    await auth.create_user(runtime.sessions, "ql-quan-1", PASSWORD, "manager", "quan-1")
    await auth.create_user(runtime.sessions, "xem-quan-1", PASSWORD, "viewer", "quan-1")
    manager = await As.login(client, "ql-quan-1", PASSWORD)
    status, page = await manager.get("/admin/staff")
    assert status == 200 and 'data-testid="official-create"' in page
    assert "phuong-x" not in page  # another district's ward is not offered

    added = await manager.post("/admin/staff/add", unit="phuong-a", code="CB10", name="Trần Thị B")
    assert added[0] == 303
    await manager.post("/admin/staff/add", unit="phuong-a", code="CB11", name="Lê Văn C")
    rows = {(r.unit_code, r.code): r for r in await directory.officials_of(runtime.sessions, None)}
    assert rows["phuong-a", "CB10"].status == "active"

    # A form field edited to reach another district's ward: refused, audited, nothing written.
    outside = await manager.post("/admin/staff/add", unit="phuong-x", code="CB99", name="X")
    assert outside[0] == 403
    moved_out = await manager.post("/admin/staff/move", unit="phuong-a", code="CB11", to="phuong-x")
    assert moved_out[0] == 403
    assert not any(r.code == "CB99" for r in await directory.officials_of(runtime.sessions, None))

    assert (await manager.post("/admin/staff/move", unit="phuong-a", code="CB11", to="phuong-b"))[
        0
    ] == 303
    assert (await manager.post("/admin/staff/leave", unit="phuong-a", code="CB10"))[0] == 303
    status, page = await manager.get("/admin/staff")
    assert 'data-official="phuong-a:CB10"' in page and "phuong-b:CB11" in page
    rows = {(r.unit_code, r.code): r for r in await directory.officials_of(runtime.sessions, None)}
    assert rows["phuong-a", "CB10"].status == "left"
    assert (rows["phuong-a", "CB11"].status, rows["phuong-a", "CB11"].moved_to) == (
        "moved",
        "phuong-b",
    )
    assert rows["phuong-b", "CB11"].status == "active"

    # The one-stop system of the ward can no longer name the official who left.
    key = await runtime.service.create_api_key("phuong-a", "tests")
    refused = await client.post(
        "/api/v1/results",
        headers={"Authorization": f"Bearer {key}"},
        json={"dossier_code": "HS-9", "returned_at": today().isoformat(), "official_code": "CB10"},
    )
    assert refused.status == 422 and (await refused.json())["error"] == "official_left"

    actions = await _actions(runtime)
    assert ("admin:ql-quan-1", "official.leave", {"agency": "phuong-a", "official": "CB10"}) in (
        actions
    )
    assert any(a == "access.denied" and d.get("unit") == "phuong-x" for _, a, d in actions)

    viewer = await As.login(client, "xem-quan-1", PASSWORD)
    assert (await viewer.get("/admin/staff"))[0] == 403
