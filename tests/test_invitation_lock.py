"""One lock discipline: every path that changes an invitation holds its lock
(``storage.coordination.invitation_lock``), so an answer and an expiry of the same invitation,
run truly at once, never interleave: the answer is stored and then the expiry closes the survey
with it, scored. Without the lock the expiry closes the survey inside the answer's critical
section, and the answer is lost ("no survey open")."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from bot.inbound import route_button
from bot.runtime import Runtime
from storage.models import Agency, Invitation, Response, SurveyLedger
from tests.test_lifecycle import open_survey, travel


async def test_an_answer_and_an_expiry_of_one_invitation_do_not_interleave(
    runtime: Runtime, agency: Agency, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = await open_survey(runtime, agency, "HS-LOCK-1")
    question = (await runtime.web.poll(session, 0))[-1]
    payload = question["buttons"][0][1]

    # A pause inside the answer's critical section: once it holds the invitation's lock, before
    # it reads the invitation (so on SQLite no database lock is held while it waits).
    inside, release = asyncio.Event(), asyncio.Event()
    ctx = runtime.service.ctx
    hold = ctx.hold

    @contextlib.asynccontextmanager
    async def paused(invitation_id: str | None) -> AsyncIterator[None]:
        async with hold(invitation_id):
            task = asyncio.current_task()
            if invitation_id and task is not None and task.get_name() == "answer":
                inside.set()
                await release.wait()
            yield

    monkeypatch.setattr(ctx, "hold", paused)

    # Seen through the coordinator: the expiry asking for an invitation's lock while the answer
    # is paused.
    waiting = asyncio.Event()
    lock = runtime.coordinator.lock

    def watched(
        name: str, *args: Any, **kwargs: Any
    ) -> contextlib.AbstractAsyncContextManager[None]:
        if name.startswith("invitation:") and inside.is_set():
            waiting.set()
        return lock(name, *args, **kwargs)

    monkeypatch.setattr(runtime.coordinator, "lock", watched)

    answer = asyncio.create_task(
        route_button(runtime.service, "web", session, payload), name="answer"
    )
    await inside.wait()
    travel(runtime, runtime.settings.survey_ttl_hours + 1)
    expiry = asyncio.create_task(runtime.service.close_expired())
    # The expiry either waits for the invitation's lock (the discipline) or, were there none,
    # runs to its end while the answer is still paused: both are events to wait for.
    asked = asyncio.create_task(waiting.wait())
    await asyncio.wait({expiry, asked}, return_when=asyncio.FIRST_COMPLETED)
    asked.cancel()
    release.set()
    outcome, closed = await asyncio.gather(answer, expiry)

    assert outcome.kind == "answered"
    assert closed == 1
    async with runtime.sessions() as db:
        assert (await db.execute(select(Invitation))).scalars().all() == []
        [ledger] = (await db.execute(select(SurveyLedger))).scalars().all()
        [response] = (await db.execute(select(Response))).scalars().all()
    assert ledger.status == "expired" and not ledger.completed
    assert response.answers  # the answer given before the expiry is kept, and scored with it
