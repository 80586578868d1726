"""Survey templates in the dashboard: upload with every problem named, try the draft in the
simulator, publish it as the next version; invitations begun on the old version finish on it,
new ones use the new one, in this process at once and in the others after a refresh."""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import Any

from aiohttp.test_utils import TestClient

from bot.dashboard import auth
from bot.flows.definition import SurveyCatalog
from bot.runtime import Runtime
from storage import survey_drafts
from storage.models import Agency
from storage.surveys import load_catalog
from tests.test_dashboard import csrf_of, login
from tests.test_survey_sources import V1_INTRO, _answer, _report, survey_text

V2_INTRO = "Xin chào, đây là phiên bản hai của phiếu."


async def upload(client: TestClient[Any, Any], text: str) -> Any:
    csrf = await csrf_of(client, "/admin/surveys")
    return await client.post(
        "/admin/surveys/upload",
        data={"csrf": csrf, "definition": text},
        allow_redirects=False,
    )


async def simulator_texts(client: TestClient[Any, Any], body: dict[str, str]) -> list[str]:
    opened = await client.post("/simulator/api/session", json=body)
    assert opened.status == 200, await opened.text()
    session = (await opened.json())["session"]
    found = await (await client.get(f"/simulator/api/messages?session={session}&after=0")).json()
    return [m["text"] for m in found["messages"]]


async def test_upload_preview_publish_and_the_old_version_finishes_on_itself(
    client: TestClient[Any, Any], runtime: Runtime, agency: Agency
) -> None:
    survey_id = f"thu-{secrets.token_hex(3)}"
    await auth.create_user(runtime.sessions, "lan", "mat-khau-dai", "admin")
    assert (await login(client, "lan", "mat-khau-dai")).status == 303

    # Every problem of a bad definition is named, and the text comes back to be mended.
    broken = survey_text(survey_id, 1).replace("type: yesno", "type: sliders", 1)
    broken = broken.replace("title:", "titel:", 1)
    refused = await upload(client, broken)
    html = await refused.text()
    assert refused.status == 422 and 'data-testid="problems"' in html
    assert "titel" in html and "title" in html and "sliders" in html
    assert "titel:" in html  # the text is kept in the form: nothing the admin typed is lost

    # Version 1 of a new survey, published; a dossier is begun on it.
    drafted = await upload(client, survey_text(survey_id, 1))
    assert drafted.status == 303
    draft_path = drafted.headers["Location"]
    csrf = await csrf_of(client, draft_path)
    published = await client.post(
        f"{draft_path}/publish", data={"csrf": csrf}, allow_redirects=False
    )
    assert published.status == 303 and runtime.catalog.latest(survey_id).version == 1
    key = await runtime.service.create_api_key("ubnd-test", "tests")
    waiting = await _report(client, key, "HS-T1", survey_id)

    # The same version again, or a skipped one, is refused naming the version it must be.
    for version in (1, 3):
        again = await upload(client, survey_text(survey_id, version, V2_INTRO))
        assert again.status == 422 and "must be version 2" in await again.text()

    # Version 2 as a draft: tried in the simulator before anything uses it.
    drafted = await upload(client, survey_text(survey_id, 2, V2_INTRO))
    draft_path = drafted.headers["Location"]
    page = await (await client.get(draft_path)).text()
    assert "v2" in page and 'data-testid="questions"' in page
    assert runtime.catalog.latest(survey_id).version == 1  # a draft is used by nothing
    csrf = await csrf_of(client, draft_path)
    preview = await client.post(f"{draft_path}/preview", data={"csrf": csrf}, allow_redirects=False)
    assert preview.status == 303 and preview.headers["Location"].startswith("/simulator?draft=")
    token = re.search(r"draft=([^&]+)", preview.headers["Location"])
    assert token
    tried = await simulator_texts(client, {"draft": token.group(1), "lang": "vi"})
    assert any(V2_INTRO in t for t in tried)
    second = await client.post(f"{draft_path}/preview", data={"csrf": csrf}, allow_redirects=False)
    assert second.status == 303
    stale = await client.post("/simulator/api/session", json={"draft": token.group(1)})
    assert stale.status == 404  # a new preview link retires the old one

    published = await client.post(
        f"{draft_path}/publish", data={"csrf": csrf}, allow_redirects=False
    )
    assert published.status == 303
    assert runtime.catalog.latest(survey_id).version == 2
    twice = await client.post(f"{draft_path}/publish", data={"csrf": csrf})
    assert twice.status == 409 and "already published" in await twice.text()
    ended = await client.post("/simulator/api/session", json={"draft": token.group(1)})
    assert ended.status == 404  # a published draft is previewed no more

    # The dossier begun on v1 finishes on v1; a new one gets v2.
    texts = await _answer(client, runtime, waiting)
    assert any(V1_INTRO in t for t in texts) and not any(V2_INTRO in t for t in texts)
    fresh = await _answer(client, runtime, await _report(client, key, "HS-T2", survey_id))
    assert any(V2_INTRO in t for t in fresh)

    # Another process learns it (at its next refresh), and so does one that starts later.
    other = SurveyCatalog([d for d in runtime.catalog.all() if d.id != survey_id])
    assert await survey_drafts.refresh(runtime.sessions, other) >= 2
    assert other.latest(survey_id).version == 2
    restarted = await load_catalog(runtime.sessions)
    assert restarted.get(survey_id, 1).intro.vi.startswith(V1_INTRO)
    actions = [(e.action, e.detail) for e in await runtime.audit.recent()]
    assert ("survey.publish", {"survey": survey_id, "version": 2}) in actions
    assert ("survey.upload", {"survey": survey_id, "version": 2}) in actions


async def test_two_admins_publishing_the_same_version_at_once_publish_one(
    runtime: Runtime,
) -> None:
    """Two processes (two catalogs), two drafts of v1 of one survey, published together: the
    version table lets one through, the other is told someone else published it."""
    survey_id = f"dua-{secrets.token_hex(3)}"
    catalogs = [SurveyCatalog(runtime.catalog.all()) for _ in range(2)]
    drafts = [
        await survey_drafts.upload(runtime.sessions, catalog, survey_text(survey_id, 1), who)
        for catalog, who in zip(catalogs, ("lan", "minh"), strict=True)
    ]
    outcomes = await asyncio.gather(
        *(
            survey_drafts.publish(runtime.sessions, catalog, draft.id)
            for catalog, draft in zip(catalogs, drafts, strict=True)
        ),
        return_exceptions=True,
    )
    refused = [o for o in outcomes if isinstance(o, survey_drafts.DraftRefused)]
    assert len(refused) == 1, outcomes
    assert "published meanwhile" in str(refused[0]) or "must be version 2" in str(refused[0])
    restarted = await load_catalog(runtime.sessions)
    assert restarted.latest(survey_id).version == 1


async def test_survey_templates_are_for_province_admins_only(
    client: TestClient[Any, Any], runtime: Runtime, agency: Agency
) -> None:
    await auth.create_user(runtime.sessions, "xem", "mat-khau-dai", "viewer", "ubnd-test")
    assert (await login(client, "xem", "mat-khau-dai")).status == 303
    assert (await client.get("/admin/surveys")).status == 403
    csrf = await csrf_of(client, "/admin/")
    refused = await client.post(
        "/admin/surveys/upload", data={"csrf": csrf, "definition": survey_text("x-y", 1)}
    )
    assert refused.status == 403
