"""Small helpers shared by tests: drive a web-simulator conversation to its end."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from bot.runtime import Runtime


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
