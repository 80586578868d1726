"""What the browser tests share: a real server on a free port and headless Chromium (Debian's,
installed by scripts/test). One backend is enough here: the queries behind the pages are
tested on both by the HTTP tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from playwright.async_api import Browser, async_playwright

from bot.app import create_app
from bot.runtime import Runtime
from tests.children import free_port

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
async def server(runtime: Runtime) -> AsyncIterator[str]:
    runner = web.AppRunner(create_app(runtime, background=False))
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        await chromium.close()
