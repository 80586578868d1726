"""The web chat simulator in a real headless Chromium: a citizen completes mot-cua by tapping."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp.test_utils import TestServer
from playwright.async_api import async_playwright

from bot.app import create_app
from bot.runtime import Runtime
from tests.conftest import today

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOTS = Path("test-output/screenshots")


async def test_citizen_completes_a_survey_in_the_simulator(runtime: Runtime, api_key: str) -> None:
    runtime.start_background()  # the real dispatcher loop delivers to the page
    server = TestServer(create_app(runtime, background=False))
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = await browser.new_page(viewport={"width": 480, "height": 900})
            api = page.request
            headers = {"Authorization": f"Bearer {api_key}"}
            registered = await api.post(
                f"{base}/api/v1/dossiers", headers=headers, data={"dossier_code": "HS-WEB-1"}
            )
            token = (await registered.json())["rating_token"]
            await page.goto(f"{base}/r/{token}")
            await page.get_by_text("Trò chuyện trên web").click()
            await page.wait_for_selector("text=khi hồ sơ có kết quả")
            reported = await api.post(
                f"{base}/api/v1/results",
                headers=headers,
                data={
                    "results": [{"dossier_code": "HS-WEB-1", "returned_at": today().isoformat()}]
                },
            )
            assert (await reported.json())["items"][0]["survey_status"] == "sent"
            for label in [
                "Không lần nào",
                "Chỉ Bộ phận Một cửa",
                "Có, cả niêm yết và trên mạng",
                "Đúng mực",
                "Hài lòng",
            ]:
                live = page.locator(".buttons button:not([disabled])")
                button = live.filter(has_text=re.compile(f"^{re.escape(label)}$")).last
                await button.click()
                await page.wait_for_selector(f".ack:has-text('{label}')")
            await page.fill("#text", "Mọi thứ đều ổn")
            await page.click("form button")
            await page.wait_for_selector("text=Cảm ơn Ông/Bà đã đánh giá")
            assert (
                await page.locator(".buttons button:not([disabled])").count() == 0
            )  # no live buttons left
            await page.screenshot(path=str(SCREENSHOTS / "simulator-completed.png"), full_page=True)
            await browser.close()
    finally:
        await server.close()
    async with runtime.sessions() as session:
        from sqlalchemy import select

        from storage.models import Response

        response = (await session.execute(select(Response))).scalar_one()
        assert response.complete and response.satisfaction == 4 and response.channel == "web"
