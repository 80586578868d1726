"""Coordination between workers: per-conversation locks, short-lived deduplication marks and
token-bucket rate limits (``storage/limits.py``).

The embedded default keeps these in process memory; production uses Redis so several processes
behave as one. Nothing here is a source of truth: losing Redis loses at most a lock or a dedup
mark, never an answer (those are in SQL). Keys are always pseudonyms, never raw identifiers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Protocol

from redis.asyncio import Redis

from storage.leases import Leases, MemoryLeases, RedisLeases
from storage.limits import MemoryRateLimiter, RateLimiter, RedisRateLimiter

PREFIX = "surveybot:"


class Coordinator(Protocol):
    #: Token buckets shared by every worker that shares this coordinator.
    limiter: RateLimiter

    def lock(
        self, name: str, timeout: float = 30.0
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Mutual exclusion for one conversation across every worker."""

    async def first_time(self, key: str, ttl_seconds: int) -> bool:
        """Mark ``key`` seen; True only for the first caller within ``ttl_seconds``."""

    async def forget(self, key: str) -> None:
        """Drop the mark on ``key`` (the work it guarded failed): the next caller is first."""

    async def ping(self) -> None:
        """Raise when the shared store cannot be reached (``/readyz``)."""

    @property
    def leases(self) -> Leases:
        """Named leases over the same store: one holder of a singleton loop at a time."""

    async def close(self) -> None: ...


class LocalCoordinator:
    """In-process coordination for the single-process embedded default."""

    def __init__(self) -> None:
        self.limiter: RateLimiter = MemoryRateLimiter()
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}
        self._seen: dict[str, float] = {}
        self._leases = MemoryLeases()

    @contextlib.asynccontextmanager
    async def lock(self, name: str, timeout: float = 30.0) -> AsyncIterator[None]:
        lock = self._locks.setdefault(name, asyncio.Lock())
        self._users[name] = self._users.get(name, 0) + 1
        try:
            async with asyncio.timeout(timeout):
                await lock.acquire()
            try:
                yield
            finally:
                lock.release()
        finally:
            self._users[name] -= 1
            if not self._users[name]:
                del self._users[name]
                self._locks.pop(name, None)

    async def first_time(self, key: str, ttl_seconds: int) -> bool:
        now = time.monotonic()
        if len(self._seen) > 100_000:
            self._seen = {k: v for k, v in self._seen.items() if v > now}
        expiry = self._seen.get(key)
        if expiry is not None and expiry > now:
            return False
        self._seen[key] = now + ttl_seconds
        return True

    async def forget(self, key: str) -> None:
        self._seen.pop(key, None)

    @property
    def leases(self) -> Leases:
        return self._leases

    async def ping(self) -> None:
        return None  # in this process: always there

    async def close(self) -> None:
        return None


class RedisCoordinator:
    """Redis-backed coordination: locks with expiry (a crashed worker frees them) and SET NX."""

    def __init__(self, redis: Redis, prefix: str = PREFIX) -> None:
        self.redis = redis
        self.prefix = prefix
        self.limiter: RateLimiter = RedisRateLimiter(redis, prefix)
        self._leases = RedisLeases(redis, prefix)

    @classmethod
    def from_url(cls, url: str, prefix: str = PREFIX) -> RedisCoordinator:
        return cls(Redis.from_url(url), prefix)

    @contextlib.asynccontextmanager
    async def lock(self, name: str, timeout: float = 30.0) -> AsyncIterator[None]:
        lock = self.redis.lock(
            f"{self.prefix}lock:{name}", timeout=timeout, blocking_timeout=timeout
        )
        acquired = await lock.acquire()
        if not acquired:
            raise TimeoutError(f"could not lock conversation within {timeout}s")
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await lock.release()

    async def first_time(self, key: str, ttl_seconds: int) -> bool:
        return bool(await self.redis.set(f"{self.prefix}seen:{key}", b"1", nx=True, ex=ttl_seconds))

    async def forget(self, key: str) -> None:
        await self.redis.delete(f"{self.prefix}seen:{key}")

    async def ping(self) -> None:
        await self.redis.ping()

    @property
    def leases(self) -> Leases:
        return self._leases

    async def close(self) -> None:
        await self.redis.aclose()


def invitation_lock(
    coordinator: Coordinator, invitation_id: str, timeout: float = 30.0
) -> contextlib.AbstractAsyncContextManager[None]:
    """The one lock of an invitation: every path that reads an invitation and changes it (an
    answer, a command, a binding, expiry, a reminder, a delivery mark, a fallback, a platform's
    rating) holds it, so none of them acts on a state another has already changed."""
    return coordinator.lock(f"invitation:{invitation_id}", timeout)
