"""Registration at the counter, on its fast path: the key and reference codes read as they are
now (a revoked key refused at once, an official added a moment ago found), and one
``INSERT … ON CONFLICT`` per new dossier (clients racing with one code get one dossier).
Over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import func, select, update

from bot.runtime import Runtime
from storage.models import ApiKey, Dossier, Official, utcnow

Client = TestClient[Any, Any]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_revoked_key_is_refused_at_once(
    client: Client, runtime: Runtime, api_key: str
) -> None:
    first = await client.post(
        "/api/v1/dossiers", headers=auth(api_key), json={"dossier_code": "K1"}
    )
    assert first.status == 201
    async with runtime.sessions() as session:
        await session.execute(update(ApiKey).values(revoked_at=utcnow()))
        await session.commit()
    refused = await client.post(
        "/api/v1/dossiers", headers=auth(api_key), json={"dossier_code": "K2"}
    )
    assert refused.status == 401
    assert (await refused.json())["error"] == "invalid_api_key"
    results = await client.post(
        "/api/v1/results", headers=auth(api_key),
        json={"dossier_code": "K1", "returned_at": utcnow().date().isoformat()},
    )  # fmt: skip
    assert results.status == 401


async def test_an_unknown_official_added_later_is_found_at_once(
    client: Client, runtime: Runtime, api_key: str
) -> None:
    body = {"dossier_code": "K3", "official_code": "CB77"}
    missing = await client.post("/api/v1/dossiers", headers=auth(api_key), json=body)
    assert missing.status == 422 and (await missing.json())["error"] == "unknown_official"
    async with runtime.sessions() as session:
        agency_id = (await session.execute(select(ApiKey.agency_id))).scalar_one()
        session.add(Official(agency_id=agency_id, code="CB77", name="Lê Văn C"))
        await session.commit()
    found = await client.post("/api/v1/dossiers", headers=auth(api_key), json=body)
    assert found.status == 201


async def test_clients_racing_with_one_code_get_one_dossier_and_no_error(
    client: Client, runtime: Runtime, api_key: str
) -> None:
    async def register() -> tuple[int, dict[str, Any]]:
        answer = await client.post(
            "/api/v1/dossiers", headers=auth(api_key), json={"dossier_code": "K-RACE"}
        )
        return answer.status, await answer.json()

    answers = await asyncio.gather(*(register() for _ in range(8)))
    assert sorted(status for status, _ in answers) == [200] * 7 + [201]
    async with runtime.sessions() as session:
        dossiers = (await session.execute(select(func.count()).select_from(Dossier))).scalar_one()
        token_hash = (await session.execute(select(Dossier.token_hash))).scalar_one()
    assert dossiers == 1
    # The last registration's token is the one that binds; each answer carried a fresh one.
    assert len({body["rating_token"] for _, body in answers}) == 8
    assert token_hash is not None
