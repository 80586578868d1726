"""Agency API v1 over real HTTP: happy paths, idempotency, batches, bad input, OpenAPI truth."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from sqlalchemy import func, select

from bot.openapi import openapi_document
from bot.runtime import Runtime
from storage.models import Dossier, Invitation, OutboxMessage, SurveyLedger
from tests.conftest import today

Client = TestClient[Any, Any]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def count(runtime: Runtime, model: type) -> int:
    async with runtime.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


def result(code: str, **extra: Any) -> dict[str, Any]:
    return {"dossier_code": code, "returned_at": today().isoformat(), **extra}


async def test_register_returns_token_link_and_qr(client: Client, api_key: str) -> None:
    response = await client.post(
        "/api/v1/dossiers", headers=auth(api_key), json={"dossier_code": "HS-1"}
    )
    assert response.status == 201
    body = await response.json()
    assert len(body["rating_token"]) >= 32 and body["rating_url"].endswith(body["rating_token"])
    qr = await client.get(f"/r/{body['rating_token']}/qr.svg")
    assert qr.status == 200 and qr.content_type == "image/svg+xml" and b"<svg" in await qr.read()
    png = await client.get(f"/r/{body['rating_token']}/qr.png")
    assert (await png.read()).startswith(b"\x89PNG")
    page = await client.get(f"/r/{body['rating_token']}")
    assert page.status == 200 and "Đánh giá" in await page.text()
    again = await client.post(
        "/api/v1/dossiers", headers=auth(api_key), json={"dossier_code": "HS-1"}
    )
    assert again.status == 200 and (await again.json())["created"] is False


async def test_the_same_result_twice_never_makes_two_surveys(
    client: Client, runtime: Runtime, api_key: str
) -> None:
    first = await client.post("/api/v1/results", headers=auth(api_key), json=result("HS-2"))
    assert (await first.json())["items"][0]["status"] == "survey_created"
    for payload in (result("HS-2"), {"results": [result("hs-2 ")]}):  # same code, other spelling
        again = await client.post("/api/v1/results", headers=auth(api_key), json=payload)
        assert (await again.json())["items"][0]["status"] == "duplicate"
    assert await count(runtime, SurveyLedger) == 1
    assert await count(runtime, Invitation) == 1
    late = await client.post(
        "/api/v1/dossiers", headers=auth(api_key), json={"dossier_code": "HS-2"}
    )
    assert late.status == 200  # registration after the result: the citizen can still bind


async def test_a_day_batch_with_one_bad_item_keeps_the_rest(
    client: Client, runtime: Runtime, api_key: str
) -> None:
    items = [result(f"HS-B-{i}") for i in range(200)]
    items[7]["official_code"] = "NOBODY"
    response = await client.post("/api/v1/results", headers=auth(api_key), json={"results": items})
    body = await response.json()
    assert response.status == 200
    assert (body["accepted"], body["rejected"], body["duplicates"]) == (199, 1, 0)
    assert body["items"][7] == {
        "index": 7,
        "status": "rejected",
        "survey_status": None,
        "error": "no official with code 'NOBODY' in this agency",
        "code": "unknown_official",
        "fields": [
            {"field": "official_code", "problem": "no official with code 'NOBODY' in this agency"}
        ],
    }
    assert await count(runtime, SurveyLedger) == 199


async def test_result_before_binding_waits_then_survey_starts_on_binding(
    client: Client, runtime: Runtime, api_key: str
) -> None:
    registration = await (
        await client.post("/api/v1/dossiers", headers=auth(api_key), json={"dossier_code": "HS-3"})
    ).json()
    reported = await (
        await client.post("/api/v1/results", headers=auth(api_key), json=result("HS-3"))
    ).json()
    assert reported["items"][0]["survey_status"] == "waiting_for_binding"
    assert await count(runtime, OutboxMessage) == 0
    opened = await client.post(
        "/simulator/api/session", json={"token": registration["rating_token"]}
    )
    session = (await opened.json())["session"]
    await runtime.dispatcher.drain()
    messages = (
        await (await client.get("/simulator/api/messages", params={"session": session})).json()
    )["messages"]
    assert messages[-1]["question_id"] == "c3"
    reused = await client.post(
        "/simulator/api/session", json={"token": registration["rating_token"]}
    )
    other = (await reused.json())["session"]
    await runtime.dispatcher.drain()
    text = (await (await client.get("/simulator/api/messages", params={"session": other})).json())[
        "messages"
    ]
    assert "không hợp lệ" in text[0]["text"]  # the token is single-use


BAD_REQUESTS = [
    ("malformed json", {"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "malformed_json"),
    ("not json", {"data": b"dossier=1", "headers": {"Content-Type": "text/plain"}}, 415, "unsupported_media_type"),
    ("missing field", {"json": {"returned_at": "2026-11-20"}}, 422, "invalid_fields"),
    ("bad date", {"json": {"dossier_code": "X", "returned_at": "20/11/2026"}}, 422, "invalid_fields"),
    ("unknown field", {"json": {"dossier_code": "X", "returned_at": "2026-11-20", "cccd": "001"}}, 422, "invalid_fields"),
    ("oversized code", {"json": {"dossier_code": "X" * 65, "returned_at": "2026-11-20"}}, 422, "invalid_fields"),
    ("empty batch", {"json": {"results": []}}, 422, "invalid_fields"),
    ("not an object", {"json": [1, 2, 3]}, 422, "invalid_fields"),
    ("unknown survey", {"json": {"dossier_code": "X", "returned_at": "2026-11-20", "survey": "nope"}}, 422, "unknown_survey"),
    ("unknown survey in a batch", {"json": {"results": [{"dossier_code": "X", "returned_at": "2026-11-20", "survey": "nope"}]}}, 200, None),
    ("dates reversed", {"json": {"dossier_code": "X", "returned_at": "2026-11-01", "received_at": "2026-11-20"}}, 422, "invalid_fields"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "kwargs", "status", "error"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
async def test_bad_input_is_a_clear_4xx_and_nothing_is_written(
    client: Client,
    runtime: Runtime,
    api_key: str,
    name: str,
    kwargs: dict[str, Any],
    status: int,
    error: str | None,
) -> None:
    kwargs = dict(kwargs)
    headers = {**auth(api_key), **kwargs.pop("headers", {})}
    response = await client.post("/api/v1/results", headers=headers, **kwargs)
    body = await response.json()
    assert response.status == status, body
    if error is None:  # per-item problem: reported on the item, nothing else written
        assert body["items"][0]["status"] == "rejected" and "nope" in body["items"][0]["error"]
    else:
        assert body["error"] == error and body["detail"]
    assert await count(runtime, SurveyLedger) == 0
    assert await count(runtime, Dossier) == 0


async def test_authentication_errors(client: Client, api_key: str) -> None:
    missing = await client.post("/api/v1/results", json=result("X"))
    assert missing.status == 401 and (await missing.json())["error"] == "missing_api_key"
    wrong = await client.post("/api/v1/results", headers=auth("sbk_wrong"), json=result("X"))
    assert wrong.status == 401 and (await wrong.json())["error"] == "invalid_api_key"
    header = await client.post("/api/v1/results", headers={"X-Api-Key": api_key}, json=result("X"))
    assert header.status == 200


async def test_oversized_body_and_batch(client: Client, runtime: Runtime, api_key: str) -> None:
    huge = {"results": [result(f"HS-{i}") for i in range(runtime.settings.max_batch_size + 1)]}
    response = await client.post("/api/v1/results", headers=auth(api_key), json=huge)
    assert response.status == 413 and (await response.json())["error"] == "batch_too_large"
    blob = json.dumps({"dossier_code": "X" * (runtime.settings.max_body_bytes + 10)})
    response = await client.post(
        "/api/v1/dossiers", headers={**auth(api_key), "Content-Type": "application/json"}, data=blob
    )
    assert response.status == 413 and (await response.json())["error"] == "body_too_large"
    assert await count(runtime, SurveyLedger) == 0


async def test_unknown_route_and_method_are_json(client: Client) -> None:
    response = await client.get("/api/v1/nothing")
    assert response.status == 404 and (await response.json())["error"] == "not_found"
    response = await client.get("/api/v1/results")
    assert response.status == 405 and "error" in await response.json()


async def test_a_closed_survey_cannot_be_registered_again(
    client: Client, runtime: Runtime, api_key: str
) -> None:
    await client.post("/api/v1/results", headers=auth(api_key), json=result("HS-9"))
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=runtime.settings.survey_ttl_hours + 1)
    runtime.service.clock = lambda: later
    assert await runtime.service.close_expired() == 1
    response = await client.post(
        "/api/v1/dossiers", headers=auth(api_key), json={"dossier_code": "HS-9"}
    )
    assert response.status == 409 and (await response.json())["error"] == "already_surveyed"


async def test_real_responses_match_the_openapi_document(client: Client, api_key: str) -> None:
    spec = OpenAPI.from_dict(openapi_document())
    served = await (await client.get("/api/v1/openapi.json")).json()
    assert served == json.loads(json.dumps(openapi_document()))
    cases: list[tuple[str, Any, dict[str, str]]] = [
        ("/api/v1/dossiers", {"dossier_code": "HS-O", "due_at": (today() + dt.timedelta(days=2)).isoformat()}, auth(api_key)),
        ("/api/v1/dossiers", {"dossier_code": "HS-O"}, auth(api_key)),
        ("/api/v1/results", {"results": [result("HS-O"), result("HS-O"), result("HS-P", official_code="NO")]}, auth(api_key)),
        ("/api/v1/results", result("HS-Q"), auth(api_key)),
        ("/api/v1/results", {"dossier_code": 5}, auth(api_key)),
        ("/api/v1/results", result("HS-R"), {}),
        ("/api/v1/dossiers", {"dossier_code": "HS-O"}, auth(api_key)),
    ]  # fmt: skip
    for path, payload, headers in cases:
        response = await client.post(path, json=payload, headers=headers)
        body = await response.read()
        spec.validate_response(
            _Req(path, json.dumps(payload)), _Resp(response.status, body, response.content_type)
        )
    with pytest.raises(Exception, match="not valid for schema"):  # a wrong body is caught
        spec.validate_response(
            _Req("/api/v1/dossiers", "{}"), _Resp(201, b'{"rating_token": 5}', "application/json")
        )


class _Req:
    """A minimal openapi-core request protocol object for a POST we already sent."""

    def __init__(self, path: str, body: str) -> None:
        self.host_url = "http://localhost"
        self.path = path
        self.full_url_pattern = f"http://localhost{path}"
        self.method = "post"
        self.body = body.encode()
        self.content_type = "application/json"
        self.parameters = RequestParameters()


class _Resp:
    def __init__(self, status: int, data: bytes, content_type: str) -> None:
        self.status_code = status
        self.data = data
        self.content_type = content_type
        self.headers: dict[str, str] = {}


async def test_rating_page_offers_zalo_when_an_official_account_is_configured(
    client: Client, runtime: Runtime, api_key: str
) -> None:
    token = (
        await (
            await client.post(
                "/api/v1/dossiers", headers=auth(api_key), json={"dossier_code": "HS-Z"}
            )
        ).json()
    )["rating_token"]
    assert "zalo.me" not in await (await client.get(f"/r/{token}")).text()
    runtime.settings.zalo_oa_id = "579745863508352884"
    page = await (await client.get(f"/r/{token}")).text()
    assert "https://zalo.me/579745863508352884" in page and f"#{token}" in page
