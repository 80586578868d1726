"""The OA token pair shared by several processes, against the emulator over real HTTP.

Why: Zalo's refresh token is single-use and rotating, and (../shared/reference/zalo.md §3) the
access token a refresh replaces stops working at once. A second process still holding the old
access token in memory must notice the token error, take the new pair from the shared store
(never refresh a second time with a spent refresh token) and deliver its message once. Whether
the replaced token really dies is one reading of the sources; the other keeps it valid until its
own expiry, so each test runs under both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.runtime import Runtime
from storage.models import OutboxMessage, ZaloToken
from storage.pseudonym import KeyRing
from tests.test_zalo_channels import Zalo, zalo_stack

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
