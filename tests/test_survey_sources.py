"""Surveys as data: the package's, a configured folder's, and every version kept in the database.

Why: admins add survey templates without a release, and a survey version that an invitation or a
response refers to must stay known after its file is replaced (an invitation begun on version N
keeps running on N after N+1 appears), while a file that cannot be used stops the start-up with
every problem named.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from bot.app import create_app
from bot.flows.definition import BUILTIN_DIR, SurveyDefinitionError
from bot.runtime import Runtime
from storage.models import Response, SurveyVersion
from storage.surveys import load_catalog
from tests.conftest import REDIS_URL, _truncate, add_test_agency, make_settings, today
from tests.helpers import answer_with_first_buttons

HANOI = (BUILTIN_DIR / "hanoi-4.yaml").read_text(encoding="utf-8")
V1_INTRO = "Kính chào Quý Ông/Bà. Hồ sơ của Ông/Bà đã có kết quả."


def survey_text(survey_id: str, version: int, intro: str = V1_INTRO) -> str:
    text = HANOI.replace("id: hanoi-4", f"id: {survey_id}").replace(
        "version: 1", f"version: {version}"
    )
    return text.replace(
        text[
            text.index("intro:\n  vi: ") + 13 : text.index("\n", text.index("intro:\n  vi: ") + 13)
        ],
        intro,
        1,
    )


@asynccontextmanager
async def serving(
    tmp_path: Path, database_url: str, folder: Path, redis_prefix: str, *, fresh: bool = False
) -> AsyncIterator[tuple[Runtime, TestClient[Any, Any]]]:
    """The app on the survey folder; ``fresh`` empties the (shared PostgreSQL) database first."""
    settings = make_settings(
        tmp_path, database_url, redis_url=REDIS_URL, redis_prefix=redis_prefix, surveys_dir=folder
    )
    runtime = await Runtime.create(settings)
    if fresh:
        await _truncate(runtime)
        await load_catalog(runtime.sessions, folder)  # the emptied survey_version table again
    try:
        async with TestClient(TestServer(create_app(runtime, background=False))) as client:
            yield runtime, client
    finally:
        await runtime.close()


async def _report(client: TestClient[Any, Any], key: str, code: str, survey: str) -> str:
    headers = {"Authorization": f"Bearer {key}"}
    registration = await client.post(
        "/api/v1/dossiers",
        headers=headers,
        json={
            "dossier_code": code,
            "procedure_code": "1.001234",
            "official_code": "CB01",
            "received_at": (today() - dt.timedelta(days=3)).isoformat(),
            "due_at": today().isoformat(),
            "survey": survey,
        },
    )
    assert registration.status == 201, await registration.text()
    result = await client.post(
        "/api/v1/results",
        headers=headers,
        json={"results": [{"dossier_code": code, "returned_at": today().isoformat()}]},
    )
    assert (await result.json())["accepted"] == 1
    return str((await registration.json())["rating_token"])


async def _answer(client: TestClient[Any, Any], runtime: Runtime, token: str) -> list[str]:
    opened = await client.post("/simulator/api/session", json={"token": token, "lang": "vi"})
    assert opened.status in (200, 201), await opened.text()
    session = (await opened.json())["session"]
    seen = await answer_with_first_buttons(client, runtime, session)
    return [m["text"] for m in seen]


async def test_a_folder_survey_is_used_and_its_old_version_outlives_its_file(
    tmp_path: Path, database_url: str, redis_prefix: str
) -> None:
    survey_id = f"thu-{secrets.token_hex(3)}"
    folder = tmp_path / "surveys"
    folder.mkdir()
    (folder / f"{survey_id}.yaml").write_text(survey_text(survey_id, 1), encoding="utf-8")
    async with serving(tmp_path, database_url, folder, redis_prefix, fresh=True) as (
        runtime,
        client,
    ):
        assert runtime.catalog.latest(survey_id).version == 1
        await add_test_agency(runtime)
        key = await runtime.service.create_api_key("ubnd-test", "tests")
        done = await _answer(client, runtime, await _report(client, key, "HS-F1", survey_id))
        assert any(V1_INTRO in t for t in done)
        # A second dossier begun on version 1, whose citizen has not answered yet.
        waiting = await _report(client, key, "HS-F2", survey_id)

    # Version 2 replaces the file; version 1 is gone from every folder.
    (folder / f"{survey_id}.yaml").write_text(
        survey_text(survey_id, 2, "Xin chào, phiên bản hai."), encoding="utf-8"
    )
    async with serving(tmp_path, database_url, folder, redis_prefix) as (runtime, client):
        assert runtime.catalog.latest(survey_id).version == 2
        assert runtime.catalog.get(survey_id, 1).intro.vi.startswith(V1_INTRO)
        texts = await _answer(client, runtime, waiting)
        assert any(V1_INTRO in t for t in texts) and not any("phiên bản hai" in t for t in texts)
        fresh = await _answer(client, runtime, await _report(client, key, "HS-F3", survey_id))
        assert any("phiên bản hai" in t for t in fresh)
        async with runtime.sessions() as session:
            versions = sorted(
                v
                for (v,) in await session.execute(
                    select(Response.survey_version).where(Response.survey_id == survey_id)
                )
            )
            stored = sorted(
                v
                for (v,) in await session.execute(
                    select(SurveyVersion.version).where(SurveyVersion.survey_id == survey_id)
                )
            )
        assert versions == [1, 1, 2] and stored == [1, 2]


async def test_unusable_folder_files_stop_the_start_with_every_problem_named(
    tmp_path: Path, database_url: str, redis_prefix: str
) -> None:
    survey_id = f"thu-{secrets.token_hex(3)}"
    folder = tmp_path / "surveys"
    folder.mkdir()
    (folder / "good.yaml").write_text(survey_text(survey_id, 1), encoding="utf-8")
    (folder / "broken.yaml").write_text("id: [unclosed\n", encoding="utf-8")
    (folder / "wrong.yml").write_text(
        survey_text(f"{survey_id}-b", 1).replace("version: 1", "version: 0")
        + "scoring: circular-2099\n",
        encoding="utf-8",
    )
    (folder / "clash.yaml").write_text(
        survey_text(survey_id, 1, "Một nội dung khác."), encoding="utf-8"
    )
    with pytest.raises(SurveyDefinitionError) as refused:
        await Runtime.create(make_settings(tmp_path, database_url, surveys_dir=folder))
    message = str(refused.value)
    assert "broken.yaml: not valid YAML" in message
    assert "wrong.yml: invalid survey definition" in message
    assert "version: Input should be greater than or equal to 1" in message
    assert "unknown scoring scheme 'circular-2099'" in message
    # Two files with one id and version and different content: both are named.
    assert f"good.yaml: {survey_id} v1 is also defined, differently" in message
    assert "clash.yaml: give the new one the next version" in message

    # A file that changes a version already in use is refused too, once it is stored.
    for name in ("broken.yaml", "wrong.yml", "clash.yaml"):
        (folder / name).unlink()
    runtime = await Runtime.create(make_settings(tmp_path, database_url, surveys_dir=folder))
    await runtime.close()
    (folder / "good.yaml").write_text(survey_text(survey_id, 1, "Đã sửa."), encoding="utf-8")
    with pytest.raises(SurveyDefinitionError, match="differs from the version already in use"):
        await Runtime.create(make_settings(tmp_path, database_url, surveys_dir=folder))
