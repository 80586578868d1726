"""/delete leaves no trace (issue 10, item 4), on the web simulator through the HTTP API.

A citizen completes one survey (with a comment), is midway through a second, and has bound a
third dossier whose result is not back yet; then erases. Afterwards every table and every Redis
key and value is searched for the chat address, every pseudonym this chat could be stored under,
the ids of its responses and the answers themselves. The Telegram run of the same scenario is in
``test_telegram_erasure``.
"""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select

from bot.runtime import Runtime
from storage.models import Agency, Invitation, OutboxMessage, Response, SurveyLedger
from storage.pseudonym import normalise_identifier
from tests.conftest import today
from tests.helpers import (
    answer_with_first_buttons,
    assert_absent,
    dump_database,
    dump_redis,
    simulator_messages,
)

Client = TestClient[Any, Any]
COMMENT = "Phòng chờ hơi nóng, nên có thêm quạt"
#: What the first button of each mot-cua question records and echoes back.
ANSWERS = {
    "label c3": "Không lần nào",
    "label c4": "Không phải liên hệ nơi nào khác",
    "label c6": "Có, cả niêm yết và trên mạng",
    "label c7": "Nhiệt tình, chu đáo",
    "label overall": "Rất hài lòng",
    "value overall": "rat_hai_long",
    "comment": COMMENT,
}


class AgencyApi:
    def __init__(self, client: Client, api_key: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {api_key}"}

    async def register(self, code: str) -> str:
        body = {"dossier_code": code, "official_code": "CB01", "procedure_code": "1.001234"}
        response = await self.client.post("/api/v1/dossiers", headers=self.headers, json=body)
        assert response.status == 201, await response.text()
        return str((await response.json())["rating_token"])

    async def report(self, code: str) -> str:
        body = {"dossier_code": code, "returned_at": today().isoformat()}
        response = await self.client.post("/api/v1/results", headers=self.headers, json=body)
        assert response.status == 200, await response.text()
        item = (await response.json())["items"][0]
        return str(item.get("survey_status") or item["status"])


def traces(runtime: Runtime, channel: str, address: str) -> dict[str, str]:
    """The raw address and every pseudonym of it, under every key, namespaced or legacy."""
    found = {"chat address": address}
    for purpose in ("contact", "rater"):
        for n, p in enumerate(runtime.keyring.channel_candidates(purpose, channel, address)):
            found[f"{purpose} pseudonym {n}"] = p.digest
    return found


async def ledger_of(runtime: Runtime, agency: Agency, code: str) -> SurveyLedger:
    digest = runtime.keyring.pseudonym("dossier", f"{agency.id}:{normalise_identifier(code)}")
    async with runtime.sessions() as session:
        return (
            await session.execute(
                select(SurveyLedger).where(SurveyLedger.dossier_hash == digest.digest)
            )
        ).scalar_one()


async def send(client: Client, session: str, **body: str) -> None:
    response = await client.post("/simulator/api/send", json={"session": session, **body})
    assert response.status == 202, await response.text()


async def test_delete_leaves_no_trace_of_the_citizen_on_the_web_simulator(
    client: Client, runtime: Runtime, agency: Agency, api_key: str, redis_prefix: str
) -> None:
    api = AgencyApi(client, api_key)
    token = await api.register("HS-E-A")
    opened = await client.post("/simulator/api/session", json={"token": token})
    session = (await opened.json())["session"]
    assert await api.report("HS-E-A") == "sent"
    seen = await answer_with_first_buttons(client, runtime, session, texts={"comment": COMMENT})
    assert seen[-1]["text"].startswith("Cảm ơn")

    # A second dossier bound to the same chat, its survey half answered.
    await send(client, session, text=f"/start {await api.register('HS-E-B')}")
    assert await api.report("HS-E-B") == "sent"
    await runtime.dispatcher.drain()
    question = (await simulator_messages(client, session))[-1]
    await send(client, session, payload=question["buttons"][0][1])
    # A third bound at reception, its result not back yet.
    await send(client, session, text=f"/start {await api.register('HS-E-C')}")
    await runtime.dispatcher.drain()

    async with runtime.sessions() as db:
        response_ids = list((await db.execute(select(Response.id))).scalars())
        [open_survey] = (await db.execute(select(Invitation.id))).scalars().all()
    assert len(response_ids) == 2
    identifiers = {
        **traces(runtime, "web", session),
        **{f"response id {n}": rid for n, rid in enumerate(response_ids)},
        **ANSWERS,
    }
    before = await dump_database(runtime)
    for name in ("contact pseudonym 0", "rater pseudonym 0", "comment", "value overall"):
        assert identifiers[name] in before, f"{name} was never stored: the scan would prove nothing"

    await send(client, session, text="/delete")
    await runtime.dispatcher.drain()
    confirm = (await simulator_messages(client, session))[-1]
    assert [b[1] for b in confirm["buttons"]] == ["cmd:delete:yes", "cmd:delete:no"]
    await send(client, session, payload="cmd:delete:yes")
    await runtime.dispatcher.drain()
    assert (await simulator_messages(client, session))[-1]["text"] == "Đã xoá 2 phiếu trả lời."

    assert_absent(
        identifiers,
        {"database": await dump_database(runtime), "redis": await dump_redis(redis_prefix)},
    )
    # The open survey's messages are gone, queued or sent; what is left of the outbox is
    # delivered rows that lost payload, address and conversation when they were sent (the
    # confirmation among them), until the purge.
    async with runtime.sessions() as db:
        rows = list((await db.execute(select(OutboxMessage))).scalars())
    assert rows and all(r.invitation_id != open_survey for r in rows)
    assert {(r.status, str(r.payload), r.address_sealed, r.conversation) for r in rows} == {
        ("sent", "{}", None, "")
    }
    # The open survey's ledger row still stops a second survey of its dossier, and reads as a
    # survey that closed unanswered; the completed one keeps its count, and nothing left in the
    # database leads from this chat to it (who was asked and what was answered stay unlinked).
    erased = await ledger_of(runtime, agency, "HS-E-B")
    assert (erased.status, erased.completed) == ("expired", False)
    assert await api.report("HS-E-B") == "duplicate"
    assert (await ledger_of(runtime, agency, "HS-E-A")).completed is True
    # The dossier still waiting for its result is no longer bound to this chat.
    assert await api.report("HS-E-C") == "waiting_for_binding"
    await runtime.dispatcher.drain()
    assert (await simulator_messages(client, session))[-1]["text"] == "Đã xoá 2 phiếu trả lời."
