"""The management pages in headless Chromium: a province admin creates a ward under a district,
renames and moves it; a district manager creates and revokes an API key and creates and
disables a viewer login; the viewer, fenced in its subtree, edits URLs and gets the polite 403.
Every page checked by axe-core, its screenshot under test-output/screenshots."""

from __future__ import annotations

import re

from aiohttp import ClientSession
from playwright.async_api import Browser, Page, expect

from bot.dashboard import auth
from bot.runtime import Runtime
from storage import units
from storage.models import Procedure
from tests.browser.axe import assert_accessible

PASSWORD = "mat-khau-dai"
SHAPE = [
    ("tinh", None, "province", "UBND tỉnh Thử"),
    ("so-yte", "tinh", "department", "Sở Y tế"),
    ("quan-1", "tinh", "district", "UBND quận 1"),
    ("phuong-a", "quan-1", "commune", "UBND phường A"),
    ("quan-2", "tinh", "district", "UBND quận 2"),
    ("phuong-x", "quan-2", "commune", "UBND phường X"),
]


async def _province(runtime: Runtime) -> None:
    async with runtime.sessions() as session:
        session.add(Procedure(code="1.001234", name="Đăng ký khai sinh"))
        await session.commit()
    ids: dict[str, str] = {}
    for code, parent, kind, name in SHAPE:
        made = await units.create_unit(
            runtime.sessions, code, name, kind, ids[parent] if parent else None
        )
        ids[code] = made.id


async def _sign_in(browser: Browser, base: str, username: str, password: str) -> Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await page.goto(f"{base}/admin/login")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_load_state()
    return page


async def test_units_keys_and_logins_managed_in_a_real_browser(
    runtime: Runtime, server: str, browser: Browser
) -> None:
    await _province(runtime)
    await auth.create_user(runtime.sessions, "tinh-admin", PASSWORD, "admin")
    await auth.create_user(runtime.sessions, "ql-quan-1", PASSWORD, "manager", "quan-1")

    # The province admin: a ward under the district, renamed, then moved under the other one.
    admin = await _sign_in(browser, server, "tinh-admin", PASSWORD)
    await admin.goto(f"{server}/admin/units")
    await expect(admin.locator("h1")).to_have_text("Đơn vị")
    form = admin.get_by_test_id("unit-create")
    await form.locator("select[name=parent]").select_option("quan-1")
    await form.locator("input[name=code]").fill("phuong-b")
    await form.locator("input[name=name]").fill("UBND phường B")
    await form.get_by_role("button", name="Tạo").click()
    ward = admin.locator('tr[data-unit="phuong-b"]')
    await expect(ward).to_have_attribute("data-depth", "2")
    await assert_accessible(admin, "30-units-created")
    edit = admin.get_by_test_id("unit-edit-phuong-b")
    await edit.locator("input[name=name]").fill("UBND phường Bến Nghé")
    await edit.get_by_role("button", name="Lưu").click()
    await expect(admin.locator('tr[data-unit="phuong-b"] b')).to_have_text("UBND phường Bến Nghé")
    move = admin.get_by_test_id("unit-move-phuong-b")
    await move.locator("select[name=parent]").select_option("quan-2")
    await move.get_by_role("button", name="Chuyển").click()
    await expect(admin.locator('tr[data-unit="phuong-b"]')).to_have_attribute("data-depth", "2")
    tree = await units.load_tree(runtime.sessions)
    moved = tree.by_code("phuong-b")
    assert moved and tree.units[moved.parent_id or ""].code == "quan-2"
    # And back under quan-1, which its manager then sees.
    move = admin.get_by_test_id("unit-move-phuong-b")
    await move.locator("select[name=parent]").select_option("quan-1")
    await move.get_by_role("button", name="Chuyển").click()
    await expect(admin.locator("tr[data-unit=phuong-b]")).to_be_visible()
    await assert_accessible(admin, "31-units-moved")

    # The district manager: only its subtree, a key shown once and revoked, a viewer login.
    manager = await _sign_in(browser, server, "ql-quan-1", PASSWORD)
    await manager.goto(f"{server}/admin/units")
    await expect(manager.locator("tr[data-unit=phuong-b]")).to_be_visible()
    assert await manager.locator("tr[data-unit=quan-2]").count() == 0
    assert await manager.locator("tr[data-unit=so-yte]").count() == 0
    await manager.goto(f"{server}/admin/keys")
    keys = manager.get_by_test_id("key-create")
    await keys.locator("select[name=unit]").select_option("phuong-a")
    await keys.locator("input[name=label]").fill("mot-cua-a")
    await keys.get_by_role("button", name="Tạo").click()
    raw = (await manager.get_by_test_id("new-key").inner_text()).strip()
    assert raw.startswith("sbk_")
    await assert_accessible(manager, "32-keys-shown-once")
    async with ClientSession() as http:
        api = {"Authorization": f"Bearer {raw}"}
        body = {"dossier_code": "HS-TRINH-DUYET"}
        async with http.post(f"{server}/api/v1/dossiers", headers=api, json=body) as answer:
            assert answer.status == 201
        await manager.goto(f"{server}/admin/keys")
        assert raw not in await manager.content()
        row = manager.locator('tr[data-label="mot-cua-a"]')
        await expect(row.get_by_test_id("last-used")).not_to_have_text("chưa dùng")
        await row.get_by_test_id("revoke-mot-cua-a").click()
        await expect(row.get_by_test_id("key-status")).to_have_text("đã thu hồi")
        async with http.post(f"{server}/api/v1/dossiers", headers=api, json=body) as answer:
            assert answer.status == 401
    await assert_accessible(manager, "33-keys-revoked")

    await manager.goto(f"{server}/admin/logins")
    create = manager.get_by_test_id("login-create")
    assert await create.locator("select[name=role] option").all_inner_texts() == ["Người xem"]
    await create.locator("input[name=username]").fill("xem-phuong-a")
    await create.locator("select[name=unit]").select_option("phuong-a")
    await create.locator("input[name=password]").fill("mat-khau-ban-dau")
    await create.get_by_role("button", name="Tạo").click()
    await expect(
        manager.locator("tr[data-login=xem-phuong-a] [data-testid=login-status]")
    ).to_have_text("phải đổi mật khẩu")
    await assert_accessible(manager, "34-logins-created")

    # The new viewer: a password of its own first, then its subtree only, URLs edited.
    viewer = await _sign_in(browser, server, "xem-phuong-a", "mat-khau-ban-dau")
    await expect(viewer).to_have_url(re.compile(r"/admin/password$"))
    await viewer.fill("input[name=current]", "mat-khau-ban-dau")
    await viewer.fill("input[name=new]", "mat-khau-cua-toi")
    await viewer.fill("input[name=again]", "mat-khau-cua-toi")
    await viewer.get_by_role("button", name="Đổi mật khẩu").click()
    await expect(viewer.get_by_test_id("agency-name")).to_contain_text("UBND phường A")
    for path in ("/admin/?agency=quan-1", "/admin/ranking?agency=phuong-x", "/admin/units"):
        shown = await viewer.goto(f"{server}{path}")
        assert shown is not None and shown.status == 403, path
        await expect(viewer.get_by_test_id("error")).to_have_text(
            "Bạn không có quyền xem nội dung này."
        )
    await assert_accessible(viewer, "35-viewer-url-edited")

    # Disabled by its manager: its very next page is the sign-in page.
    await (
        manager.locator("tr[data-login=xem-phuong-a]")
        .get_by_test_id("disable-xem-phuong-a")
        .click()
    )
    await expect(
        manager.locator("tr[data-login=xem-phuong-a] [data-testid=login-status]")
    ).to_have_text("đã khóa")
    await viewer.goto(f"{server}/admin/")
    await expect(viewer).to_have_url(re.compile(r"/admin/login$"))
    await assert_accessible(manager, "36-logins-disabled")


async def test_a_district_manager_adds_then_retires_an_official_of_a_ward(
    runtime: Runtime, server: str, browser: Browser
) -> None:
    """The issue's walk-through: a district manager adds an official to one of its wards, later
    records them as left; the page says so and nothing is deleted."""
    await _province(runtime)
    await auth.create_user(runtime.sessions, "ql-quan-1", PASSWORD, "manager", "quan-1")
    manager = await _sign_in(browser, server, "ql-quan-1", PASSWORD)
    await manager.get_by_test_id("nav-staff").click()
    await expect(manager.locator("h1")).to_have_text("Cán bộ của các đơn vị")
    form = manager.get_by_test_id("official-create")
    await form.locator("select[name=unit]").select_option("phuong-a")
    await form.locator("input[name=code]").fill("CB21")
    await form.locator("input[name=name]").fill("Nguyễn Thị Hoa")
    await form.get_by_role("button", name="Thêm").click()
    row = manager.locator('tr[data-official="phuong-a:CB21"]')
    await expect(row.get_by_test_id("official-status")).to_have_text("đang công tác")
    assert await manager.locator('tr[data-official^="phuong-x:"]').count() == 0
    await assert_accessible(manager, "37-officials-added")
    await manager.get_by_test_id("leave-CB21").click()
    await expect(row.get_by_test_id("official-status")).to_contain_text("đã nghỉ")
    await assert_accessible(manager, "38-officials-retired")
