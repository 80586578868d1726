"""Procedures and surveys in headless Chromium: a district manager assigns a procedure to one
of its wards, then chooses that ward's survey; the page says so, another district's wards are
not offered. Checked by axe-core, screenshots under test-output/screenshots."""

from __future__ import annotations

from playwright.async_api import Browser, expect

from bot.dashboard import auth
from bot.runtime import Runtime
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
