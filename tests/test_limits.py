"""One contract for the token-bucket limiter, run over the in-process and the Redis implementation.

Time is a fake clock the tests move; the race runs its takers at the same time (for Redis, through
two clients, as two processes would).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from storage.coordination import LocalCoordinator, RedisCoordinator
from storage.limits import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from tests.conftest import REDIS_URL


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Factory = Callable[[], RateLimiter]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "redis"])
async def limiters(
    request: pytest.FixtureRequest, clock: FakeClock, redis_prefix: str
) -> AsyncIterator[Factory]:
    """Makes limiters sharing one store: the same object in memory, a new Redis client each."""
    if request.param == "memory":
        shared = MemoryRateLimiter(clock)
        yield lambda: shared
        return
    clients: list[Redis] = []

    def make() -> RateLimiter:
        client = Redis.from_url(REDIS_URL)
        clients.append(client)
        return RedisRateLimiter(client, redis_prefix, clock)

    yield make
    for client in clients:
        await client.aclose()


async def test_a_full_bucket_pays_its_burst_then_says_when(
    limiters: Factory, clock: FakeClock
) -> None:
    limiter = limiters()
    decisions = [await limiter.take("k", rate=2, burst=5) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert decisions[4].remaining == pytest.approx(0)
    assert decisions[5].retry_after == pytest.approx(0.5)
    assert decisions[5].retry_after_header == "1"


async def test_tokens_come_back_at_the_rate_and_never_beyond_the_burst(
    limiters: Factory, clock: FakeClock
) -> None:
    limiter = limiters()
    for _ in range(5):
        assert (await limiter.take("k", rate=2, burst=5)).allowed
    clock.advance(1.0)  # two tokens back
    assert [(await limiter.take("k", rate=2, burst=5)).allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]
    clock.advance(3600)
    decision = await limiter.take("k", rate=2, burst=5)
    assert decision.allowed and decision.remaining == pytest.approx(4)


async def test_retry_after_is_the_wait_for_the_missing_tokens(
    limiters: Factory, clock: FakeClock
) -> None:
    limiter = limiters()
    for _ in range(3):
        await limiter.take("k", rate=0.1, burst=3)
    clock.advance(4)  # 0.4 of a token back
    decision = await limiter.take("k", rate=0.1, burst=3)
    assert not decision.allowed
    assert decision.retry_after == pytest.approx(6)
    assert decision.retry_after_header == "6"
    clock.advance(6)
    assert (await limiter.take("k", rate=0.1, burst=3)).allowed


async def test_a_denied_take_costs_nothing(limiters: Factory, clock: FakeClock) -> None:
    limiter = limiters()
    await limiter.take("k", rate=1, burst=1)
    for _ in range(10):
        assert not (await limiter.take("k", rate=1, burst=1)).allowed
    clock.advance(1)
    assert (await limiter.take("k", rate=1, burst=1)).allowed


async def test_a_negative_cost_gives_back_up_to_the_burst(
    limiters: Factory, clock: FakeClock
) -> None:
    limiter = limiters()
    for _ in range(3):
        await limiter.take("k", rate=0.01, burst=3)
    back = await limiter.take("k", rate=0.01, burst=3, cost=-1)
    assert back.allowed and back.remaining == pytest.approx(1)
    for _ in range(5):
        back = await limiter.take("k", rate=0.01, burst=3, cost=-1)
    assert back.remaining == pytest.approx(3)


async def test_reset_fills_the_bucket_and_keys_are_independent(
    limiters: Factory, clock: FakeClock
) -> None:
    limiter = limiters()
    await limiter.take("a", rate=0.01, burst=1)
    assert not (await limiter.take("a", rate=0.01, burst=1)).allowed
    assert (await limiter.take("b", rate=0.01, burst=1)).allowed
    await limiter.reset("a")
    assert (await limiter.take("a", rate=0.01, burst=1)).allowed


async def test_a_cost_above_the_burst_is_refused(limiters: Factory) -> None:
    with pytest.raises(ValueError):
        await limiters().take("k", rate=1, burst=2, cost=3)
    with pytest.raises(ValueError):
        await limiters().take("k", rate=0, burst=2)


async def test_a_clock_going_back_refills_nothing(limiters: Factory, clock: FakeClock) -> None:
    limiter = limiters()
    await limiter.take("k", rate=1, burst=1)
    clock.advance(-30)  # another process whose clock lags
    assert not (await limiter.take("k", rate=1, burst=1)).allowed


async def test_racers_at_the_same_time_share_exactly_the_burst(limiters: Factory) -> None:
    """200 takes at once from four limiters (four processes on Redis): 25 allowed, no more."""
    racers = [limiters() for _ in range(4)]
    decisions = await asyncio.gather(
        *(racers[i % 4].take("race", rate=0.001, burst=25) for i in range(200))
    )
    assert sum(d.allowed for d in decisions) == 25


async def test_memory_buckets_are_forgotten_once_full_again(clock: FakeClock) -> None:
    limiter = MemoryRateLimiter(clock)
    limiter.MAX_KEYS = 10
    for i in range(20):
        await limiter.take(f"k{i}", rate=1, burst=2)
    clock.advance(10)
    await limiter.take("new", rate=1, burst=2)
    assert len(limiter._buckets) <= 2


async def test_redis_keys_live_under_the_prefix_and_expire(redis_prefix: str) -> None:
    client = Redis.from_url(REDIS_URL)
    try:
        limiter = RedisRateLimiter(client, redis_prefix)  # the server's clock
        decisions = [await limiter.take("ttl", rate=0.5, burst=3) for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, True, False]
        keys = [k async for k in client.scan_iter(match=f"{redis_prefix}*")]
        assert keys == [f"{redis_prefix}rate:ttl".encode()]
        ttl = await client.ttl(keys[0])
        assert 0 < ttl <= 7  # burst / rate + 1: by then the bucket is full anyway
    finally:
        await client.aclose()


async def test_both_coordinators_carry_a_limiter(redis_prefix: str) -> None:
    local = LocalCoordinator()
    assert isinstance(local.limiter, MemoryRateLimiter)
    shared = RedisCoordinator.from_url(REDIS_URL, redis_prefix)
    try:
        assert isinstance(shared.limiter, RedisRateLimiter)
        assert shared.limiter.prefix == redis_prefix
        assert (await shared.limiter.take("x", rate=1, burst=1)).allowed
    finally:
        await shared.close()
