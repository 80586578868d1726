"""Two processes behind a load balancer with no sticky sessions serve one simulator session
(issue 12, item 1): two runtimes on the same database and the same Redis prefix, each with its
own HTTP app and its own dispatcher, as two ``surveybot serve`` processes would be.

A session opened through process A is delivered to by process B's dispatcher and polled through
A; an answer posted through B is processed and its next question read through A; the survey
completes and is never marked undeliverable. With the mailboxes in process memory (as before),
B's dispatcher finds no mailbox for A's session and fails the invitation for good.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from bot.adapters.web.mailboxes import RedisMailboxes
from bot.app import create_app
from bot.runtime import Runtime
from storage.models import OutboxMessage, SurveyLedger
from storage.pseudonym import KeyRing
from tests.conftest import today
from tests.helpers import simulator_messages

Client = TestClient[Any, Any]


@pytest.fixture
async def runtime_b(runtime: Runtime, keyring: KeyRing) -> AsyncIterator[Runtime]:
    """A second process: same settings (database, Redis URL and prefix), its own everything."""
    other = await Runtime.create(runtime.settings, keyring=keyring, migrate=False)
    try:
        yield other
    finally:
        await other.close()


@pytest.fixture
async def client_b(runtime_b: Runtime) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(runtime_b, background=False))) as test_client:
        yield test_client


async def post(client: Client, path: str, **body: Any) -> dict[str, Any]:
    response = await client.post(path, json=body)
    assert response.status in (200, 202), await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


def last_question(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return next(m for m in reversed(messages) if m["question_id"] and not m["extra"].get("ack"))


async def test_a_survey_session_opened_on_one_process_is_served_by_another(
    client: Client, client_b: Client, runtime: Runtime, runtime_b: Runtime, api_key: str
) -> None:
    assert isinstance(runtime.web.mailboxes, RedisMailboxes)
    assert isinstance(runtime_b.web.mailboxes, RedisMailboxes)
    headers = {"Authorization": f"Bearer {api_key}"}
    registered = await client.post(
        "/api/v1/dossiers", headers=headers, json={"dossier_code": "HS-LB-1"}
    )
    token = (await registered.json())["rating_token"]
    session = (await post(client, "/simulator/api/session", token=token))["session"]
    reported = await client_b.post(
        "/api/v1/results",
        headers=headers,
        json={"dossier_code": "HS-LB-1", "returned_at": today().isoformat()},
    )
    assert reported.status == 200, await reported.text()

    await runtime_b.dispatcher.drain()  # B delivers to the session A opened
    async with runtime.sessions() as db:  # with mailboxes in memory, B finds none: all die
        assert set((await db.execute(select(OutboxMessage.status))).scalars()) == {"sent"}
    seen = await simulator_messages(client, session)  # and the page polling A sees it
    assert seen, "the page polling process A saw nothing of what B delivered"
    question = last_question(seen)
    assert "bao nhiêu lần" in question["text"]
    assert await simulator_messages(client_b, session) == seen  # either process: one mailbox

    # An answer posted through B, the next question read through A.
    await post(client_b, "/simulator/api/send", session=session, payload=question["buttons"][0][1])
    await runtime_b.dispatcher.drain()
    new = await simulator_messages(client, session, seen[-1]["id"])
    assert [m["extra"].get("ack") for m in new][:1] == [True]
    assert last_question(new)["question_id"] != question["question_id"]
    assert [m["id"] for m in new] == list(range(seen[-1]["id"] + 1, seen[-1]["id"] + 1 + len(new)))

    # The rest of the survey, alternating the process that takes the answer, the one that
    # dispatches and the one the page polls.
    processes = [(client, runtime), (client_b, runtime_b)]
    after, turn = new[-1]["id"], 0
    latest = new
    for _ in range(30):
        if latest[-1]["text"].startswith("Cảm ơn"):
            break
        question = last_question(latest)
        body: dict[str, Any] = {"session": session}
        if question["buttons"]:
            body["payload"] = question["buttons"][0][1]
        else:
            body["text"] = "Cán bộ nhiệt tình"
        await post(processes[turn % 2][0], "/simulator/api/send", **body)
        await processes[(turn + 1) % 2][1].dispatcher.drain()
        latest = await simulator_messages(processes[turn // 2 % 2][0], session, after)
        assert latest, "the next message never reached the page"
        after, turn = latest[-1]["id"], turn + 1
    assert latest[-1]["text"].startswith("Cảm ơn Ông/Bà đã đánh giá")

    async with runtime.sessions() as db:
        ledger = (await db.execute(select(SurveyLedger))).scalar_one()
        statuses = set((await db.execute(select(OutboxMessage.status))).scalars())
    assert ledger.status != "undeliverable" and ledger.completed is True
    assert statuses == {"sent"}  # nothing failed, nothing left behind


async def test_a_try_session_opened_on_one_process_is_answered_through_another(
    client: Client, client_b: Client
) -> None:
    opened = await post(client, "/simulator/api/session", survey="mot-cua", lang="vi")
    assert opened["mode"] == "try"
    session = opened["session"]
    polled = await client_b.get("/simulator/api/messages", params={"session": session})
    assert polled.status == 200, "process B does not know the session A opened"
    seen = (await polled.json())["messages"]  # the first question, read through B
    question = last_question(seen)
    await post(client_b, "/simulator/api/send", session=session, payload=question["buttons"][0][1])
    new = await simulator_messages(client, session, seen[-1]["id"])
    assert new and last_question(new)["question_id"] != question["question_id"]
    await post(client, "/simulator/api/send", session=session, text="1")
    assert await simulator_messages(client_b, session, new[-1]["id"])


async def test_an_unknown_session_is_still_refused_by_every_process(
    client: Client, client_b: Client
) -> None:
    for web in (client, client_b):
        polled = await web.get(
            "/simulator/api/messages", params={"session": "nobody", "after": "0"}
        )
        assert polled.status == 404
        sent = await web.post("/simulator/api/send", json={"session": "nobody", "text": "chào"})
        assert sent.status == 404
