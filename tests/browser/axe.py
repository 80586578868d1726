"""The accessibility check of every page the browser tests open: axe-core, run inside the page.

axe-core comes from npm, pinned in ``tests/browser/axe/package-lock.json`` and installed by
``scripts/test`` (``npm ci``), so every machine runs the same rules. The script is injected into
the page as it stands (after whatever the test did), a screenshot is kept under
``test-output/screenshots/`` for a person to look at, and the check fails naming every serious or
critical violation with the elements it found: a minor or moderate finding is left to review,
as the issue asks ("no serious or critical violation").
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from playwright.async_api import Page

ROOT = Path(__file__).resolve().parents[2]
AXE_JS = ROOT / "tests" / "browser" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "test-output" / "screenshots"
BLOCKING = ("serious", "critical")
#: WCAG 2.1 A and AA plus axe's best practices: the level a public service is held to.
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]


def _axe_source() -> str:
    if not AXE_JS.is_file():
        raise AssertionError(
            f"{AXE_JS} is missing: run `npm ci --prefix tests/browser/axe` (scripts/test does)"
        )
    return AXE_JS.read_text("utf-8")


async def screenshot(page: Page, name: str) -> Path:
    """A full-page screenshot under test-output/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


def describe(violations: list[dict[str, Any]]) -> list[str]:
    """One line per serious or critical violation: rule, impact, help and the elements."""
    lines = []
    for v in violations:
        if v.get("impact") not in BLOCKING:
            continue
        targets = [", ".join(map(str, node.get("target", []))) for node in v.get("nodes", [])]
        lines.append(
            f"{v['id']} ({v['impact']}): {v.get('help', '')} at {'; '.join(targets)}"
            f" [{v.get('helpUrl', '')}]"
        )
    return lines


async def audit(page: Page) -> list[dict[str, Any]]:
    """axe-core's violations for the page as it stands."""
    if not await page.evaluate("() => typeof window.axe !== 'undefined'"):
        # add_script_tag would be refused by the page's CSP (script-src 'self'); evaluate runs
        # in the page's world through the DevTools protocol, which a CSP does not govern.
        await page.evaluate(await asyncio.to_thread(_axe_source))
    result = await page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: "
        "['violations']})",
        TAGS,
    )
    return list(result["violations"])


async def assert_accessible(page: Page, name: str) -> None:
    """Screenshot the page, then fail naming every serious or critical axe-core violation."""
    await screenshot(page, name)
    problems = describe(await audit(page))
    assert not problems, f"{name} ({page.url}): " + "\n".join(problems)
