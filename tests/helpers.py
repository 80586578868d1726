"""Helpers shared by tests: drive a simulator conversation; dump every store for the
confidentiality checks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis
from sqlalchemy import select

from bot.runtime import Runtime
from storage.models import Base
from tests.conftest import REDIS_URL


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, every: float = 0.02
) -> None:
    """Wait until ``check()`` holds, polling: the event a test waits for, with a deadline
    (TimeoutError past ``timeout``) instead of a fixed sleep that hopes it has happened."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 - any condition, not one event
            await asyncio.sleep(every)


async def simulator_messages(
    client: TestClient[Any, Any], session: str, after: int = 0
) -> list[dict[str, Any]]:
    response = await client.get(
        "/simulator/api/messages", params={"session": session, "after": str(after)}
    )
    assert response.status == 200
    return list((await response.json())["messages"])


async def answer_with_first_buttons(
    client: TestClient[Any, Any],
    runtime: Runtime,
    session: str,
    texts: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Tap the first option of every question (or type ``texts[question_id]``) until the end."""
    texts = texts or {}
    seen: list[dict[str, Any]] = []
    after = 0
    for _ in range(30):
        await runtime.dispatcher.drain()
        new = await simulator_messages(client, session, after)
        if not new:
            break
        seen += new
        after = new[-1]["id"]
        question = next((m for m in reversed(new) if m["buttons"] or m["question_id"]), None)
        if question is None or not question["question_id"] or question.get("extra", {}).get("ack"):
            continue
        qid = question["question_id"]
        if qid in texts:
            body: dict[str, Any] = {"session": session, "text": texts[qid]}
        else:
            body = {"session": session, "payload": question["buttons"][0][1]}
        response = await client.post("/simulator/api/send", json=body)
        assert response.status == 202, await response.text()
    return seen


def assert_absent(identifiers: Mapping[str, str], places: Mapping[str, str]) -> None:
    """Fail naming the first raw identifier found in any dumped place (its value stays out of
    the message, so a failing run does not print it again)."""
    for where, text in places.items():
        for name, value in identifiers.items():
            assert value not in text, f"{name} found in {where}"


#: Survey definitions as published (storage/surveys.py keeps each version used): the same text
#: as the package's YAML, every option label and value in it, and never written from a chat.
DEFINITION_TABLES = frozenset({"survey_version"})


async def dump_database(runtime: Runtime) -> str:
    """Every row of every table that can hold what a citizen did (not the survey definitions,
    which hold every answer's label because they are the questionnaire)."""
    parts: list[str] = []
    async with runtime.sessions() as session:
        for table in Base.metadata.sorted_tables:
            if table.name in DEFINITION_TABLES:
                continue
            for row in (await session.execute(select(table))).all():
                parts.append(f"{table.name}: {tuple(row)!r}")
    return "\n".join(parts)


async def dump_redis(prefix: str) -> str:
    client = Redis.from_url(REDIS_URL)
    parts: list[str] = []
    async for key in client.scan_iter(match=f"{prefix}*"):
        raw_kind = await client.type(key)
        kind = raw_kind.decode() if isinstance(raw_kind, bytes) else str(raw_kind)
        value: Any
        if kind == "string":
            value = await client.get(key)
        elif kind == "hash":
            value = await client.hgetall(key)
        elif kind == "list":
            value = await client.lrange(key, 0, -1)
        elif kind == "set":
            value = await client.smembers(key)
        elif kind == "zset":
            value = await client.zrange(key, 0, -1, withscores=True)
        else:
            value = kind
        parts.append(f"{key!r} = {value!r}")
    await client.aclose()
    return "\n".join(parts)
