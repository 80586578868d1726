"""The agency sync API over real HTTP: a unit's one-stop system pushes its officials and
procedures; every request and answer is checked against the served OpenAPI document."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp.test_utils import TestClient
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from sqlalchemy import func, select
from werkzeug.datastructures import Headers

from bot.openapi import openapi_document
from bot.runtime import Runtime
from storage import directory
from storage.models import Agency, Official, Procedure, ProcedureAssignment, Response
from tests.adminseed import Batch, add_agency, seed
from tests.conftest import today

Client = TestClient[Any, Any]
SPEC = OpenAPI.from_dict(openapi_document())


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def put(client: Client, path: str, key: str, body: Any) -> tuple[int, Any]:
    """PUT ``body``; the request and the answer must both match the document."""
    response = await client.put(path, json=body, headers=auth(key))
    data = await response.read()
    request = _Req("put", path, json.dumps(body), key)
    if response.status < 400:
        SPEC.validate_request(request)
    SPEC.validate_response(request, _Resp(response.status, data, response.content_type))
    return response.status, json.loads(data)


async def report(client: Client, key: str, **fields: Any) -> tuple[int, Any]:
    body = {"dossier_code": "HS-S-" + fields.pop("code", "1"), "returned_at": today().isoformat()}
    response = await client.post("/api/v1/results", json={**body, **fields}, headers=auth(key))
    data = await response.read()
    SPEC.validate_response(
        _Req("post", "/api/v1/results", json.dumps(body)),
        _Resp(response.status, data, response.content_type),
    )
    return response.status, json.loads(data)


async def officials(runtime: Runtime, agency: Agency) -> dict[str, str]:
    async with runtime.sessions() as session:
        rows = await session.execute(
            select(Official.code, Official.status).where(Official.agency_id == agency.id)
        )
        return {code: status for code, status in rows}


async def test_a_whole_staff_push_upserts_marks_the_absent_left_and_is_idempotent(
    client: Client, runtime: Runtime, agency: Agency, api_key: str
) -> None:
    staff = {
        "officials": [{"code": "CB01", "name": "Nguyễn Văn An"}, {"code": "CB07", "name": "Lê C"}]
    }
    status, body = await put(client, "/api/v1/officials", api_key, staff)
    assert status == 200
    assert body == {"created": ["CB07"], "updated": ["CB01"], "unchanged": [], "retired": ["CB02"]}
    assert await officials(runtime, agency) == {"CB01": "active", "CB02": "left", "CB07": "active"}
    status, again = await put(client, "/api/v1/officials", api_key, staff)
    assert again == {"created": [], "updated": [], "unchanged": ["CB01", "CB07"], "retired": []}
    # The official who left is refused by name in a new result; the others still work.
    status, refused = await report(client, api_key, official_code="CB02")
    assert status == 422 and refused["error"] == "official_left"
    assert refused["fields"][0]["field"] == "official_code" and "CB02" in refused["detail"]
    status, accepted = await report(client, api_key, code="2", official_code="CB07")
    assert status == 200 and accepted["accepted"] == 1
    registered = await client.post(
        "/api/v1/dossiers",
        json={"dossier_code": "HS-R", "official_code": "CB02"},
        headers=auth(api_key),
    )
    body = await registered.json()
    assert registered.status == 422 and body["error"] == "official_left"
    assert body["fields"] == [{"field": "official_code", "problem": body["detail"]}]
    batch = await client.post(
        "/api/v1/results",
        json={
            "results": [
                {
                    "dossier_code": "HS-B",
                    "returned_at": today().isoformat(),
                    "official_code": "CB02",
                }
            ]
        },
        headers=auth(api_key),
    )
    item = (await batch.json())["items"][0]
    assert batch.status == 200 and (item["status"], item["code"]) == ("rejected", "official_left")
    # Listed again, the official is back.
    back = {"officials": [*staff["officials"], {"code": "CB02", "name": "Trần Thị B"}]}
    status, body = await put(client, "/api/v1/officials", api_key, back)
    assert body["updated"] == ["CB02"]
    assert (await report(client, api_key, code="3", official_code="CB02"))[0] == 200


async def test_one_official_put_creates_then_updates_and_can_retire(
    client: Client, runtime: Runtime, agency: Agency, api_key: str
) -> None:
    status, created = await put(client, "/api/v1/officials/CB09", api_key, {"name": "Phạm D"})
    assert status == 201
    assert created == {"code": "CB09", "name": "Phạm D", "status": "active", "ended_on": None, "moved_to": None}  # fmt: skip
    status, same = await put(client, "/api/v1/officials/CB09", api_key, {"name": "Phạm D"})
    assert status == 200 and same == created
    status, left = await put(
        client, "/api/v1/officials/CB09", api_key, {"name": "Phạm D", "status": "left"}
    )
    assert status == 200 and left["status"] == "left" and left["ended_on"] == today().isoformat()
    assert (await report(client, api_key, official_code="CB09"))[1]["error"] == "official_left"


async def test_bad_pushes_name_each_bad_item_and_field_and_write_nothing(
    client: Client, runtime: Runtime, agency: Agency, api_key: str
) -> None:
    bad = {
        "officials": [
            {"code": "CB01", "name": "ok"},
            {"code": "", "name": "no code"},
            {"code": "CB03", "name": "x", "status": "retired"},
            {"code": "CB01", "name": "twice"},
        ]
    }
    status, body = await put(client, "/api/v1/officials", api_key, bad)
    assert status == 422 and body["error"] == "invalid_fields"
    assert {f["field"] for f in body["fields"]} == {"officials.1.code", "officials.2.status"}
    status, body = await put(client, "/api/v1/officials", api_key, {"officials": bad["officials"][::3]})  # fmt: skip
    assert status == 422 and body["fields"][0]["field"] == "officials.1.code"
    assert "repeats officials.0" in body["fields"][0]["problem"]
    status, body = await put(
        client,
        "/api/v1/procedures",
        api_key,
        {"procedures": [{"code": "1.000001", "name": "A", "field": "y-te"}, {"code": "1.000002", "name": "B", "field": "astrology"}]},
    )  # fmt: skip
    assert status == 422 and [f["field"] for f in body["fields"]] == ["procedures.1.field"]
    assert "tu-phap" in body["fields"][0]["problem"]  # the vocabulary is named
    status, body = await put(client, "/api/v1/officials/CB01", api_key, {"code": "X", "name": "y"})
    assert status == 422 and body["fields"][0]["field"] == "code"
    status, body = await put(client, "/api/v1/officials/CB01", api_key, [1])
    assert status == 422 and body["error"] == "invalid_fields"
    assert await officials(runtime, agency) == {"CB01": "active", "CB02": "active"}
    async with runtime.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Procedure)) == 1


async def test_a_key_reaches_its_own_unit_only(
    client: Client, runtime: Runtime, agency: Agency, api_key: str
) -> None:
    other = await add_agency(runtime, "ubnd-khac", "UBND khác", ["CB01"])
    other_key = await runtime.service.create_api_key(other.code, "other")
    _status, body = await put(client, "/api/v1/officials", other_key, {"officials": []})
    assert body["retired"] == ["CB01"]  # its own CB01
    assert await officials(runtime, agency) == {"CB01": "active", "CB02": "active"}
    assert await officials(runtime, other) == {"CB01": "left"}
    missing = await client.put("/api/v1/officials", json={"officials": []})
    assert missing.status == 401 and (await missing.json())["error"] == "missing_api_key"


async def test_procedures_are_assigned_unassigned_and_shared_ones_keep_the_provinces_field(
    client: Client, runtime: Runtime, agency: Agency, api_key: str
) -> None:
    catalogue = {
        "procedures": [
            {"code": "1.001234", "name": "Đăng ký khai sinh", "field": "tu-phap"},
            {"code": "1.004227", "name": "Cấp giấy chứng nhận quyền sử dụng đất", "field": "tnmt"},
        ]
    }
    status, body = await put(client, "/api/v1/procedures", api_key, catalogue)
    assert status == 200 and body["created"] == ["1.004227"] and body["updated"] == ["1.001234"]
    again = await put(client, "/api/v1/procedures", api_key, catalogue)
    assert again[1]["unchanged"] == ["1.001234", "1.004227"]
    status, one = await put(client, "/api/v1/procedures", api_key, {"procedures": catalogue["procedures"][1:]})  # fmt: skip
    assert one["retired"] == ["1.001234"]
    status, refused = await report(client, api_key, procedure_code="1.001234")
    assert status == 422 and refused["error"] == "procedure_unassigned"
    status, unknown = await report(client, api_key, code="u", procedure_code="9.999", official_code="NO")  # fmt: skip
    assert status == 422 and {f["field"] for f in unknown["fields"]} == {"procedure_code", "official_code"}  # fmt: skip
    assert "9.999" in unknown["detail"] and "NO" in unknown["detail"]
    # Another unit handles the land procedure too: its field is no longer this unit's to change.
    other = await add_agency(runtime, "ubnd-khac", "UBND khác", [])
    other_key = await runtime.service.create_api_key(other.code, "other")
    status, shared = await put(
        client,
        "/api/v1/procedures/1.004227",
        other_key,
        {"name": "Cấp giấy chứng nhận quyền sử dụng đất", "field": "tnmt"},
    )
    assert status == 200 and shared["assigned"] is True
    status, conflict = await put(
        client,
        "/api/v1/procedures/1.004227",
        other_key,
        {"name": "Cấp giấy chứng nhận quyền sử dụng đất", "field": "xay-dung"},
    )
    assert status == 422 and conflict["fields"][0]["field"] == "field"
    async with runtime.sessions() as session:
        fields = {c: f for c, f in await session.execute(select(Procedure.code, Procedure.field))}
    assert fields == {"1.001234": "tu-phap", "1.004227": "tnmt"}
    assert (await report(client, other_key, code="o", procedure_code="1.004227"))[0] == 200


async def test_pushes_racing_each_other_land_once(
    client: Client, runtime: Runtime, agency: Agency, api_key: str
) -> None:
    other = await add_agency(runtime, "ubnd-khac", "UBND khác", [])
    other_key = await runtime.service.create_api_key(other.code, "other")
    staff = {"officials": [{"code": f"N{i}", "name": f"Cán bộ {i}"} for i in range(20)]}
    catalogue = {"procedures": [{"code": "2.000100", "name": "Cấp phép", "field": "y-te"}]}
    answers = await asyncio.gather(
        *(put(client, "/api/v1/officials", api_key, staff) for _ in range(4)),
        *(put(client, "/api/v1/procedures", key, catalogue) for key in (api_key, other_key)),
    )
    assert all(status == 200 for status, _ in answers)
    created = [code for _, body in answers[:4] for code in body["created"]]
    assert sorted(created) == sorted(o["code"] for o in staff["officials"])  # each once
    async with runtime.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Official)) == 22
        assert await session.scalar(select(func.count()).select_from(ProcedureAssignment)) == 2
        assert (
            await session.scalar(
                select(func.count()).select_from(Procedure).where(Procedure.code == "2.000100")
            )
            == 1
        )


async def test_a_moved_official_keeps_old_ratings_with_the_old_unit(
    client: Client, runtime: Runtime, agency: Agency, api_key: str
) -> None:
    other = await add_agency(runtime, "ubnd-moi", "UBND mới", [])
    other_key = await runtime.service.create_api_key(other.code, "other")
    await seed(runtime, agency.code, [Batch(3, "CB01")])
    assert await directory.move_official(runtime.sessions, agency.code, "CB01", other.code, today()) == "CB01"  # fmt: skip
    async with runtime.sessions() as session:
        rated = (
            await session.execute(
                select(Response.agency_id, Official.agency_id, Official.status).join(
                    Official, Official.id == Response.official_id
                )
            )
        ).all()
    assert rated == [(agency.id, agency.id, "moved")] * 3
    status, refused = await report(client, api_key, official_code="CB01")
    assert status == 422 and refused["error"] == "official_moved"
    status, view = await put(client, "/api/v1/officials/CB01", other_key, {"name": "Cán bộ CB01"})
    assert status == 200 and view["status"] == "active"
    assert (await report(client, other_key, official_code="CB01"))[0] == 200
    assert await officials(runtime, agency) == {"CB01": "moved", "CB02": "active"}


class _Req:
    """A minimal openapi-core request protocol object for a request we already sent."""

    def __init__(self, method: str, path: str, body: str, key: str = "") -> None:
        self.host_url = "http://localhost"
        self.path = path
        self.full_url_pattern = f"http://localhost{path}"
        self.method = method
        self.body = body.encode()
        self.content_type = "application/json"
        self.parameters = RequestParameters(header=Headers(auth(key)))


class _Resp:
    def __init__(self, status: int, data: bytes, content_type: str) -> None:
        self.status_code = status
        self.data = data
        self.content_type = content_type
        self.headers: dict[str, str] = {}
