"""The dead-letter page: a province admin sees what failed (never its content) and retries it;
the retried event is then processed once, with its original body."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select

from bot.dashboard import auth
from bot.runtime import Runtime
from storage import inbox, outbox
from storage.models import Agency, OutboxMessage
from tests.test_dashboard import csrf_of, login
from tests.test_outbox import make_runtime, stall

SECRET = "Cán bộ Nguyễn Văn A rất tận tình"


async def test_an_admin_retries_a_dead_letter_and_it_is_processed_once(
    client: TestClient[Any, Any], runtime: Runtime, agency: Agency
) -> None:
    seen: list[dict[str, Any]] = []
    broken = True

    async def handler(event: inbox.Claimed) -> object:
        if broken:
            raise ConnectionError("the channel's settings were wrong")
        seen.append(event.body)
        return "ok"

    runtime.inbox.register("flaky", handler)
    runtime.inbox.max_attempts = 1
    async with runtime.sessions() as session:
        event_id = await inbox.accept(
            session,
            runtime.keyring,
            channel="flaky",
            event_key="update-1",
            conversation="chat-1",
            body={"text": SECRET},
        )
        await session.commit()
    assert event_id is not None
    assert await runtime.inbox.run_once() == 1  # fails: with one attempt allowed, a dead letter
    await auth.create_user(runtime.sessions, "lan", "mat-khau-dai", "admin")
    await auth.create_user(runtime.sessions, "xem", "mat-khau-dai", "viewer", "ubnd-test")
    async with runtime.sessions() as session:
        outbox.enqueue(
            session,
            runtime.keyring,
            channel="telegram",
            address_sealed=runtime.keyring.seal("42", "address"),
            conversation="c",
            payload={"text": "hi"},
            priority=outbox.PRIORITY_INVITATION,
        )
        await session.commit()
        [message] = (await session.execute(select(OutboxMessage))).scalars()
        await outbox.mark_failed(
            session,
            outbox.Claimed(message.id, "telegram", "", {}, 1, None, "c"),
            "Forbidden: bot was blocked by the user",
            retry_after=None,
            permanent=True,
            max_attempts=5,
        )
        await session.commit()

    assert (await login(client, "lan", "mat-khau-dai")).status == 303
    page = await client.get("/admin/dead-letters")
    html = await page.text()
    assert page.status == 200
    assert f'data-id="{event_id}"' in html and "ConnectionError" in html
    assert "Forbidden: bot was blocked by the user" in html  # counted on the outbound side
    assert SECRET not in html and "Nguyễn" not in html  # the event's content is never shown

    csrf = await csrf_of(client, "/admin/dead-letters")
    refused = await client.post(
        "/admin/dead-letters/retry", data={"queue": "inbox", "id": event_id}
    )
    assert refused.status == 403  # no CSRF token: nothing retried
    retried = await client.post(
        "/admin/dead-letters/retry",
        data={"csrf": csrf, "queue": "inbox", "id": event_id},
        allow_redirects=False,
    )
    assert retried.status == 303 and retried.headers["Location"].endswith("retried=1")
    again = await client.post(
        "/admin/dead-letters/retry", data={"csrf": csrf, "queue": "inbox", "id": event_id}
    )
    assert again.status == 404 and "đã được thử lại" in await again.text()

    broken = False
    assert await runtime.inbox.run_once() == 1
    assert seen == [{"text": SECRET}]  # processed once, with its original body
    assert await runtime.inbox.run_once() == 0
    after = await (await client.get("/admin/dead-letters")).text()
    assert f'data-id="{event_id}"' not in after
    entries = await runtime.audit.recent()
    assert any(
        e.action == "dead_letter.retry"
        and e.detail == {"queue": "inbox", "count": 1, "channels": ["flaky"]}
        for e in entries
    )

    client.session.cookie_jar.clear()
    assert (await login(client, "xem", "mat-khau-dai")).status == 303
    assert (await client.get("/admin/dead-letters")).status == 403  # agencies never see it


async def test_an_admin_sends_a_stalled_survey_message_again(
    client: TestClient[Any, Any], runtime: Runtime, agency: Agency
) -> None:
    """An outage ran a survey's retries out: the admin sees it (channel, reason; no address) and
    retries it from the page; the dispatcher then sends it."""
    runtime, channel = await make_runtime(runtime)
    dispatcher = await stall(runtime, agency, channel, "HS-D", "citizen-42")
    await auth.create_user(runtime.sessions, "lan", "mat-khau-dai", "admin")
    assert (await login(client, "lan", "mat-khau-dai")).status == 303
    html = await (await client.get("/admin/dead-letters")).text()
    assert 'data-testid="stalled"' in html and "502 Bad Gateway" in html
    assert "citizen-42" not in html and "Kính chào" not in html

    csrf = await csrf_of(client, "/admin/dead-letters")
    bad = await client.post("/admin/dead-letters/retry", data={"csrf": csrf, "queue": "x"})
    assert bad.status == 400
    retried = await client.post(
        "/admin/dead-letters/retry",
        data={"csrf": csrf, "queue": "outbox", "id": "all"},
        allow_redirects=False,
    )
    assert retried.status == 303 and retried.headers["Location"].endswith("retried=1")
    await dispatcher.drain()
    assert "bao nhiêu lần" in channel.received["citizen-42"][-1]
    assert 'data-testid="no-stalled"' in await (await client.get("/admin/dead-letters")).text()
    entries = await runtime.audit.recent()
    assert any(
        e.action == "dead_letter.retry"
        and e.detail == {"queue": "outbox", "count": 1, "channels": ["flaky"]}
        for e in entries
    )
