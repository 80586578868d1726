"""One contract for coordination, run over the in-process and the Redis coordinator.

Each test makes its coordinators through the ``coordinators`` fixture: in process they are one
object (the embedded default has one process); on Redis each is a client of its own, as several
workers would be. Races run their racers at the same time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from storage.coordination import Coordinator, LocalCoordinator, RedisCoordinator
from tests.conftest import REDIS_URL
from tests.helpers import eventually

Factory = Callable[[], Coordinator]


@pytest.fixture(params=["local", "redis"])
async def coordinators(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Factory]:
    if request.param == "local":
        shared = LocalCoordinator()
        yield lambda: shared
        await shared.close()
        return
    made: list[RedisCoordinator] = []

    def make() -> Coordinator:
        made.append(RedisCoordinator.from_url(REDIS_URL, redis_prefix))
        return made[-1]

    yield make
    for coordinator in made:
        await coordinator.close()


async def test_a_lock_admits_one_holder_at_a_time(coordinators: Factory) -> None:
    """Twelve workers through three coordinators want one conversation at once: one by one."""
    workers = [coordinators() for _ in range(3)]
    inside = peak = done = 0
    other_name_taken = asyncio.Event()

    async def work(coordinator: Coordinator) -> None:
        nonlocal inside, peak, done
        async with coordinator.lock("conversation-1", timeout=30):
            inside += 1
            peak = max(peak, inside)
            # The work under the lock: long enough for a second holder to get in, were the
            # lock not exclusive (a Redis round trip takes well under a millisecond).
            await asyncio.sleep(0.005)
            inside -= 1
            done += 1

    async def elsewhere() -> None:
        async with workers[0].lock("conversation-2", timeout=5):
            other_name_taken.set()

    await asyncio.gather(*(work(workers[i % 3]) for i in range(12)), elsewhere())
    assert peak == 1 and done == 12
    assert other_name_taken.is_set()  # another conversation's lock is another lock


async def test_a_held_lock_times_the_next_taker_out_and_is_free_once_released(
    coordinators: Factory,
) -> None:
    one, other = coordinators(), coordinators()
    held = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with one.lock("conversation-1"):
            held.set()
            await release.wait()

    task = asyncio.create_task(holder())
    try:
        async with asyncio.timeout(10):
            await held.wait()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with other.lock("conversation-1", timeout=0.3):
                pytest.fail("two holders of one lock")
        # It did wait for the lock: redis-py polls every 0.1 s and gives up when the next poll
        # would fall past the deadline, so on Redis it stops up to 0.1 s early.
        assert time.monotonic() - started >= 0.18
    finally:
        release.set()
        await task
    async with asyncio.timeout(10), other.lock("conversation-1", timeout=5):
        pass


async def test_a_lock_is_released_when_its_holder_fails(coordinators: Factory) -> None:
    one, other = coordinators(), coordinators()
    with pytest.raises(RuntimeError):
        async with one.lock("conversation-1"):
            raise RuntimeError("the work failed")
    async with asyncio.timeout(10), other.lock("conversation-1", timeout=1):
        pass


async def test_first_time_is_true_for_one_of_many_racers_until_forgotten(
    coordinators: Factory,
) -> None:
    racers = [coordinators() for _ in range(3)]
    firsts = await asyncio.gather(*(racers[i % 3].first_time("tap:1", 60) for i in range(30)))
    assert sum(firsts) == 1
    assert await racers[0].first_time("tap:2", 60)  # marks are per key
    await racers[1].forget("tap:1")  # the work the mark guarded failed
    assert await racers[2].first_time("tap:1", 60)
    assert not await racers[0].first_time("tap:1", 60)


async def test_a_mark_lapses_after_its_time(coordinators: Factory) -> None:
    one, other = coordinators(), coordinators()
    started = time.monotonic()
    assert await one.first_time("slowdown:1", 1)
    assert not await other.first_time("slowdown:1", 1)
    await eventually(lambda: other.first_time("slowdown:1", 1), timeout=10)
    assert time.monotonic() - started >= 0.9  # not before its second was up
