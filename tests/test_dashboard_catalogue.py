"""Procedures and surveys managed in the dashboard within a subtree: a district manager assigns
and unassigns catalogue procedures to its wards and chooses a ward's survey, which the next
dossier registered there gets; only a province admin edits the catalogue; a form edited to reach
outside the subtree is refused (403, audited), and a viewer manages nothing."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select

from bot.dashboard import auth
from bot.runtime import Runtime
from storage import directory, units
from storage.models import Dossier, Procedure, SurveyLedger
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


async def _register(
    client: TestClient[Any, Any], key: str, code: str, **extra: str
) -> tuple[int, str | None]:
    """Register a dossier through the agency API; its status and the survey it was given."""
    answer = await client.post(
        "/api/v1/dossiers",
        headers={"Authorization": f"Bearer {key}"},
        json={"dossier_code": code, **extra},
    )
    return answer.status, await answer.text()


async def _surveys(runtime: Runtime) -> dict[tuple[str, str | None], str | None]:
    """Every dossier's (unit, procedure) → survey (one dossier each in these tests)."""
    tree = await units.load_tree(runtime.sessions)
    async with runtime.sessions() as session:
        rows = await session.execute(
            select(Dossier.agency_id, Procedure.code, Dossier.survey_id).outerjoin(
                Procedure, Procedure.id == Dossier.procedure_id
            )
        )
        return {(tree.units[a].code, p): s for a, p, s in rows}


async def test_a_dossier_gets_its_procedure_s_survey_before_its_unit_s_and_the_default(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    """The precedence at registration: the survey named, else the procedure's (chosen by a
    province admin in the catalogue), else the unit's, else the deployment's default."""
    await _province(runtime)
    await auth.create_user(runtime.sessions, "tinh-admin", PASSWORD, "admin")
    await auth.create_user(runtime.sessions, "ql-quan-1", PASSWORD, "manager", "quan-1")
    admin = await As.login(client, "tinh-admin", PASSWORD)
    await admin.post("/admin/catalogue/procedure", code="2.000815", name="Chứng thực bản sao")
    chosen = await admin.post(
        "/admin/catalogue/procedure-survey", code="1.001234", survey="zns-5-star"
    )
    assert chosen == (303, "/admin/catalogue#procedure-1.001234")
    assert (await admin.post("/admin/catalogue/survey", unit="phuong-a", survey="hanoi-4"))[0] == 303  # fmt: skip
    assert (await admin.post("/admin/catalogue/procedure-survey", code="1.001234", survey="nope"))[0] == 400  # fmt: skip
    assert (await admin.post("/admin/catalogue/procedure-survey", code="9.9", survey="hanoi-4"))[0] == 404  # fmt: skip
    status, page = await admin.get("/admin/catalogue")
    assert status == 200
    assert re.search(
        r'data-testid="procedure-survey-1.001234">.*?<option value="zns-5-star" selected>', page
    )

    # A manager sees the procedure's survey but may not choose it (the catalogue is the
    # province's): refused, audited, unchanged.
    manager = await As.login(client, "ql-quan-1", PASSWORD)
    status, page = await manager.get("/admin/catalogue")
    assert re.search(r'<span data-testid="procedure-survey-1.001234">zns-5-star</span>', page)
    refused = await manager.post(
        "/admin/catalogue/procedure-survey", code="1.001234", survey="hanoi-4"
    )
    assert refused[0] == 403

    keys = {w: await runtime.service.create_api_key(w, "tests") for w in ("phuong-a", "phuong-b")}
    for ward, dossier, extra in (
        ("phuong-a", "HS-1", {"procedure_code": "1.001234"}),  # the procedure's
        ("phuong-a", "HS-2", {"procedure_code": "2.000815"}),  # no survey of its own: the unit's
        ("phuong-b", "HS-3", {"procedure_code": "1.001234"}),  # the procedure's, anywhere
        ("phuong-b", "HS-4", {}),  # no procedure, no unit survey: the default
    ):
        status, text = await _register(client, keys[ward], dossier, **extra)
        assert status == 201, text
    named = await _register(
        client, keys["phuong-a"], "HS-5", procedure_code="1.001234", survey="mot-cua"
    )
    assert named[0] == 201
    assert await _surveys(runtime) == {
        ("phuong-a", "1.001234"): "mot-cua",  # HS-5: the survey named wins
        ("phuong-a", "2.000815"): "hanoi-4",
        ("phuong-b", "1.001234"): "zns-5-star",
        ("phuong-b", None): runtime.settings.default_survey,
    }
    # A result for a dossier never registered: the procedure's survey too.
    unregistered = {
        "dossier_code": "HS-7",
        "procedure_code": "1.001234",
        "returned_at": "2026-12-01",
    }
    async with client.post(
        "/api/v1/results",
        json={"results": [unregistered]},
        headers={"Authorization": f"Bearer {keys['phuong-b']}"},
    ) as answer:
        assert answer.status == 200, await answer.text()
    async with runtime.sessions() as session:
        ledgers = list((await session.execute(select(SurveyLedger.survey_id))).scalars())
    assert ledgers == ["zns-5-star"]

    # Cleared: the procedure's dossiers get their unit's again; both changes audited.
    assert (await admin.post("/admin/catalogue/procedure-survey", code="1.001234", survey=""))[0] == 303  # fmt: skip
    assert (await _register(client, keys["phuong-b"], "HS-6", procedure_code="1.001234"))[0] == 201
    async with runtime.sessions() as session:
        given = list(
            (
                await session.execute(select(Dossier.survey_id).order_by(Dossier.created_at))
            ).scalars()
        )
    assert given[-1] == runtime.settings.default_survey
    actions = await _actions(runtime)
    for change in (
        {"procedure": "1.001234", "from": None, "to": "zns-5-star"},
        {"procedure": "1.001234", "from": "zns-5-star", "to": None},
    ):
        assert ("admin:tinh-admin", "procedure.survey", change) in actions
    denied = {"path": "/admin/catalogue/procedure-survey"}
    assert ("admin:ql-quan-1", "access.denied", denied) in actions


async def test_a_province_admin_clears_a_procedure_s_field_from_the_edit_form(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    await _province(runtime)
    await auth.create_user(runtime.sessions, "tinh-admin", PASSWORD, "admin")
    admin = await As.login(client, "tinh-admin", PASSWORD)
    await admin.post(
        "/admin/catalogue/procedure", code="2.000815", name="Chứng thực bản sao", field="tu-phap"
    )
    # "Edit" fills the form with the procedure's values, its field selected.
    status, page = await admin.get("/admin/catalogue?edit=2.000815")
    assert status == 200 and "Sửa thủ tục 2.000815" in page
    assert 'value="Chứng thực bản sao"' in page and '<option value="tu-phap" selected>' in page

    cleared = await admin.post(
        "/admin/catalogue/procedure", code="2.000815", name="Chứng thực bản sao", field=""
    )
    assert cleared == (303, "/admin/catalogue#procedure-2.000815")
    async with runtime.sessions() as session:
        field = await session.scalar(select(Procedure.field).where(Procedure.code == "2.000815"))
    assert field is None
    _, page = await admin.get("/admin/catalogue")
    assert re.search(r'data-testid="field-2.000815">\s*</td>', page) or re.search(
        r'data-testid="field-2.000815">[^<]*–', page
    )
    assert (
        "admin:tinh-admin",
        "procedure.edit",
        {
            "procedure": "2.000815",
            "name": "Chứng thực bản sao",
            "field": None,
            "from": {"name": "Chứng thực bản sao", "field": "tu-phap"},
        },
    ) in await _actions(runtime)


async def test_the_catalogue_pages_its_procedures_and_units_and_filters_by_code_or_name(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    """120 procedures and 20 units: 50 rows and 12 unit columns a page, page links labelled
    for a screen reader, a filter that ignores case and diacritics, and a change made on page 2
    that comes back to page 2."""
    ids = await _province(runtime)
    for n in range(13):
        await units.create_unit(runtime.sessions, f"xa-{n:02}", f"Xã {n}", "commune", ids["quan-2"])
    entries = [directory.ProcedureEntry(f"9.{n:03}", f"Thủ tục số {n}", None) for n in range(119)]
    async with runtime.sessions() as session:
        session.add_all(Procedure(code=e.code, name=e.name) for e in entries)
        await session.commit()
    await auth.create_user(runtime.sessions, "tinh-admin", PASSWORD, "admin")
    admin = await As.login(client, "tinh-admin", PASSWORD)

    status, page = await admin.get("/admin/catalogue")
    assert status == 200 and page.count("data-procedure=") == 50
    assert page.count("<th>xa-") + page.count("<th>phuong-") + page.count("<th>quan-") <= 12
    assert 'aria-label="Các trang thủ tục"' in page and "1–50 trên 120" in page
    assert 'aria-current="page"' in page and 'aria-label="Trang 3 trên 3"' in page
    assert 'aria-label="Các trang cột đơn vị"' in page

    status, page = await admin.get("/admin/catalogue?page=3")
    assert page.count("data-procedure=") == 20 and "101–120 trên 120" in page
    assert (await admin.get("/admin/catalogue?page=99"))[1].count("data-procedure=") == 20
    _, columns = await admin.get("/admin/catalogue?units=2")
    assert 'data-cell="xa-12:1.001234"' in columns and 'data-cell="tinh:1.001234"' not in columns
    for bad in ("abc", "0", "-1"):
        assert (await admin.get(f"/admin/catalogue?page={bad}"))[0] == 400

    # "dang ky khai" finds "Đăng ký khai sinh"; a code's prefix finds its procedures.
    _, found = await admin.get("/admin/catalogue?q=dang+ky+KHAI")
    assert found.count("data-procedure=") == 1 and 'data-procedure="1.001234"' in found
    assert "Tìm thấy 1 thủ tục." in found
    _, found = await admin.get("/admin/catalogue?q=9.11")
    assert found.count("data-procedure=") == 9  # 9.110 … 9.118
    _, none = await admin.get("/admin/catalogue?q=kh%C3%B4ng+c%C3%B3")
    assert "Không có thủ tục nào khớp." in none

    # A form on page 2 of a filtered list brings its reader back there.
    _, page = await admin.get("/admin/catalogue?q=th%E1%BB%A7+t%E1%BB%A5c&page=2")
    assert 'data-procedure="9.050"' in page
    back = await admin.post(
        "/admin/catalogue/assign", unit="phuong-a", code="9.050", active="1", q="thủ tục", page="2"
    )
    assert back == (303, "/admin/catalogue?q=th%E1%BB%A7+t%E1%BB%A5c&page=2#procedure-9.050")
    assert await _assigned(runtime, "phuong-a", "9.050")


async def test_the_officials_list_is_paged_and_filtered_within_the_subtree(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    await _province(runtime)
    tree = await units.load_tree(runtime.sessions)
    ward, other = tree.by_code("phuong-a"), tree.by_code("phuong-x")
    assert ward is not None and other is not None
    staff = [directory.OfficialEntry(f"CB{n:03}", f"Nguyễn Văn {n}") for n in range(60)]
    today = dt.date(2026, 12, 1)
    await directory.sync_officials(runtime.sessions, ward.id, staff, whole=False, today=today)
    await directory.sync_officials(
        runtime.sessions, other.id, [directory.OfficialEntry("CB900", "Lê Thị Khác")], False, today
    )
    await auth.create_user(runtime.sessions, "ql-quan-1", PASSWORD, "manager", "quan-1")
    manager = await As.login(client, "ql-quan-1", PASSWORD)

    status, page = await manager.get("/admin/staff")
    assert status == 200 and page.count("data-official=") == 50
    assert 'aria-label="Các trang cán bộ"' in page and 'aria-label="Trang 2 trên 2"' in page
    _, second = await manager.get("/admin/staff?page=2")
    assert second.count("data-official=") == 10 and "CB900" not in second
    _, found = await manager.get("/admin/staff?q=nguyen+van+5")
    assert 'data-official="phuong-a:CB005"' in found and found.count("data-official=") == 11
    _, outside = await manager.get("/admin/staff?q=CB900")
    assert "data-official=" not in outside and "Không có cán bộ nào khớp." in outside
    assert (await manager.get("/admin/staff?page=x"))[0] == 400

    left = await manager.post("/admin/staff/leave", unit="phuong-a", code="CB055", page="2")
    assert left == (303, "/admin/staff?page=2")
