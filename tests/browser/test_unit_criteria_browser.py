"""The quarterly agency-level criteria in headless Chromium: a district manager opens the page
from the navigation, picks one of its wards, scores criteria 5 and 8 for this quarter beside
their 2/1/0 rules; the previous quarter, released, is shown frozen with no form. Checked by
axe-core, screenshots under test-output/screenshots."""

from __future__ import annotations

import datetime as dt

from playwright.async_api import Browser, expect

from bot.dashboard import auth
from bot.runtime import Runtime
from storage import units
from storage.unit_criteria import Quarter
from tests.adminseed import release
from tests.browser.axe import assert_accessible
from tests.browser.test_units_browser import PASSWORD, _province, _sign_in
from tests.conftest import today
from tests.test_unit_criteria import _scored


async def test_a_district_manager_scores_a_wards_quarter_and_sees_a_released_one_frozen(
    runtime: Runtime, server: str, browser: Browser
) -> None:
    await _province(runtime)
    await auth.create_user(runtime.sessions, "ql-quan-1", PASSWORD, "manager", "quan-1")
    current = Quarter.of(today())
    previous = current.shift(-1)
    ward = (await units.load_tree(runtime.sessions)).by_code("phuong-a")
    assert ward is not None
    await _scored(runtime, ward.id, previous.starts_on)

    manager = await _sign_in(browser, server, "ql-quan-1", PASSWORD)
    await manager.get_by_test_id("nav-unit-criteria").click()
    await expect(manager.locator("h1")).to_have_text("Chỉ số chung của đơn vị")
    assert await manager.locator('[data-unit="phuong-x"]').count() == 0
    await manager.get_by_test_id("agency-select").select_option("phuong-a")
    await expect(manager.locator("#criteria-form h2")).to_contain_text("phuong-a")
    await expect(manager.get_by_test_id("criteria-source")).to_have_text("chưa chấm")
    await manager.get_by_test_id("c5-2").check()
    await manager.get_by_test_id("c8-1").check()
    await manager.get_by_test_id("criteria-save").click()
    await expect(manager.get_by_test_id("criteria-source")).to_have_text("đã chấm cho quý này")
    await expect(manager.get_by_test_id("unit-phuong-a-5")).to_have_text("2")
    await expect(manager.get_by_test_id("unit-phuong-a-8")).to_have_text("1")
    await expect(manager.get_by_test_id("unit-phuong-a-9")).to_have_text("–")
    await expect(manager.get_by_test_id("c5-2")).to_be_checked()
    await assert_accessible(manager, "45-unit-criteria-set")

    # The previous quarter's months are released: shown frozen, nothing to submit.
    now = dt.datetime.combine(current.starts_on + dt.timedelta(days=20), dt.time(), dt.UTC)
    assert await release(runtime, now)
    await manager.get_by_test_id("quarter-select").select_option(previous.label)
    await manager.get_by_test_id("quarter-show").click()
    await expect(manager.get_by_test_id("frozen")).to_contain_text(previous.label)
    await expect(manager.get_by_test_id("criteria-values")).to_be_visible()
    assert await manager.get_by_test_id("criteria-set").count() == 0
    await assert_accessible(manager, "46-unit-criteria-frozen")
