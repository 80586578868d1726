"""The public results page in headless Chromium, on a desktop and on a phone: the last closed
quarter in Vietnamese, the ranking and bands, the English switch, an open-data download, and
no serious or critical accessibility violation anywhere (axe-core)."""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path

from playwright.async_api import Browser

from bot.runtime import Runtime
from storage.models import Agency
from tests.browser.axe import assert_accessible
from tests.test_public import _seed_quarter

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


async def test_the_public_page_on_a_desktop_and_a_phone(
    runtime: Runtime, agency: Agency, server: str, browser: Browser
) -> None:
    await _seed_quarter(runtime)
    desktop = await browser.new_context(
        accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    page = await desktop.new_page()
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    await page.goto(f"{server}/public")
    assert await page.locator("h1").inner_text() == "Kết quả 2026-Q3"
    assert (
        await page.get_by_test_id("total-rated").inner_text() == "107"
    )  # every month's total is published
    row = page.locator('[data-unit="ubnd-test"]')
    assert await row.locator('[data-k="rank"]').inner_text() == "1"
    assert await row.locator('[data-k="band"]').inner_text() == "Xuất sắc"
    note = await page.locator('[data-unit="ubnd-khac"] [data-k="note"]').inner_text()
    assert "2026-08" in note
    await assert_accessible(page, "public-01-desktop-vi")

    async with page.expect_download() as info:
        await page.get_by_test_id("download-csv").click()
    text = await asyncio.to_thread(Path(await (await info.value).path()).read_text, "utf-8-sig")
    rows = {r["code"]: r for r in csv.DictReader(io.StringIO(text))}
    assert rows["ubnd-test"]["rated"] == "54" and rows["ubnd-khac"]["status"] == "partial"

    await page.get_by_test_id("lang-switch").click()
    await page.wait_for_url("**lang=en**")
    assert await page.locator("h1").inner_text() == "Results for 2026-Q3"
    assert await page.locator("html").get_attribute("lang") == "en"
    await assert_accessible(page, "public-02-desktop-en")
    await page.goto(f"{server}/public?period=2030-Q1")
    assert "2026-Q3" in await page.get_by_test_id("error").locator("xpath=..").inner_text()
    await assert_accessible(page, "public-03-unknown-period")
    assert failed == []  # every resource the page asked for is ours and was served

    phone = await (await browser.new_context(**PHONE)).new_page()  # type: ignore[arg-type]
    await phone.goto(f"{server}/public")
    # Nothing wider than the screen but the ranking, which scrolls in its own region.
    width = await phone.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390
    assert await phone.get_by_test_id("total-band").is_visible()
    await assert_accessible(phone, "public-04-phone-vi")
