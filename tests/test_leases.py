"""One contract for named leases, run over the in-process and the Redis implementation.

Racers run at the same time (for Redis through separate clients, as separate processes would).
In memory time is a fake clock the tests move; in Redis a lease runs out on Redis's own clock,
and the tests wait for the moment it has (never a fixed sleep).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from storage.leases import Leases, MemoryLeases, RedisLeases, hold
from tests.conftest import REDIS_URL
from tests.helpers import eventually


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Store:
    """Lease stores that share one state, and a way to let a lease run out."""

    make: Callable[[], Leases]
    run_out: Callable[[Leases, str], Awaitable[None]]
    ttl: float


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Store]:
    if request.param == "memory":
        clock = FakeClock()
        shared = MemoryLeases(clock)

        async def advance(leases: Leases, name: str) -> None:
            clock.now += 60.0

        yield Store(lambda: shared, advance, ttl=30.0)
        return
    clients: list[Redis] = []

    def make() -> Leases:
        client = Redis.from_url(REDIS_URL)
        clients.append(client)
        return RedisLeases(client, redis_prefix)

    async def lapse(leases: Leases, name: str) -> None:
        async def gone() -> bool:
            return await leases.holder(name) is None

        await eventually(gone)

    yield Store(make, lapse, ttl=0.3)
    for client in clients:
        await client.aclose()


async def test_of_many_processes_asking_at_once_exactly_one_holds(store: Store) -> None:
    stores = [store.make() for _ in range(8)]
    won = await asyncio.gather(
        *(s.acquire("maintenance", f"p{i}", store.ttl) for i, s in enumerate(stores))
    )
    assert sum(won) == 1
    winner = f"p{won.index(True)}"
    assert await stores[0].holder("maintenance") == winner
    assert await stores[won.index(True)].acquire("maintenance", winner, store.ttl)  # renews
    assert not await stores[0].acquire("maintenance", "late", store.ttl)


async def test_only_the_holder_releases_and_then_another_takes_it(store: Store) -> None:
    a, b = store.make(), store.make()
    assert await a.acquire("poll:telegram", "a", store.ttl)
    await b.release("poll:telegram", "b")  # not b's: nothing happens
    assert await b.holder("poll:telegram") == "a"
    await a.release("poll:telegram", "a")
    assert await b.acquire("poll:telegram", "b", store.ttl)


async def test_a_holder_that_stops_renewing_is_taken_over(store: Store) -> None:
    a, b = store.make(), store.make()
    assert await a.acquire("maintenance", "a", store.ttl)
    assert not await b.acquire("maintenance", "b", store.ttl)
    await store.run_out(b, "maintenance")  # a died: no renewal
    assert await b.acquire("maintenance", "b", store.ttl)
    assert not await a.acquire("maintenance", "a", store.ttl)  # a, back from a pause, is out


async def test_leases_have_separate_names(store: Store) -> None:
    a = store.make()
    assert await a.acquire("poll:telegram", "p1", store.ttl)
    assert await a.acquire("poll:zalo_bot", "p2", store.ttl)


async def test_hold_runs_the_work_in_one_process_at_a_time_and_hands_over_on_death(
    redis_prefix: str,
) -> None:
    """Three processes hold the same lease through Redis: the work runs in exactly one; when
    that one dies (stops renewing, releases nothing) another takes over after the TTL."""
    clients = [Redis.from_url(REDIS_URL) for _ in range(3)]
    running: set[str] = set()
    overlaps: list[set[str]] = []
    started: list[str] = []
    stops = [asyncio.Event() for _ in clients]

    def work_of(owner: str) -> Callable[[], Awaitable[None]]:
        async def work() -> None:
            running.add(owner)
            started.append(owner)
            if len(running) > 1:
                overlaps.append(set(running))
            try:
                await asyncio.Event().wait()  # runs until cancelled
            finally:
                running.discard(owner)

        return work

    holders = [
        asyncio.create_task(
            hold(
                RedisLeases(c, redis_prefix),
                "poll:telegram",
                f"p{i}",
                work_of(f"p{i}"),
                stops[i],
                ttl=0.6,
            )
        )
        for i, c in enumerate(clients)
    ]
    try:

        async def one_running() -> bool:
            return len(running) == 1

        await eventually(one_running)
        first = next(iter(running))
        index = int(first[1:])
        holders[index].cancel()  # kill -9: no release, no more renewals
        await asyncio.gather(holders[index], return_exceptions=True)

        async def taken_over() -> bool:
            return len(running) == 1 and first not in running

        await eventually(taken_over)
        assert not overlaps, overlaps
        assert started[0] == first and len(started) == 2
        second = int(next(iter(running))[1:])
        stops[second].set()  # a graceful stop gives the lease back at once
        await holders[second]
        remaining = ({0, 1, 2} - {index, second}).pop()

        async def third_runs() -> bool:
            return running == {f"p{remaining}"}

        await eventually(third_runs)
        assert not overlaps
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*holders, return_exceptions=True)
        for client in clients:
            await client.aclose()
