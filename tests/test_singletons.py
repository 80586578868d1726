"""Two processes on one database and Redis run the periodic work once: one holds the
maintenance lease, and when it stops the other takes over (issue 12, item 1)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.runtime import Runtime
from storage.pseudonym import KeyRing
from tests.conftest import REDIS_URL, _truncate, make_settings


async def test_maintenance_runs_in_one_process_and_moves_when_it_stops(
    tmp_path: Path, database_url: str, keyring: KeyRing, redis_prefix: str
) -> None:
    settings = make_settings(tmp_path, database_url, redis_url=REDIS_URL, redis_prefix=redis_prefix)
    first = await Runtime.create(settings, keyring=keyring)
    await _truncate(first)
    second = await Runtime.create(settings, keyring=keyring)
    rounds = {first.owner: 0, second.owner: 0}
    for runtime in (first, second):
        real = runtime.publish_releases

        async def counted(now: object = None, runtime: Runtime = runtime, real: object = real):
            rounds[runtime.owner] += 1
            return await real()  # type: ignore[operator]

        runtime.publish_releases = counted  # type: ignore[method-assign]
    leases = first.coordinator.leases
    try:
        first.start_background()
        second.start_background()
        async with asyncio.timeout(20):
            while await leases.holder("loop:maintenance") is None:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            while sum(rounds.values()) < 1:  # noqa: ASYNC110 - the first round ran
                await asyncio.sleep(0.02)
        holder = await leases.holder("loop:maintenance")
        assert holder in rounds
        assert [owner for owner, n in rounds.items() if n] == [holder]  # one process only
        active, standby = (first, second) if holder == first.owner else (second, first)
        await active.close()  # a graceful stop gives the lease back
        async with asyncio.timeout(30):
            while rounds[standby.owner] == 0:  # noqa: ASYNC110 - the other took over
                await asyncio.sleep(0.05)
        assert await leases.holder("loop:maintenance") == standby.owner
    finally:
        await first.close()
        await second.close()
