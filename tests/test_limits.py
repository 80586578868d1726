"""One contract for the token-bucket limiter, run over the in-process and the Redis implementation.

Time is a fake clock the tests move; the race runs its takers at the same time (for Redis, through
two clients, as two processes would).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict
from redis.asyncio import Redis

from bot.app import create_app
from bot.limits import client_address
from bot.runtime import Runtime
from settings import load_settings
from storage.coordination import LocalCoordinator, RedisCoordinator
from storage.limits import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from storage.models import Agency
from storage.pseudonym import KeyRing
from tests.conftest import REDIS_URL

Client = TestClient[Any, Any]


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


# ==================================================================== the agency API's limits
def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _freeze(runtime: Runtime) -> FakeClock:
    """Stop time for the app's buckets: a 'second' lasts as long as the test needs."""
    clock = FakeClock()
    runtime.coordinator.limiter.clock = clock  # type: ignore[attr-defined]
    return clock


async def _post(client: Client, headers: dict[str, str]) -> tuple[int, str | None, Any]:
    # An empty object: authenticated and limited first, then refused 422 (nothing written).
    response = await client.post("/api/v1/dossiers", headers=headers, json={})
    return response.status, response.headers.get("Retry-After"), await response.json()


async def test_the_thousandth_request_in_a_second_from_one_key_gets_429(
    client: Client, runtime: Runtime, api_key: str
) -> None:
    clock = _freeze(runtime)
    answers = []
    for _ in range(20):  # 1,000 requests, 50 at a time, within one (frozen) second
        answers += await asyncio.gather(*(_post(client, _auth(api_key)) for _ in range(50)))
    statuses = [status for status, _, _ in answers]
    burst = runtime.settings.api_burst
    assert statuses.count(429) == 1000 - burst and statuses.count(422) == burst
    status, retry_after, body = answers[999]
    assert status == 429 and retry_after is not None and retry_after.isdigit()
    assert int(retry_after) >= 1 and body["error"] == "rate_limited"
    assert body["retry_after"] == int(retry_after)
    clock.advance(int(retry_after))  # after Retry-After, the key is served again
    assert (await _post(client, _auth(api_key)))[0] == 422


async def test_with_the_limits_off_the_thousandth_request_is_served(
    client: Client, runtime: Runtime, api_key: str
) -> None:
    """The protection is what answers 429 above: switched off, nothing does."""
    _freeze(runtime)
    runtime.settings.rate_limits_enabled = False
    statuses = [
        (await _post(client, _auth(api_key)))[0] for _ in range(runtime.settings.api_burst + 5)
    ]
    assert set(statuses) == {422}


async def test_two_app_instances_sharing_redis_share_one_bucket(
    client: Client, runtime: Runtime, api_key: str, keyring: KeyRing
) -> None:
    """Two processes' worth of app (each its own Runtime and Redis client), racing."""
    runtime.settings.api_burst = 30
    clock = _freeze(runtime)
    other = await Runtime.create(runtime.settings, keyring=keyring, migrate=False)
    other.coordinator.limiter.clock = clock  # type: ignore[attr-defined]
    try:
        async with TestClient(TestServer(create_app(other, background=False))) as second:
            answers = await asyncio.gather(
                *(_post(client if i % 2 else second, _auth(api_key)) for i in range(80))
            )
    finally:
        await other.close()
    assert sum(status == 422 for status, _, _ in answers) == 30
    assert sum(status == 429 for status, _, _ in answers) == 50


async def test_an_agency_may_have_its_own_rate(
    client: Client, runtime: Runtime, api_key: str, agency: Agency
) -> None:
    _freeze(runtime)
    runtime.settings.api_rate_by_agency = f"other=1:1,{agency.code}=0.5:3"
    statuses = [(await _post(client, _auth(api_key)))[0] for _ in range(5)]
    assert statuses == [422, 422, 422, 429, 429]


async def test_wrong_keys_from_one_address_meet_429_and_a_valid_key_still_works(
    client: Client, runtime: Runtime, api_key: str
) -> None:
    """The issue's 300 wrong keys at full speed: from the 21st on, 429 instead of 401."""
    clock = _freeze(runtime)
    answers = await asyncio.gather(
        *(_post(client, _auth(f"sbk_wrong{i}")) for i in range(300)),
        *(_post(client, {}) for _ in range(10)),  # no key at all counts too
    )
    statuses = [status for status, _, _ in answers]
    burst = runtime.settings.api_bad_key_burst
    assert statuses.count(401) == burst and statuses.count(429) == 310 - burst
    limited = next(a for a in answers if a[0] == 429)
    assert limited[1] == str(round(1 / runtime.settings.api_bad_key_rate_per_second))
    assert limited[2]["error"] == "too_many_bad_keys"
    # Other clients' failures never hold back a valid key.
    assert (await _post(client, _auth(api_key)))[0] == 422
    clock.advance(int(limited[1]))
    assert (await _post(client, _auth("sbk_wrong-again")))[0] == 401


async def test_wrong_keys_are_counted_per_client_behind_a_trusted_proxy(
    client: Client, runtime: Runtime
) -> None:
    _freeze(runtime)
    runtime.settings.api_bad_key_burst = 2
    runtime.settings.trusted_proxies = "127.0.0.1,::1"

    def via(address: str) -> dict[str, str]:
        return {**_auth("sbk_wrong"), "X-Forwarded-For": f"203.0.113.9, {address}"}

    first = [(await _post(client, via("198.51.100.1")))[0] for _ in range(3)]
    second = [(await _post(client, via("198.51.100.2")))[0] for _ in range(3)]
    assert first == second == [401, 401, 429]


def test_client_addresses_count_ipv6_per_64_and_proxies_only_when_trusted() -> None:
    class Req:
        def __init__(self, remote: str, forwarded: str | None = None) -> None:
            self.remote = remote
            self.headers = CIMultiDict({"X-Forwarded-For": forwarded} if forwarded else {})

    class Rt:
        settings = load_settings(env="test", trusted_proxies="10.0.0.0/8")

    rt: Any = Rt()
    assert client_address(Req("2001:db8:1:2:3:4:5:6"), rt) == "2001:db8:1:2::/64"  # type: ignore[arg-type]
    assert client_address(Req("::ffff:192.0.2.7"), rt) == "192.0.2.7"  # type: ignore[arg-type]
    spoofed = Req("192.0.2.7", "198.51.100.1")  # not from a trusted proxy: header ignored
    assert client_address(spoofed, rt) == "192.0.2.7"  # type: ignore[arg-type]
    proxied = Req("10.0.0.2", "198.51.100.1, 10.0.0.3")
    assert client_address(proxied, rt) == "198.51.100.1"  # type: ignore[arg-type]
    assert client_address(Req("10.0.0.2", "junk, 10.0.0.3"), rt) == "10.0.0.3"  # type: ignore[arg-type]
