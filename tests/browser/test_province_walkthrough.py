"""Issue 14's "done when", walked as a new user would after ``surveybot demo``, in headless
Chromium on the demo's own seed: a province admin creates a ward under the district; the
district's manager adds an official to that ward, later records them as left, and revokes the
demo ward's API key (its next request is refused); the district's viewer sees the district and its
wards only; the public page opens on the last closed quarter; that quarter's PDF report reads
back in correct Vietnamese. Every page checked by axe-core, screenshots under test-output."""

from __future__ import annotations

import datetime as dt
import io

from aiohttp import ClientSession
from playwright.async_api import Browser, expect
from pypdf import PdfReader

from bot.cli import demo_history_start, seed_demo, seed_demo_logins
from bot.runtime import Runtime
from storage import reports
from tests.browser.axe import assert_accessible
from tests.browser.test_units_browser import _sign_in


async def test_the_demo_province_walked_through_by_its_three_roles(
    runtime: Runtime, server: str, browser: Browser
) -> None:
    key = await seed_demo(runtime)
    logins = dict(await seed_demo_logins(runtime))
    await runtime.publish_releases()
    await runtime.generate_reports(limit=None)
    closed = reports.period_of(
        "quarter",
        demo_history_start(dt.date.today(), runtime.settings.effective_release_delay_hours),
    ).label

    # The province admin creates a ward under the district.
    admin = await _sign_in(browser, server, "admin", logins["admin"])
    await admin.goto(f"{server}/admin/units")
    form = admin.get_by_test_id("unit-create")
    await form.locator("select[name=parent]").select_option("quan-1-demo")
    await form.locator("input[name=code]").fill("phuong-moi")
    await form.locator("input[name=name]").fill("UBND phường Đa Kao")
    await form.get_by_role("button", name="Tạo").click()
    await expect(admin.locator('tr[data-unit="phuong-moi"]')).to_have_attribute("data-depth", "2")
    await assert_accessible(admin, "50-walkthrough-ward-created")

    # The district's manager adds an official to the new ward, then records them as left.
    manager = await _sign_in(browser, server, "ql-quan-1", logins["ql-quan-1"])
    await manager.get_by_test_id("nav-staff").click()
    create = manager.get_by_test_id("official-create")
    await create.locator("select[name=unit]").select_option("phuong-moi")
    await create.locator("input[name=code]").fill("DK01")
    await create.locator("input[name=name]").fill("Trương Thị Ngọc Ánh")
    await create.get_by_role("button", name="Thêm").click()
    row = manager.locator('tr[data-official="phuong-moi:DK01"]')
    await expect(row.get_by_test_id("official-status")).to_have_text("đang công tác")
    await manager.get_by_test_id("leave-DK01").click()
    await expect(row.get_by_test_id("official-status")).to_contain_text("đã nghỉ")
    await assert_accessible(manager, "51-walkthrough-official-left")

    # … and revokes the demo ward's key: its very next request is refused.
    async with ClientSession() as http:
        api = {"Authorization": f"Bearer {key}"}
        body = {"dossier_code": "HS-DI-BO-1"}
        async with http.post(f"{server}/api/v1/dossiers", headers=api, json=body) as answer:
            assert answer.status == 201
        await manager.goto(f"{server}/admin/keys")
        key_row = manager.locator('tr[data-label="demo"]')
        await key_row.get_by_test_id("revoke-demo").click()
        await expect(key_row.get_by_test_id("key-status")).to_have_text("đã thu hồi")
        body = {"dossier_code": "HS-DI-BO-2"}
        async with http.post(f"{server}/api/v1/dossiers", headers=api, json=body) as answer:
            assert answer.status == 401
    await assert_accessible(manager, "52-walkthrough-key-revoked")

    # The district's viewer: the district and its wards, nothing else, even by editing URLs.
    viewer = await _sign_in(browser, server, "xem-quan-1", logins["xem-quan-1"])
    chooser = viewer.get_by_test_id("agency-select")
    await expect(chooser).to_have_value("quan-1-demo")
    offered = set(await chooser.locator("option").evaluate_all("os => os.map(o => o.value)"))
    assert {"quan-1-demo", "ubnd-demo", "ubnd-demo-2", "phuong-moi"} <= offered
    assert not offered & {"tp-demo", "so-tu-phap-demo", "so-y-te-demo"}
    shown = await viewer.goto(f"{server}/admin/?agency=so-tu-phap-demo")
    assert shown is not None and shown.status == 403
    await assert_accessible(viewer, "53-walkthrough-viewer-fenced")

    # The public page, no login: the last closed quarter.
    public = await (await browser.new_context()).new_page()
    await public.goto(f"{server}/public")
    await expect(public.locator("h1")).to_contain_text(closed)
    await expect(public.locator(f'a[data-period="{closed}"]')).to_have_attribute(
        "aria-current", "page"
    )
    communes = public.locator("table[data-testid=ranking][data-kind=commune]").first
    await expect(communes).to_contain_text("UBND phường Bến Thành (demo)")
    await expect(communes.locator("tbody tr td:first-child")).to_have_text(["1", "2"])  # ranked
    await assert_accessible(public, "54-walkthrough-public")

    # That quarter's report, as the admin downloads it: Vietnamese read back from the PDF.
    await admin.goto(f"{server}/admin/reports")
    link = admin.locator(f'tr[data-report="*:{closed}"] [data-testid=report-pdf]')
    pdf = await admin.context.request.get(f"{server}{await link.get_attribute('href')}")
    assert pdf.ok and pdf.headers["content-type"].startswith("application/pdf")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(await pdf.body())).pages)
    for name in ("UBND phường Bến Thành (demo)", "UBND phường Sài Gòn (demo)", "Sở Tư pháp"):
        assert name in text, name
    await assert_accessible(admin, "55-walkthrough-reports")
