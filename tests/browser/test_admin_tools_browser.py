"""The province admin's tools in a real browser: survey templates (a YAML file chosen, checked,
tried in the simulator, published) and dead letters (seen and retried), each page checked by
axe-core."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from playwright.async_api import Browser, expect

from bot.dashboard import auth
from bot.runtime import Runtime
from storage import inbox
from storage.models import Agency
from tests.browser.axe import assert_accessible
from tests.browser.test_dashboard_browser import _login
from tests.test_dashboard_surveys import V2_INTRO
from tests.test_outbox import make_runtime, stall
from tests.test_survey_sources import survey_text


async def test_an_admin_publishes_a_survey_template_from_a_file(
    browser: Browser, server: str, runtime: Runtime, tmp_path: Path
) -> None:
    await auth.create_user(runtime.sessions, "lan", "mat-khau-dai", "admin")
    survey_id = f"thu-{secrets.token_hex(3)}"
    upload = tmp_path / f"{survey_id}.yaml"
    upload.write_text(survey_text(survey_id, 1, V2_INTRO), encoding="utf-8")
    page = await _login(browser, server, "lan")
    await page.click("nav >> text=Mẫu phiếu khảo sát")
    await assert_accessible(page, "20-survey-templates")
    await page.set_input_files("#definition-file", str(upload))
    await expect(page.locator("#definition")).to_have_value(re.compile("version: 1"))
    await page.click("[data-testid=upload]")
    await page.wait_for_selector("[data-testid=questions]")
    await assert_accessible(page, "21-survey-draft")
    await page.click("[data-testid=preview]")
    await page.wait_for_url("**/simulator?draft=*")
    await page.wait_for_selector(f"text={V2_INTRO}")
    await page.go_back()
    await page.click("[data-testid=publish]")
    await page.wait_for_selector("[data-testid=published]")
    assert survey_id in await page.inner_text(f'[data-survey="{survey_id}"]')
    assert runtime.catalog.latest(survey_id).version == 1

    # A broken file comes back with its problems named, the text still in the form.
    upload.write_text(survey_text(survey_id, 2).replace("title:", "titel:", 1), encoding="utf-8")
    await page.set_input_files("#definition-file", str(upload))
    await expect(page.locator("#definition")).to_have_value(re.compile("titel"))
    await page.click("[data-testid=upload]")
    await page.wait_for_selector("[data-testid=problems]")
    assert "titel" in await page.input_value("#definition")
    await assert_accessible(page, "22-survey-refused")


async def test_an_admin_retries_what_an_outage_left_behind(
    browser: Browser, server: str, runtime: Runtime, agency: Agency
) -> None:
    await auth.create_user(runtime.sessions, "lan", "mat-khau-dai", "admin")
    runtime, channel = await make_runtime(runtime)
    dispatcher = await stall(runtime, agency, channel, "HS-B", "citizen-b")
    runtime.inbox.max_attempts = 1
    async with runtime.sessions() as session:
        await inbox.accept(
            session, runtime.keyring, channel="nowhere", event_key="e-1", conversation="c",
            body={"text": "xin chào"},
        )  # fmt: skip
        await session.commit()
    await runtime.inbox.run_once()  # no handler for that channel: a dead letter
    page = await _login(browser, server, "lan")
    await page.click("nav >> text=Thư lỗi")
    await page.wait_for_selector("[data-testid=stalled]")
    await page.wait_for_selector("[data-testid=inbound-dead]")
    await assert_accessible(page, "23-dead-letters")
    await page.click("[data-testid=retry-all-outbox]")
    await page.wait_for_selector("[data-testid=retried]")
    await page.wait_for_selector("[data-testid=no-stalled]")
    await dispatcher.drain()
    assert "bao nhiêu lần" in channel.received["citizen-b"][-1]
    await assert_accessible(page, "24-dead-letters-retried")
