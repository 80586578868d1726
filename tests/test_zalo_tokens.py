"""The OA token pair shared by several processes, against the emulator over real HTTP.

Why: Zalo's refresh token is single-use and rotating, and (../shared/reference/zalo.md §3) the
access token a refresh replaces stops working at once. A second process still holding the old
access token in memory must notice the token error, take the new pair from the shared store
(never refresh a second time with a spent refresh token) and deliver its message once. Whether
the replaced token really dies is one reading of the sources; the other keeps it valid until its
own expiry, so each test runs under both.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.adapters.zalo.ratings import reconcile
from bot.adapters.zalo.zns import MAX_REFRESHES_PER_RUN
from bot.runtime import Runtime
from storage.models import AuditEntry, OutboxMessage, Response, ZaloToken
from storage.pseudonym import KeyRing
from tests.test_zalo_channels import Zalo, virtual_sleep, zalo_stack

REVOKE_READINGS = {"replaced-token-revoked": True, "replaced-token-lives-on": False}


@pytest.fixture(params=list(REVOKE_READINGS))
async def two_processes(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    database_url: str,
    keyring: KeyRing,
    redis_prefix: str,
) -> AsyncIterator[tuple[Zalo, Runtime]]:
    """Our service twice on one database and one Redis: the process behind the webhook (``zalo``)
    and a second one that only dispatches, each with its own token manager and memory."""
    revoke = REVOKE_READINGS[str(request.param)]
    async with zalo_stack(
        tmp_path, database_url, keyring, redis_prefix, revoke_replaced_access_token=revoke
    ) as zalo:
        other = await Runtime.create(zalo.rt.settings, keyring=keyring, migrate=False)
        assert other.zalo is not None
        other.zalo.clock = lambda: zalo.emu.now_ms() / 1000
        other.zalo.sleep = virtual_sleep(zalo.emu)
        try:
            yield zalo, other
        finally:
            await other.close()


def surveys_sent(zalo: Zalo, uid: str) -> int:
    return len([m for m in zalo.emu.transcript(uid) if "Kính chào" in m.text])


async def test_a_process_holding_the_replaced_token_reloads_it_and_delivers_once(
    two_processes: tuple[Zalo, Runtime],
) -> None:
    zalo, other = two_processes
    emu = zalo.emu
    codes = [f"000.00.12.H29-261124-07{i:02d}" for i in range(3)]
    users = [await zalo.oa_citizen(await zalo.register(code)) for code in codes]

    # Binding replies made the first process refresh once (the bootstrap refresh token); the
    # second process sends a survey: it takes that access token from the store and keeps it.
    assert emu.refresh_count == 1
    await zalo.report({"dossier_code": codes[0]})
    await other.dispatcher.drain()
    await emu.wait_idle()
    assert surveys_sent(zalo, users[0]) == 1 and emu.refresh_count == 1
    held = emu.calls_to("/v3.0/oa/message/cs")[-1].headers["access_token"]

    # The first process is told its token is expired (Zalo may say so early) and refreshes:
    # a new pair, and the token the second process holds is the replaced one.
    emu.inject("/v3.0/oa/message/cs", "expired_token")
    await zalo.report({"dossier_code": codes[1]})
    await zalo.settle()
    assert surveys_sent(zalo, users[1]) == 1 and emu.refresh_count == 2

    # The second process sends with the token it still holds.
    before = len(emu.calls_to("/v3.0/oa/message/cs"))
    received = len(emu.transcript(users[2]))
    await zalo.report({"dossier_code": codes[2]})
    await other.dispatcher.drain()
    await emu.wait_idle()
    calls = emu.calls_to("/v3.0/oa/message/cs")[before:]
    assert calls[0].headers["access_token"] == held
    if emu.revoke_replaced_access_token:
        assert calls[0].error == emu.expired_token_code
        assert calls[0].fault is None  # refused because it was replaced, nothing injected
        calls = calls[1:]
        assert calls and all(c.headers["access_token"] != held for c in calls)
    assert calls and all(c.error == 0 for c in calls)
    new_messages = emu.transcript(users[2])[received:]
    assert len(new_messages) == len(calls)  # each message sent once, none twice
    assert len({m.text for m in new_messages}) == len(new_messages)
    assert surveys_sent(zalo, users[2]) == 1
    assert emu.refresh_count == 2  # taken from the shared store: no refresh of its own

    async with zalo.rt.sessions() as session:
        row = await session.get(ZaloToken, emu.app_id)
        statuses = (await session.execute(select(OutboxMessage.status))).scalars().all()
    assert row is not None and row.status == "ok"
    assert "dead" not in statuses and "pending" not in statuses
    assert emu.valid_refresh_tokens == [zalo.rt.keyring.open(row.refresh_sealed or "")]


# ------------------------------------------------------------------ refresh failures: passing or not
OAUTH = "/v4/oa/access_token"


async def zns_report(zalo: Zalo, code: str, phone: str = "0912345678") -> None:
    """A phone-only citizen's result: the ZNS rating template is due (it needs the token)."""
    await zalo.report({"dossier_code": code, "phone": phone})
    await zalo.settle()


async def grant(zalo: Zalo) -> tuple[str | None, list[str]]:
    """The stored grant's status (None: never stored) and the admin alerts recorded."""
    async with zalo.rt.sessions() as session:
        row = await session.get(ZaloToken, zalo.emu.app_id)
        alerts = (await session.execute(select(AuditEntry.action))).scalars().all()
    return (row.status if row else None), list(alerts)


async def make_due_now(zalo: Zalo) -> None:
    """The dispatcher's next pass takes the paused messages (their wait, in real time, is over)."""
    async with zalo.rt.sessions() as session:
        for message in (await session.execute(select(OutboxMessage))).scalars():
            if message.status == "pending":
                message.available_at = message.created_at
        await session.commit()


@pytest.fixture
async def zalo(
    tmp_path: Path, database_url: str, keyring: KeyRing, redis_prefix: str
) -> AsyncIterator[Zalo]:
    async with zalo_stack(tmp_path, database_url, keyring, redis_prefix) as stack:
        yield stack


@pytest.mark.parametrize("fault", ["429", "500", "rate_limit", "unknown_error"])
async def test_a_passing_refresh_failure_is_retried_and_the_survey_goes_out(
    zalo: Zalo, fault: str
) -> None:
    emu = zalo.emu
    emu.inject(OAUTH, fault)
    started = emu.now_ms()
    await zns_report(zalo, "000.00.12.H29-261124-1001")
    assert len(emu.zns_sent_to("84912345678")) == 1  # the citizen got the template, once
    assert [c.fault for c in emu.calls_to(OAUTH)] == [fault, None]
    assert emu.refresh_count == 1
    assert await grant(zalo) == ("ok", [])  # not failed, nobody alerted
    settings = zalo.rt.settings
    waited_s = (emu.now_ms() - started) / 1000  # the backoff, slept on the virtual clock
    assert settings.zalo_token_refresh_backoff_seconds / 2 <= waited_s
    assert waited_s <= settings.zalo_token_refresh_budget_seconds


async def test_a_5xx_storm_past_the_retries_pauses_sends_and_keeps_the_grant(zalo: Zalo) -> None:
    emu = zalo.emu
    settings = zalo.rt.settings
    emu.inject(OAUTH, "500", count=1000)
    started = emu.now_ms()
    await zns_report(zalo, "000.00.12.H29-261124-1002")
    assert emu.zns_sent_to("84912345678") == []
    assert len(emu.calls_to(OAUTH)) == settings.zalo_token_refresh_attempts  # a few tries
    assert (emu.now_ms() - started) / 1000 <= settings.zalo_token_refresh_budget_seconds
    status, alerts = await grant(zalo)
    assert status != "failed" and alerts == []
    async with zalo.rt.sessions() as session:
        [waiting] = (await session.execute(select(OutboxMessage))).scalars().all()
    assert waiting.status == "pending" and waiting.attempts == 0  # paused, never given up

    await make_due_now(zalo)  # sent again before the wait is over: no new storm of calls
    await zalo.settle()
    assert len(emu.calls_to(OAUTH)) == settings.zalo_token_refresh_attempts

    emu.clear_faults()  # Zalo is back
    emu.advance(settings.zalo_token_refresh_retry_later_seconds)
    await make_due_now(zalo)
    await zalo.settle()
    assert len(emu.zns_sent_to("84912345678")) == 1  # retried next time, delivered once
    assert await grant(zalo) == ("ok", [])


@pytest.mark.parametrize("fault", ["expired_token", "bad_secret"])  # OAuth -14014 / -14005
async def test_a_grant_that_is_gone_is_marked_failed_without_retrying(
    zalo: Zalo, fault: str
) -> None:
    emu = zalo.emu
    emu.inject(OAUTH, fault)
    await zns_report(zalo, "000.00.12.H29-261124-1003")
    assert emu.zns_sent_to("84912345678") == []
    assert [c.fault for c in emu.calls_to(OAUTH)] == [fault]  # one answer was enough
    assert await grant(zalo) == ("failed", ["zalo.token_refresh_failed"])
    await make_due_now(zalo)
    await zalo.settle()
    assert len(emu.calls_to(OAUTH)) == 1  # no more refreshes until a person re-consents
    async with zalo.rt.sessions() as session:
        [waiting] = (await session.execute(select(OutboxMessage))).scalars().all()
    assert waiting.status == "pending" and waiting.attempts == 0


async def test_reconciliation_under_a_token_error_storm_refreshes_a_bounded_number_of_times(
    zalo: Zalo, caplog: pytest.LogCaptureFixture
) -> None:
    emu = zalo.emu
    await zns_report(zalo, "000.00.12.H29-261124-1004")
    [sent] = emu.zns_sent_to("84912345678")
    emu.drop_next_webhook(event_name="user_feedback")
    await emu.zns_rate(sent.msg_id, 4)
    await zalo.settle()

    emu.inject("/rating/get", "expired_token", count=1000)  # Zalo refuses every token
    before = len(emu.calls_to(OAUTH))
    caplog.set_level(logging.WARNING)
    for run in (1, 2):
        assert await reconcile(zalo.rt.zalo, zalo.rt.service) == 0
        assert len(emu.calls_to(OAUTH)) - before == run * MAX_REFRESHES_PER_RUN
        assert len(emu.calls_to("/rating/get")) == run * (MAX_REFRESHES_PER_RUN + 1)
    assert "zns reconciliation stopped" in caplog.text
    assert await grant(zalo) == ("ok", [])

    emu.clear_faults()
    assert await reconcile(zalo.rt.zalo, zalo.rt.service) == 1  # the lost rating, next round
    async with zalo.rt.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Response)) == 1
