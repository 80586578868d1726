"""Per-chat flood limits: the same tap repeated is one tap; beyond the chat's rate, one polite
"please slow down" and nothing else. The racers run at the same time (asyncio.gather), through
one runtime or two sharing Redis, on both databases."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.inbound import route_button, route_text
from bot.runtime import Runtime
from bot.schemas import DossierRegistration, ResultBatch, ResultReport
from storage.models import Agency, Answer
from storage.pseudonym import KeyRing
from tests.conftest import today
from tests.test_limits import FakeClock

STALE = "Nút này thuộc câu hỏi trước"
SLOW = "Bạn gửi tin nhắn nhanh quá"


async def open_survey(runtime: Runtime, agency: Agency, code: str) -> str:
    session = await runtime.web.open_session()
    reg = await runtime.service.register_dossier(agency, DossierRegistration(dossier_code=code))
    await runtime.service.bind(reg.rating_token, "web", session, "vi")
    await runtime.service.report_results(
        agency, ResultBatch(results=[ResultReport(dossier_code=code, returned_at=today())])
    )
    await runtime.dispatcher.drain()
    return session


def question_of(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return next(m for m in reversed(messages) if m["buttons"] and m["question_id"])


async def answers(runtime: Runtime) -> int:
    async with runtime.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(Answer))).scalar_one())


def unprotected(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Today's behaviour: no tap marks, no chat rate."""
    runtime.settings.rate_limits_enabled = False
    first_time = runtime.coordinator.first_time

    async def always_first(key: str, ttl: int) -> bool:
        return True if key.startswith("tap:") else await first_time(key, ttl)

    monkeypatch.setattr(runtime.coordinator, "first_time", always_first)


@pytest.mark.parametrize("protected", [True, False], ids=["protected", "unprotected"])
async def test_twenty_identical_presses_at_once_give_one_answer_and_one_next_question(
    runtime: Runtime, agency: Agency, monkeypatch: pytest.MonkeyPatch, protected: bool
) -> None:
    if not protected:
        unprotected(runtime, monkeypatch)
    session = await open_survey(runtime, agency, "HS-FLOOD-1")
    before = await runtime.web.poll(session, 0)
    first = question_of(before)
    payload = first["buttons"][0][1]
    outcomes = await asyncio.gather(
        *(route_button(runtime.service, "web", session, payload) for _ in range(20))
    )
    await runtime.dispatcher.drain()
    after = await runtime.web.poll(session, before[-1]["id"])
    notes = [m for m in after if STALE in m["text"]]
    nexts = [m for m in after if m["question_id"] and m["question_id"] != first["question_id"]]
    if protected:
        assert [o.kind for o in outcomes].count("answered") == 1
        assert await answers(runtime) == 1
        assert notes == [] and len(nexts) == 1
        assert not any(SLOW in m["text"] for m in after)  # one tap is not a flood
    else:  # the figures: 19 notes and 20 copies of the next question
        assert await answers(runtime) == 1
        assert len(notes) == 19 and len(nexts) == 20


async def test_presses_racing_through_two_runtimes_sharing_redis_are_one_tap(
    runtime: Runtime, agency: Agency, keyring: KeyRing
) -> None:
    session = await open_survey(runtime, agency, "HS-FLOOD-2")
    before = await runtime.web.poll(session, 0)
    payload = question_of(before)["buttons"][0][1]
    other = await Runtime.create(runtime.settings, keyring=keyring, migrate=False)
    try:
        outcomes = await asyncio.gather(
            *(
                route_button((runtime if i % 2 else other).service, "web", session, payload)
                for i in range(20)
            )
        )
    finally:
        await other.close()
    await runtime.dispatcher.drain()
    after = await runtime.web.poll(session, before[-1]["id"])
    assert [o.kind for o in outcomes].count("answered") == 1 and await answers(runtime) == 1
    assert not any(STALE in m["text"] for m in after)


async def test_an_old_button_tapped_again_and_again_gets_one_note(
    runtime: Runtime, agency: Agency
) -> None:
    session = await open_survey(runtime, agency, "HS-FLOOD-3")
    before = await runtime.web.poll(session, 0)
    first = question_of(before)
    await route_button(runtime.service, "web", session, first["buttons"][0][1])
    await runtime.dispatcher.drain()
    shown = (await runtime.web.poll(session, 0))[-1]["id"]
    old = first["buttons"][1][1]  # another option of the answered question
    await asyncio.gather(*(route_button(runtime.service, "web", session, old) for _ in range(10)))
    await runtime.dispatcher.drain()
    notes = [m for m in await runtime.web.poll(session, shown) if STALE in m["text"]]
    assert len(notes) == 1 and await answers(runtime) == 1


async def test_a_tap_that_failed_is_processed_when_it_comes_again(
    runtime: Runtime, agency: Agency, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tap's mark is dropped when its processing fails: the redelivery is not a duplicate."""
    session = await open_survey(runtime, agency, "HS-FLOOD-4")
    payload = question_of(await runtime.web.poll(session, 0))["buttons"][0][1]
    store = runtime.service.responses.store
    calls = 0

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database went away")
        return await store(*args, **kwargs)

    monkeypatch.setattr(runtime.service.responses, "store", flaky)
    with pytest.raises(ConnectionError):
        await route_button(runtime.service, "web", session, payload)
    assert (await route_button(runtime.service, "web", session, payload)).kind == "answered"
    assert await answers(runtime) == 1


@pytest.mark.parametrize("protected", [True, False], ids=["protected", "unprotected"])
async def test_a_flood_of_messages_gets_one_slow_down_not_one_reply_each(
    runtime: Runtime, agency: Agency, monkeypatch: pytest.MonkeyPatch, protected: bool
) -> None:
    clock = FakeClock()
    runtime.coordinator.limiter.clock = clock  # type: ignore[attr-defined]
    if not protected:
        unprotected(runtime, monkeypatch)
    session = await open_survey(runtime, agency, "HS-FLOOD-5")
    shown = (await runtime.web.poll(session, 0))[-1]["id"]
    await asyncio.gather(
        *(route_text(runtime.service, "web", session, f"xin chào {i}") for i in range(40))
    )
    await runtime.dispatcher.drain()
    replies = await runtime.web.poll(session, shown)
    slow = [m for m in replies if SLOW in m["text"]]
    if not protected:
        assert slow == [] and len(replies) >= 40  # one reply (or two) for every message
        return
    burst = runtime.settings.chat_burst
    assert len(slow) == 1
    assert len(replies) <= burst + 2  # the first miss re-asks with help: two messages
    # Still flooding: no second notice within the notice window.
    last = replies[-1]["id"]
    await asyncio.gather(*(route_text(runtime.service, "web", session, "???") for _ in range(5)))
    await runtime.dispatcher.drain()
    assert await runtime.web.poll(session, last) == []
    # Once the citizen slows down, their answer is read again.
    clock.advance(1 / runtime.settings.chat_rate_per_second)
    assert (await route_text(runtime.service, "web", session, "1")).kind == "answered"
    assert await answers(runtime) == 1


async def test_commands_and_links_count_against_the_same_chat_rate(
    runtime: Runtime, agency: Agency
) -> None:
    runtime.coordinator.limiter.clock = FakeClock()  # type: ignore[attr-defined]
    runtime.settings.chat_burst = 3
    session = await runtime.web.open_session()
    await asyncio.gather(
        *(route_text(runtime.service, "web", session, "/help") for _ in range(4)),
        *(route_text(runtime.service, "web", session, "/start not-a-token") for _ in range(4)),
    )
    await runtime.dispatcher.drain()
    replies = await runtime.web.poll(session, 0)
    assert len(replies) == 4 and sum(SLOW in m["text"] for m in replies) == 1
