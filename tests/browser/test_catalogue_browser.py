"""Procedures and surveys in headless Chromium: a district manager assigns a procedure to one
of its wards, then chooses that ward's survey; the page says so, another district's wards are
not offered; a province admin pages and filters the catalogue, gives a procedure its own
survey and clears a field. Checked by axe-core, screenshots under test-output/screenshots."""

from __future__ import annotations

from playwright.async_api import Browser, expect

from bot.dashboard import auth
from bot.runtime import Runtime
from storage.models import Procedure
from tests.browser.axe import assert_accessible
from tests.browser.test_units_browser import PASSWORD, _province, _sign_in


async def test_a_district_manager_assigns_a_procedure_and_a_survey_to_a_ward(
    runtime: Runtime, server: str, browser: Browser
) -> None:
    await _province(runtime)
    await auth.create_user(runtime.sessions, "ql-quan-1", PASSWORD, "manager", "quan-1")
    manager = await _sign_in(browser, server, "ql-quan-1", PASSWORD)
    await manager.get_by_test_id("nav-catalogue").click()
    await expect(manager.locator("h1")).to_have_text("Thủ tục và phiếu khảo sát")
    assert await manager.locator('[data-cell^="phuong-x:"]').count() == 0
    cell = manager.locator('[data-cell="phuong-a:1.001234"]')
    await expect(cell.get_by_test_id("assigned")).to_have_text("–")
    await manager.get_by_test_id("toggle-phuong-a-1.001234").click()
    await expect(cell.get_by_test_id("assigned")).to_have_text("đã giao")
    await assert_accessible(manager, "39-procedure-assigned")

    await manager.get_by_test_id("survey-phuong-a").select_option("hanoi-4")
    await manager.get_by_test_id("survey-save-phuong-a").click()
    await expect(manager.get_by_test_id("survey-phuong-a")).to_have_value("hanoi-4")
    await assert_accessible(manager, "40-unit-survey-chosen")


async def test_a_province_admin_pages_filters_and_edits_the_catalogue(
    runtime: Runtime, server: str, browser: Browser
) -> None:
    """The catalogue's new controls: page links, the filter, a procedure's own survey and the
    edit form that clears a field, each checked by axe."""
    await _province(runtime)
    async with runtime.sessions() as session:
        session.add_all(Procedure(code=f"9.{n:03}", name=f"Thủ tục số {n}") for n in range(60))
        session.add(Procedure(code="2.000815", name="Chứng thực bản sao", field="tu-phap"))
        await session.commit()
    await auth.create_user(runtime.sessions, "tinh-admin", PASSWORD, "admin")
    admin = await _sign_in(browser, server, "tinh-admin", PASSWORD)
    await admin.get_by_test_id("nav-catalogue").click()
    pages = admin.get_by_test_id("procedure-pages")
    await expect(pages).to_have_attribute("aria-label", "Các trang thủ tục")
    await expect(admin.locator("[data-procedure]")).to_have_count(50)
    await pages.get_by_label("Trang 2 trên 2").click()
    await expect(admin.locator("[data-procedure]")).to_have_count(12)
    await expect(pages.locator('[aria-current="page"]')).to_have_text("2")
    await assert_accessible(admin, "41-catalogue-page-2")

    # Filter without diacritics, then give the procedure a survey of its own.
    await admin.get_by_test_id("procedure-filter-q").fill("chung thuc")
    await admin.get_by_test_id("procedure-filter-submit").click()
    await expect(admin.locator("[data-procedure]")).to_have_count(1)
    await expect(admin.get_by_test_id("procedure-found")).to_have_text("Tìm thấy 1 thủ tục.")
    await admin.get_by_test_id("procedure-survey-2.000815").select_option("hanoi-4")
    await admin.get_by_test_id("procedure-survey-save-2.000815").click()
    await expect(admin.get_by_test_id("procedure-survey-2.000815")).to_have_value("hanoi-4")
    await expect(admin.get_by_test_id("procedure-filter-q")).to_have_value("chung thuc")
    await assert_accessible(admin, "42-procedure-survey-chosen")

    # "Edit" fills the form; "–" clears the field.
    await admin.get_by_test_id("edit-2.000815").click()
    await expect(admin.get_by_test_id("procedure-name")).to_have_value("Chứng thực bản sao")
    await expect(admin.get_by_test_id("procedure-field")).to_have_value("tu-phap")
    await admin.get_by_test_id("procedure-field").select_option("")
    await admin.get_by_test_id("procedure-save").click()
    await expect(admin.get_by_test_id("field-2.000815")).to_have_text("")
    await assert_accessible(admin, "43-procedure-field-cleared")
