"""The dashboard in headless Chromium against a real server: log in, open every page, check the
numbers against the database, download an XLSX, and show an agency viewer is fenced in."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from openpyxl import load_workbook
from playwright.async_api import Browser, Page
from sqlalchemy import case, func, select

from bot.dashboard import auth
from bot.dashboard.i18n import percent
from bot.runtime import Runtime
from storage.models import Agency, Response
from tests.adminseed import Batch, add_agency, release, seed
from tests.browser.axe import assert_accessible


async def _login(browser: Browser, base: str, username: str) -> Page:
    context = await browser.new_context(
        accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    page = await context.new_page()
    await page.goto(f"{base}/admin/")
    await assert_accessible(page, f"00-login-{username}")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", "mat-khau-dai")
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/admin/")
    return page


async def _cell(page: Page, row: str, key: str) -> str:
    return (await page.locator(f'{row} [data-k="{key}"]').inner_text()).strip()


async def test_admin_and_viewer_in_a_real_browser(
    runtime: Runtime, agency: Agency, server: str, browser: Browser
) -> None:
    await add_agency(runtime, "ubnd-khac", "UBND phường Khác", ["CB09"])
    await seed(
        runtime,
        "ubnd-test",
        [
            Batch(20, "CB01", satisfaction=5),
            Batch(5, "CB01", satisfaction=1, comment="Phải đi lại nhiều lần"),
            Batch(12, "CB02", satisfaction=4),
        ],
    )
    await seed(
        runtime, "ubnd-khac", [Batch(30, "CB09", satisfaction=5), Batch(3, "CB09", satisfaction=2)]
    )
    assert await release(runtime) == ["2026-10"]
    await auth.create_user(runtime.sessions, "quantri", "mat-khau-dai", "admin")
    await auth.create_user(runtime.sessions, "xem", "mat-khau-dai", "viewer", "ubnd-test")

    async with runtime.sessions() as session:
        total = (await session.execute(select(func.count()).select_from(Response))).scalar_one()
        rated_test, satisfied_test = (
            await session.execute(
                select(
                    func.count(Response.satisfaction),
                    func.sum(case((Response.satisfaction > 2, 1), else_=0)),
                ).where(Response.agency_id == agency.id)
            )
        ).one()

    page = await _login(browser, server, "quantri")
    assert await page.get_by_test_id("total-responses").inner_text() == str(total)
    assert await page.locator("canvas#trend").count() == 1
    await page.wait_for_function("typeof Chart !== 'undefined'")
    await assert_accessible(page, "01-overview")

    await page.click("text=Xếp hạng cơ quan")
    row = '[data-unit="ubnd-test"]'
    assert await _cell(page, row, "rated") == str(rated_test)
    assert await _cell(page, row, "rate") == percent(100 * satisfied_test / rated_test, "vi")
    # ubnd-khac: 30/33 satisfied beats 32/37, and ranks first by its interval's lower bound.
    assert await _cell(page, '[data-unit="ubnd-khac"]', "rank") == "1"
    await assert_accessible(page, "02-ranking")

    await page.goto(f"{server}/admin/officials?agency=ubnd-test")
    assert await _cell(page, '[data-unit="CB01"]', "rated") == "25"
    assert await _cell(page, '[data-unit="CB02"]', "rated") == "12"
    await assert_accessible(page, "03-officials")
    await page.goto(f"{server}/admin/officials?agency=ubnd-khac")
    assert await _cell(page, '[data-unit="CB09"]', "rated") == "33"

    for name in ("procedures", "criteria", "coverage"):
        await page.goto(f"{server}/admin/{name}?agency=ubnd-test")
        await assert_accessible(page, f"04-{name}")
    assert await _cell(page, '[data-coverage="ubnd-test:*"]', "answered") == "37"

    await page.goto(f"{server}/admin/exports")
    await page.select_option("select[name=level]", "official")
    async with page.expect_download() as info:
        await page.get_by_test_id("download-xlsx").click()
    download = await info.value
    data = await asyncio.to_thread(Path(await download.path()).read_bytes)
    sheet = load_workbook(io.BytesIO(data)).worksheets[0]
    names = {row[3] for row in sheet.iter_rows(values_only=True)}
    assert "Nguyễn Văn A" in names and "Trần Thị B" in names
    await assert_accessible(page, "05-exports")

    await page.click("text=Nhật ký kiểm toán")
    assert "nguyên vẹn" in await page.get_by_test_id("audit-status").inner_text()
    assert await page.locator('[data-action="export"]').count() == 1
    assert await page.locator('[data-action="view.officials"]').count() == 2
    await assert_accessible(page, "06-audit")

    await page.click("[data-testid=lang-switch]")
    assert "Audit log" in await page.content()
    await assert_accessible(page, "07-audit-en")

    viewer = await _login(browser, server, "xem")
    assert await viewer.get_by_test_id("total-responses").inner_text() == "37"
    assert "ubnd-test" in await viewer.get_by_test_id("agency-name").inner_text()
    await viewer.goto(f"{server}/admin/ranking")
    assert await viewer.locator('[data-unit="ubnd-khac"]').count() == 0
    await assert_accessible(viewer, "08-viewer-ranking")
    for path in (
        "officials?agency=ubnd-khac",
        "?agency=ubnd-khac",
        "coverage?agency=ubnd-khac",
        "audit",
    ):
        response = await viewer.goto(f"{server}/admin/{path}")
        assert response is not None and response.status == 403, path
        assert "không có quyền" in await viewer.get_by_test_id("error").inner_text()
    await assert_accessible(viewer, "09-viewer-forbidden")
    await viewer.goto(f"{server}/admin/exports")
    # Row-level data never reaches an agency: the viewer is offered aggregates only.
    levels = await viewer.locator("select[name=level] option").evaluate_all(
        "options => options.map(o => o.value)"
    )
    assert "responses" not in levels and "official" in levels
    await viewer.select_option("select[name=level]", "official")
    async with viewer.expect_download() as info:
        await viewer.get_by_test_id("download-csv").click()
    text = await asyncio.to_thread(Path(await (await info.value).path()).read_text, "utf-8-sig")
    assert "ubnd-khac" not in text and text.count("ubnd-test") == 2  # CB01 and CB02
    assert "2026-10" in text


async def test_withheld_rows_are_readable_for_everyone(
    runtime: Runtime, agency: Agency, server: str, browser: Browser
) -> None:
    """A withheld row is greyed, yet must keep a readable contrast (axe's color-contrast rule,
    serious: the first grey, #8a97a6 on white, failed it)."""
    await seed(runtime, "ubnd-test", [Batch(12, "CB01"), Batch(3, "CB02", satisfaction=1)])
    assert await release(runtime) == ["2026-10"]
    await auth.create_user(runtime.sessions, "quantri", "mat-khau-dai", "admin")
    page = await _login(browser, server, "quantri")
    await page.goto(f"{server}/admin/officials?agency=ubnd-test")
    assert await page.locator("tr.suppressed").count() >= 1
    await assert_accessible(page, "10-officials-withheld")
