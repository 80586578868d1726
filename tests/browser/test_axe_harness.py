"""The accessibility harness itself: it must see what it was written for, or a clean dashboard
proves nothing. A page with an unlabelled button, an image without text and grey-on-grey text
fails, naming each rule; the same page put right passes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from playwright.async_api import Browser

from tests.browser.axe import assert_accessible
from tests.children import free_port

CSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'"
BAD = """<!doctype html><html lang="vi"><head><title>Thử</title></head><body><main>
<h1>Thử</h1><button></button><img src="/x.png">
<p style="color:#bbb;background:#fff">chữ mờ</p></main></body></html>"""
GOOD = """<!doctype html><html lang="vi"><head><title>Thử</title></head><body><main>
<h1>Thử</h1><button>Gửi</button><img src="/x.png" alt="Biểu đồ">
<p style="color:#222;background:#fff">chữ rõ</p></main></body></html>"""


@pytest.fixture
async def pages() -> AsyncIterator[str]:
    async def bad(request: web.Request) -> web.Response:
        return web.Response(
            text=BAD, content_type="text/html", headers={"Content-Security-Policy": CSP}
        )

    async def good(request: web.Request) -> web.Response:
        headers = {"Content-Security-Policy": CSP}
        return web.Response(text=GOOD, content_type="text/html", headers=headers)

    app = web.Application()
    app.router.add_get("/bad", bad)
    app.router.add_get("/good", good)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_the_harness_names_each_serious_violation_and_passes_a_page_put_right(
    pages: str, browser: Browser
) -> None:
    page = await browser.new_page()
    await page.goto(f"{pages}/bad")
    with pytest.raises(AssertionError) as failure:
        await assert_accessible(page, "axe-harness-bad")
    message = str(failure.value)
    for rule in ("button-name", "image-alt", "color-contrast"):
        assert rule in message, message
    # Under a CSP that forbids inline script the engine still runs, and finds nothing here.
    await page.goto(f"{pages}/good")
    await assert_accessible(page, "axe-harness-good")
