"""Managing units, API keys and logins from the dashboard, scoped to a subtree: every form,
URL and export parameter edited to reach outside it is refused politely (403, audited), never
a leak nor a 500; every change is audited."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from bot.dashboard import accounts, auth
from bot.runtime import Runtime
from storage import units
from storage.models import Official, Procedure, Response
from tests.adminseed import Batch, release, seed

SHAPE = [
    ("tinh", None, "province"),
    ("so-yte", "tinh", "department"),
    ("quan-1", "tinh", "district"),
    ("phuong-a", "quan-1", "commune"),
    ("phuong-b", "quan-1", "commune"),
    ("quan-2", "tinh", "district"),
    ("phuong-x", "quan-2", "commune"),
]
PASSWORD = "mat-khau-dai"


async def _province(runtime: Runtime) -> dict[str, str]:
    async with runtime.sessions() as session:
        session.add(Procedure(code="1.001234", name="Đăng ký khai sinh"))
        await session.commit()
    ids: dict[str, str] = {}
    for code, parent, kind in SHAPE:
        unit = await units.create_unit(
            runtime.sessions, code, f"Đơn vị {code}", kind, ids[parent] if parent else None
        )
        ids[code] = unit.id
    return ids


class As:
    """One signed-in browser: its session cookie and CSRF token, sent explicitly, so several
    logins can act in one test."""

    def __init__(self, client: TestClient[Any, Any], cookie: str) -> None:
        self.client, self.cookie, self.csrf = client, cookie, ""

    @classmethod
    async def login(cls, client: TestClient[Any, Any], username: str, password: str) -> As:
        client.session.cookie_jar.clear()
        form = await client.get("/admin/login")
        token = re.search(r'name="csrf" value="([^"]+)"', await form.text())
        assert token
        answer = await client.post(
            "/admin/login",
            data={"csrf": token.group(1), "username": username, "password": password},
            allow_redirects=False,
        )
        assert answer.status == 303, await answer.text()
        cookie = answer.cookies["sb_admin"].value
        client.session.cookie_jar.clear()
        me = cls(client, cookie)
        await me.get("/admin/units")  # reads the CSRF token (or is sent to /admin/password)
        return me

    async def get(self, path: str) -> tuple[int, str]:
        answer = await self.client.get(
            path, headers={"Cookie": f"sb_admin={self.cookie}"}, allow_redirects=False
        )
        text = await answer.text()
        found = re.search(r'name="csrf" value="([^"]+)"', text)
        if found:
            self.csrf = found.group(1)
        return answer.status, answer.headers.get("Location", "") or text

    async def post(self, path: str, **fields: str) -> tuple[int, str]:
        answer = await self.client.post(
            path,
            data={"csrf": self.csrf, **fields},
            headers={"Cookie": f"sb_admin={self.cookie}"},
            allow_redirects=False,
        )
        return answer.status, answer.headers.get("Location", "") or await answer.text()


async def _actions(runtime: Runtime) -> list[tuple[str, str, dict[str, Any]]]:
    return [(e.actor, e.action, e.detail) for e in await runtime.audit.recent(limit=500)]


async def test_a_province_admin_builds_the_tree_and_a_district_manager_only_its_subtree(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    ids = await _province(runtime)
    await auth.create_user(runtime.sessions, "tinh-admin", PASSWORD, "admin")
    await auth.create_user(runtime.sessions, "ql-quan-1", PASSWORD, "manager", "quan-1")
    admin = await As.login(client, "tinh-admin", PASSWORD)

    # The province admin creates a ward under the district.
    status, where = await admin.post(
        "/admin/units/create", parent="quan-1", code="phuong-c", name="Phường C", kind="commune"
    )
    assert (status, where) == (303, "/admin/units?unit=phuong-c#unit-phuong-c")
    tree = await units.load_tree(runtime.sessions)
    ward = tree.by_code("phuong-c")
    assert ward is not None and ward.parent_id == ids["quan-1"] and ward.name == "Phường C"
    # Without the session's CSRF token nothing changes.
    forged = admin.csrf
    admin.csrf = "khong-dung"
    assert (await admin.post("/admin/units/create", parent="quan-1", code="gia", name="G"))[
        0
    ] == 403
    admin.csrf = forged
    assert (await units.load_tree(runtime.sessions)).by_code("gia") is None
    status, page = await admin.get("/admin/units")
    assert 'data-unit="phuong-c" data-depth="2"' in page
    # Bad input: a 400 page naming what is wrong, in Vietnamese; never a 500.
    status, page = await admin.post(
        "/admin/units/create", parent="quan-1", code="Mã Sai!", name="X", kind="commune"
    )
    assert status == 400 and "Mã đơn vị" in page
    status, page = await admin.post(
        "/admin/units/create", parent="quan-1", code="phuong-c", name="X", kind="commune"
    )
    assert status == 400 and "Đã có đơn vị mang mã này" in page
    status, _ = await admin.post("/admin/units/create", parent="khong-co", code="x", name="X")
    assert status == 404
    status, page = await admin.post("/admin/units/move", unit="quan-1", parent="phuong-a")
    assert status == 400 and "không thể" in page.lower()

    manager = await As.login(client, "ql-quan-1", PASSWORD)
    status, page = await manager.get("/admin/units")
    assert status == 200 and 'data-unit="phuong-a"' in page and 'data-unit="quan-2"' not in page
    english = await manager.get("/admin/units?lang=en")
    assert (
        "New unit" in english[1] and "Move under" in english[1] and "Đơn vị mới" not in english[1]
    )
    assert 'data-unit="so-yte"' not in page
    # Inside its subtree: create under a ward, rename and move a ward.
    assert (
        await manager.post(
            "/admin/units/create", parent="phuong-a", code="mot-cua-a", name="Bộ phận một cửa",
            kind="desk",
        )
    )[0] == 303  # fmt: skip
    assert (
        await manager.post("/admin/units/edit", unit="phuong-b", name="Phường Bé", kind="commune")
    )[0] == 303
    assert (await manager.post("/admin/units/move", unit="phuong-c", parent="phuong-a"))[0] == 303
    tree = await units.load_tree(runtime.sessions)
    assert tree.units[ids["phuong-b"]].name == "Phường Bé"
    assert tree.ancestors(tree.by_code("phuong-c").id)[:2] == [ids["phuong-a"], ids["quan-1"]]  # type: ignore[union-attr]
    # Edited form fields reaching outside the subtree: 403, polite, audited, nothing changed.
    for path, fields in (
        ("/admin/units/create", {"parent": "quan-2", "code": "lot", "name": "L", "kind": "desk"}),
        ("/admin/units/create", {"parent": "", "code": "goc", "name": "G", "kind": "province"}),
        ("/admin/units/edit", {"unit": "phuong-x", "name": "Đổi", "kind": "commune"}),
        ("/admin/units/edit", {"unit": "quan-1", "name": "Đổi", "kind": "district"}),
        ("/admin/units/move", {"unit": "phuong-a", "parent": "quan-2"}),
        ("/admin/units/move", {"unit": "phuong-x", "parent": "quan-1"}),
        ("/admin/units/move", {"unit": "phuong-a", "parent": ""}),
        ("/admin/units/edit", {"unit": "khong-co", "name": "Đổi", "kind": "commune"}),
    ):
        status, page = await manager.post(path, **fields)
        assert status == 403 and 'data-testid="error"' in page, (path, fields)
    after = await units.load_tree(runtime.sessions)
    assert after.units[ids["phuong-x"]].name == "Đơn vị phuong-x"
    assert after.units[ids["phuong-a"]].parent_id == ids["quan-1"]
    assert after.by_code("lot") is None and after.by_code("goc") is None
    audit = await _actions(runtime)
    assert ("admin:tinh-admin", "unit.create") in {(a, b) for a, b, _ in audit}
    assert any(b == "unit.move" and d["to"] == "phuong-a" for _, b, d in audit)
    assert any(b == "unit.rename" and d["to"] == "Phường Bé" for _, b, d in audit)
    denied = [d for a, b, d in audit if a == "admin:ql-quan-1" and b == "access.denied"]
    assert len(denied) >= 7


async def test_keys_are_shown_once_revoked_at_once_and_scoped(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    await _province(runtime)
    await auth.create_user(runtime.sessions, "ql-quan-1", PASSWORD, "manager", "quan-1")
    other_key = await runtime.service.create_api_key("phuong-x", "quan-2's")
    manager = await As.login(client, "ql-quan-1", PASSWORD)
    status, page = await manager.post("/admin/keys/create", unit="phuong-a", label="một cửa A")
    assert status == 201
    raw = re.search(r'data-testid="new-key">(sbk_[^<]+)<', page)
    assert raw, page
    key = raw.group(1)
    # Shown once: the listing afterwards holds its prefix only.
    status, listing = await manager.get("/admin/keys")
    assert key not in listing and key[:10] in listing and "một cửa A" in listing
    assert "quan-2&#39;s" not in listing and "quan-2's" not in listing
    assert 'data-testid="last-used">chưa dùng' in listing
    api = {"Authorization": f"Bearer {key}"}
    assert (
        await client.post("/api/v1/dossiers", headers=api, json={"dossier_code": "HS-1"})
    ).status == 201
    status, listing = await manager.get("/admin/keys")
    assert 'data-testid="last-used">chưa dùng' not in listing
    key_id = re.search(r'<tr data-key="([0-9a-f]+)" data-label="một cửa A"', listing)
    assert key_id
    assert (await manager.post("/admin/keys/revoke", key=key_id.group(1)))[0] == 303
    refused = await client.post("/api/v1/dossiers", headers=api, json={"dossier_code": "HS-2"})
    assert refused.status == 401 and (await refused.json())["error"] == "invalid_api_key"
    # Another subtree's key, by id in the form: 403 and it keeps working; a key for a unit
    # outside, by an edited field: 403, no key made.
    async with runtime.sessions() as session:
        from sqlalchemy import select

        from storage.models import ApiKey

        others = list(
            (await session.execute(select(ApiKey.id).where(ApiKey.label == "quan-2's"))).scalars()
        )
    assert (await manager.post("/admin/keys/revoke", key=others[0]))[0] == 403
    still = {"Authorization": f"Bearer {other_key}"}
    assert (
        await client.post("/api/v1/dossiers", headers=still, json={"dossier_code": "HS-3"})
    ).status == 201
    assert (await manager.post("/admin/keys/create", unit="phuong-x", label="lén"))[0] == 403
    assert (await manager.post("/admin/keys/revoke", key="0" * 32))[0] == 404
    assert (await manager.post("/admin/keys/create", unit="phuong-a", label=""))[0] == 400
    audit = await _actions(runtime)
    assert [b for _, b, d in audit if b.startswith("apikey.")].count("apikey.revoke") == 1
    assert any(b == "apikey.create" and d["agency"] == "phuong-a" for _, b, d in audit)


async def test_logins_created_disabled_reset_and_forced_within_the_subtree(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    await _province(runtime)
    await auth.create_user(runtime.sessions, "ql-quan-1", PASSWORD, "manager", "quan-1")
    await auth.create_user(runtime.sessions, "xem-quan-2", PASSWORD, "viewer", "quan-2")
    await auth.create_user(runtime.sessions, "ql-khac", PASSWORD, "manager", "quan-1")
    manager = await As.login(client, "ql-quan-1", PASSWORD)
    status, _ = await manager.post(
        "/admin/logins/create", username="xem-a", role="viewer", unit="phuong-a", password=PASSWORD
    )
    assert status == 303
    # A manager hands out viewer logins of its subtree only.
    for fields in (
        {"username": "ql-moi", "role": "manager", "unit": "phuong-a"},
        {"username": "sep", "role": "admin", "unit": ""},
        {"username": "xem-x", "role": "viewer", "unit": "phuong-x"},
    ):
        assert (await manager.post("/admin/logins/create", password=PASSWORD, **fields))[0] == 403
    status, page = await manager.post(
        "/admin/logins/create", username="ngan", role="viewer", unit="phuong-a", password="ngan"
    )
    assert status == 400 and "ít nhất 8" in page
    status, page = await manager.get("/admin/logins")
    assert 'data-login="xem-a"' in page and 'data-login="xem-quan-2"' not in page

    # The new viewer must choose its own password first; until then every page sends it there.
    viewer = await As.login(client, "xem-a", PASSWORD)
    assert await viewer.get("/admin/") == (303, "/admin/password")
    await viewer.get("/admin/password")
    status, where = await viewer.post(
        "/admin/password", current=PASSWORD, new="mat-khau-moi", again="mat-khau-moi"
    )
    assert (status, where) == (303, "/admin/")
    assert (await viewer.get("/admin/"))[0] == 200

    ids = {login.username: login.id for login in await _logins(runtime)}
    # Disable: the viewer's session ends at once.
    assert (await manager.post("/admin/logins/disable", login=ids["xem-a"]))[0] == 303
    assert await viewer.get("/admin/") == (303, "/admin/login")
    client.session.cookie_jar.clear()
    # Reset (and enable): a new password, which must be changed at the next sign-in.
    assert (await manager.post("/admin/logins/disable", login=ids["xem-a"], enable="1"))[0] == 303
    assert (
        await manager.post("/admin/logins/reset", login=ids["xem-a"], password="dat-lai-mat-khau")
    )[0] == 303
    again = await As.login(client, "xem-a", "dat-lai-mat-khau")
    assert await again.get("/admin/ranking") == (303, "/admin/password")
    assert (await manager.post("/admin/logins/force", login=ids["xem-a"]))[0] == 303
    # Outside the subtree, another manager, or itself: refused, nothing changed.
    for target in ("xem-quan-2", "ql-khac", "ql-quan-1"):
        for path in ("/admin/logins/disable", "/admin/logins/force"):
            assert (await manager.post(path, login=ids[target]))[0] == 403, (path, target)
    assert (await manager.post("/admin/logins/disable", login="f" * 32))[0] == 404
    assert not any(login.disabled for login in await _logins(runtime) if login.username != "xem-a")
    audit = {(b, d.get("username")) for _, b, d in await _actions(runtime)}
    for entry in (
        ("login.create", "xem-a"), ("login.disable", "xem-a"), ("login.enable", "xem-a"),
        ("login.reset", "xem-a"), ("login.force_change", "xem-a"),
    ):  # fmt: skip
        assert entry in audit, entry


async def _logins(runtime: Runtime) -> list[Any]:
    return await accounts.listing(runtime.sessions, None)


async def test_a_district_viewer_sees_its_subtree_only_whatever_the_url_or_export_says(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    await _province(runtime)
    for code, n in (
        ("quan-1", 6),
        ("phuong-a", 12),
        ("phuong-b", 14),
        ("phuong-x", 20),
        ("so-yte", 9),
    ):
        await seed(runtime, code, [Batch(n, None)])
    assert await release(runtime) == ["2026-10"]
    await auth.create_user(runtime.sessions, "xem-quan-1", PASSWORD, "viewer", "quan-1")
    viewer = await As.login(client, "xem-quan-1", PASSWORD)
    status, ranking = await viewer.get("/admin/ranking")
    assert status == 200
    shown = set(re.findall(r'data-unit="([^"]+)"', ranking))
    assert shown == {"quan-1", "phuong-a", "phuong-b"}
    # Ranked among their own kind: the district is never ranked against its own wards.
    district, wards = ranking.split('data-kind="commune"')
    assert 'data-unit="quan-1"' in district and 'data-kind="district"' in district
    ranks = re.findall(r'data-unit="(phuong-[ab])">\s*<td class="n" data-k="rank">(\d)', wards)
    assert ranks == [("phuong-b", "1"), ("phuong-a", "2")]  # 14 ratings above 12, all satisfied
    assert "phuong-x" not in ranking and "so-yte" not in ranking and "Đơn vị tinh" not in ranking
    assert (await viewer.get("/admin/officials?agency=phuong-a"))[0] == 200
    # Coverage and criteria rolled up: the district's subtree row (6 + 12 + 14 reported).
    status, coverage = await viewer.get("/admin/coverage")
    row = re.search(r'data-coverage="quan-1:subtree".*?data-k="reported">([^<]*)<', coverage, re.S)
    assert status == 200 and row and row.group(1) == "32"
    status, criteria = await viewer.get("/admin/criteria")
    assert 'data-criterion="quan-1:3:subtree"' in criteria and "phuong-x" not in criteria
    for path in (
        "/admin/?agency=quan-2", "/admin/ranking?agency=phuong-x", "/admin/coverage?agency=tinh",
        "/admin/?agency=khong-co", "/admin/units", "/admin/keys", "/admin/logins",
        "/admin/audit",
    ):  # fmt: skip
        status, page = await viewer.get(path)
        assert status == 403 and "phuong-x" not in page, path
    # Export parameters: the unit in the URL or the form, edited to another district.
    await viewer.get("/admin/exports")
    for path, fields in (
        ("/admin/exports/download?agency=quan-2", {}),
        ("/admin/exports/download", {"agency": "phuong-x"}),
    ):
        status, page = await viewer.post(path, level="agency", format="csv", **fields)
        assert status == 403 and "phuong-x," not in page
    status, csv = await viewer.post(
        "/admin/exports/download", level="agency", format="csv", agency="phuong-a"
    )
    assert status == 200 and "phuong-a" in csv and "phuong-b" not in csv
    status, csv = await viewer.post("/admin/exports/download", level="agency", format="csv")
    assert status == 200
    assert {"quan-1", "phuong-a", "phuong-b"} <= set(re.findall(r"(quan-1|phuong-[abx])", csv))
    assert "phuong-x" not in csv and "so-yte" not in csv
    status, page = await viewer.post("/admin/exports/download", level="responses", format="csv")
    assert status == 403


async def test_the_demo_seeds_a_small_province_its_three_roles_can_use(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    from bot.cli import seed_demo, seed_demo_logins

    await seed_demo(runtime, history=30)
    logins = dict(await seed_demo_logins(runtime))
    again = dict(await seed_demo_logins(runtime))  # idempotent: the same tree, fresh passwords
    assert again.keys() == logins.keys() and again != logins
    tree = await units.load_tree(runtime.sessions)
    shape = {u.code: (u.kind, tree.units[u.parent_id].code if u.parent_id else None)
             for u, _ in tree.walk()}  # fmt: skip
    assert shape == {
        "tp-demo": ("province", None),
        "quan-1-demo": ("district", "tp-demo"),
        "ubnd-demo": ("commune", "quan-1-demo"),
        "ubnd-demo-2": ("commune", "quan-1-demo"),
        "so-tu-phap-demo": ("department", "tp-demo"),
        "so-y-te-demo": ("department", "tp-demo"),
    }
    async with runtime.sessions() as session:  # a retired official with history
        leaver = (
            await session.execute(select(Official).where(Official.code == "CB04"))
        ).scalar_one()
        rated = select(func.count(), func.max(Response.answered_on))
        count, last = (await session.execute(rated.where(Response.official_id == leaver.id))).one()
    assert leaver.status == "left" and leaver.ended_on and count and last < leaver.ended_on
    admin = await As.login(client, "admin", again["admin"])
    status, _ = await admin.post(
        "/admin/units/create", parent="quan-1-demo", code="phuong-moi", name="Phường Mới",
        kind="commune",
    )  # fmt: skip
    assert status == 303
    manager = await As.login(client, "ql-quan-1", again["ql-quan-1"])
    status, page = await manager.get("/admin/units")
    assert 'data-unit="phuong-moi"' in page and 'data-unit="so-tu-phap-demo"' not in page
    assert (
        await manager.post("/admin/units/edit", unit="phuong-moi", name="P. Mới", kind="commune")
    )[0] == 303
    assert (
        await manager.post("/admin/units/edit", unit="so-y-te-demo", name="X", kind="department")
    )[0] == 403
    viewer = await As.login(client, "xem-quan-1", again["xem-quan-1"])
    status, page = await viewer.get("/admin/")
    assert status == 200 and "UBND Quận 1 (demo)" in page
    options = set(re.findall(r'<option value="([^"]+)"', page))
    assert {"quan-1-demo", "ubnd-demo", "ubnd-demo-2", "phuong-moi"} <= options
    assert not options & {"tp-demo", "so-tu-phap-demo", "so-y-te-demo"}
    assert (await viewer.get("/admin/?agency=so-tu-phap-demo"))[0] == 403


async def test_two_admins_creating_one_username_at_once_make_one_login(runtime: Runtime) -> None:
    await _province(runtime)
    tree = await units.load_tree(runtime.sessions)
    ward = tree.by_code("phuong-a")
    assert ward is not None
    racers = [
        accounts.create(runtime.sessions, "trung-ten", PASSWORD, "viewer", ward.id)
        for _ in range(3)
    ]
    results = await asyncio.gather(*racers, return_exceptions=True)
    made = [r for r in results if isinstance(r, accounts.Login)]
    refused = [r for r in results if isinstance(r, auth.AuthError)]
    assert len(made) == 1 and len(refused) == 2, results
    assert [login.username for login in await _logins(runtime)].count("trung-ten") == 1


async def test_a_province_of_many_communes_is_shown_a_page_of_its_tree_at_a_time(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    """120 communes under one district: the tree shows 50 rows a page with links to the
    others; a change sends the browser to the page that holds the unit it changed; the filter
    matches without diacritics; a page that is not a number is a polite 400."""
    ids = await _province(runtime)
    for n in range(120):
        await units.create_unit(
            runtime.sessions, f"xa-{n:03d}", f"Xã Đông {n:03d}", "commune", ids["quan-2"]
        )
    await auth.create_user(runtime.sessions, "tinh-admin", PASSWORD, "admin")
    admin = await As.login(client, "tinh-admin", PASSWORD)

    status, first = await admin.get("/admin/units")
    assert status == 200
    assert first.count('<tr id="unit-') == 50 and 'data-testid="unit-pages"' in first
    assert 'id="unit-tinh"' in first and 'id="unit-xa-119"' not in first
    assert 'href="/admin/units?page=3"' in first

    status, where = await admin.post(
        "/admin/units/edit", unit="xa-100", name="Xã Đông Mới", kind="commune"
    )
    assert (status, where) == (303, "/admin/units?unit=xa-100#unit-xa-100")
    status, shown = await admin.get("/admin/units?unit=xa-100")
    assert status == 200 and 'id="unit-xa-100"' in shown and "Xã Đông Mới" in shown
    assert 'aria-current="page" class="current" aria-label="Trang 3' in shown

    status, found = await admin.get("/admin/units?q=dong+moi")
    assert status == 200 and found.count('<tr id="unit-') == 1 and 'id="unit-xa-100"' in found
    status, none = await admin.get("/admin/units?q=khong+co")
    assert status == 200 and "Không có đơn vị nào khớp." in none
    assert (await admin.get("/admin/units?page=abc"))[0] == 400
