"""Token buckets shared by every worker: in process memory (embedded default) or in Redis.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second; ``take`` removes
``cost`` tokens when that many are there and otherwise says how long until they will be. One
bucket is two numbers (tokens, time of the last update), so the Redis implementation is one Lua
script per call: read, refill, take, write and set the key's expiry happen atomically, and two
processes racing for the last token cannot both get it. A key expires once its bucket would be
full again, so an idle client costs nothing. Keys are pseudonyms (the callers hash addresses and
names first), stored under the configured prefix.

The clock is injectable: tests pass one and move time instead of waiting. In Redis, without an
injected clock, the script reads the server's ``TIME``, so processes with skewed clocks still
share one time line.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Decision:
    """What ``take`` decided: ``allowed``, the tokens left, and seconds until ``cost`` is there."""

    allowed: bool
    remaining: float
    retry_after: float

    @property
    def retry_after_header(self) -> str:
        """``Retry-After`` as HTTP wants it: whole seconds, at least 1."""
        return str(max(1, math.ceil(self.retry_after)))


class RateLimiter(Protocol):
    async def take(self, key: str, rate: float, burst: float, cost: float = 1.0) -> Decision:
        """Remove ``cost`` tokens from bucket ``key`` if it holds them (a negative cost gives
        tokens back, never beyond ``burst``)."""

    async def reset(self, key: str) -> None:
        """Forget bucket ``key``: it is full again."""


def _check(rate: float, burst: float, cost: float) -> None:
    if rate <= 0 or burst <= 0:
        raise ValueError("rate and burst must be positive")
    if cost > burst:
        raise ValueError("a cost above the burst could never be paid")


def _ttl(rate: float, burst: float) -> int:
    """Seconds after which an untouched bucket is full again (so may be forgotten)."""
    return max(1, math.ceil(burst / rate)) + 1


class MemoryRateLimiter:
    """Buckets in this process (the single-process embedded default)."""

    MAX_KEYS = 100_000

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or time.monotonic
        #: key → (tokens, updated at, forgettable at)
        self._buckets: dict[str, tuple[float, float, float]] = {}

    async def take(self, key: str, rate: float, burst: float, cost: float = 1.0) -> Decision:
        _check(rate, burst, cost)
        now = self.clock()
        if len(self._buckets) > self.MAX_KEYS:
            self._buckets = {k: v for k, v in self._buckets.items() if v[2] > now}
        tokens, updated, expires = self._buckets.get(key, (burst, now, now))
        if expires < now:  # expired, as Redis would have dropped it
            tokens, updated = burst, now
        tokens = min(burst, tokens + max(0.0, now - updated) * rate)
        if tokens >= cost:
            tokens = min(burst, tokens - cost)
            decision = Decision(True, tokens, 0.0)
        else:
            decision = Decision(False, tokens, (cost - tokens) / rate)
        self._buckets[key] = (tokens, max(now, updated), now + _ttl(rate, burst))
        return decision

    async def reset(self, key: str) -> None:
        self._buckets.pop(key, None)


#: KEYS[1] bucket; ARGV rate, burst, cost, now ("" = the server's clock), ttl.
#: Numbers go back as strings: Redis would truncate a Lua float to an integer.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now
if ARGV[4] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[4])
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
local elapsed = now - ts
if elapsed < 0 then elapsed = 0 end
tokens = math.min(burst, tokens + elapsed * rate)
local allowed = 0
local retry = 0
if tokens >= cost then
  tokens = math.min(burst, tokens - cost)
  allowed = 1
else
  retry = (cost - tokens) / rate
end
if now > ts then ts = now end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ts',
           string.format('%.17g', ts))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return {allowed, string.format('%.17g', tokens), string.format('%.17g', retry)}
"""


class RedisRateLimiter:
    """Buckets in Redis, one atomic script per call, keys ``<prefix>rate:<key>`` with a TTL."""

    def __init__(self, redis: Redis, prefix: str, clock: Clock | None = None) -> None:
        self.redis = redis
        self.prefix = prefix
        #: None: the Redis server's clock (production). Tests inject one.
        self.clock = clock
        self._script = redis.register_script(_TAKE)

    def _key(self, key: str) -> str:
        return f"{self.prefix}rate:{key}"

    async def take(self, key: str, rate: float, burst: float, cost: float = 1.0) -> Decision:
        _check(rate, burst, cost)
        now = "" if self.clock is None else repr(float(self.clock()))
        allowed, tokens, retry = await self._script(
            keys=[self._key(key)],
            args=[repr(float(rate)), repr(float(burst)), repr(float(cost)), now, _ttl(rate, burst)],
        )
        return Decision(bool(int(allowed)), float(tokens), float(retry))

    async def reset(self, key: str) -> None:
        await self.redis.delete(self._key(key))
