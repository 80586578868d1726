"""Named leases: one holder at a time across every process, taken over when the holder dies.

What needs one: the maintenance loop (expiry, reminders, reconciliation, purges, releases must
run once per tick, not once per process) and each polling receiver (Telegram's getUpdates and
the Zalo Bot's poll allow one poller per token). A lease is held for ``ttl`` seconds and
renewed by its holder at a third of that; a holder that dies stops renewing and another process
takes the lease once it has run out. Expiry runs on the lease store's clock (Redis's, in
production), so a process whose clock is minutes off cannot steal a lease early.

``hold`` is the loop around that: while this process holds the lease it runs the work; when it
loses the lease (renewal failed) the work is cancelled at once, so two holders never run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from redis.asyncio import Redis

log = logging.getLogger(__name__)


class Leases(Protocol):
    async def acquire(self, name: str, owner: str, ttl: float) -> bool:
        """Take ``name`` if free, or renew it if ``owner`` holds it; True when ``owner`` holds it."""

    async def release(self, name: str, owner: str) -> None:
        """Give ``name`` back if ``owner`` holds it (a stale owner releases nothing)."""

    async def holder(self, name: str) -> str | None: ...


class MemoryLeases:
    """One process's leases (the embedded default, where only one process runs)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._held: dict[str, tuple[str, float]] = {}
        self._mutex = asyncio.Lock()

    async def acquire(self, name: str, owner: str, ttl: float) -> bool:
        async with self._mutex:
            now = self.clock()
            current = self._held.get(name)
            if current is None or current[0] == owner or current[1] <= now:
                self._held[name] = (owner, now + ttl)
                return True
            return False

    async def release(self, name: str, owner: str) -> None:
        async with self._mutex:
            if self._held.get(name, ("", 0.0))[0] == owner:
                del self._held[name]

    async def holder(self, name: str) -> str | None:
        current = self._held.get(name)
        return current[0] if current is not None and current[1] > self.clock() else None


#: Take if free (NX) or renew if ours, atomically; the TTL is Redis's own clock.
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if current then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLeases:
    """Leases every process sharing the Redis server sees (production)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = f"{prefix}lease:"
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self, name: str, owner: str, ttl: float) -> bool:
        millis = max(1, int(ttl * 1000))
        return bool(await self._acquire(keys=[self.prefix + name], args=[owner, millis]))

    async def release(self, name: str, owner: str) -> None:
        await self._release(keys=[self.prefix + name], args=[owner])

    async def holder(self, name: str) -> str | None:
        value = await self.redis.get(self.prefix + name)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)


async def hold(
    leases: Leases,
    name: str,
    owner: str,
    work: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    *,
    ttl: float = 15.0,
) -> None:
    """Run ``work`` whenever this process holds ``name``, until ``stop`` or until ``work``
    returns on its own (one-shot work, done once); give the lease back at the end.

    Acquisition is retried every third of ``ttl``; while held, the lease is renewed at that pace
    and ``work`` is cancelled as soon as a renewal fails (the lease store unreachable, or the
    lease taken over after a pause longer than ``ttl``)."""
    interval = ttl / 3
    while not stop.is_set():
        try:
            held = await leases.acquire(name, owner, ttl)
        except Exception as exc:
            log.warning("lease %s: store unreachable (%s)", name, exc.__class__.__name__)
            held = False
        if held:
            log.info("lease %s taken", name)
            finished = await _run_while_held(leases, name, owner, work, stop, ttl)
            if stop.is_set() or finished:  # stopping, or one-shot work that is done
                with contextlib.suppress(Exception):
                    await leases.release(name, owner)
                return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


async def _run_while_held(
    leases: Leases,
    name: str,
    owner: str,
    work: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    ttl: float,
) -> bool:
    """Run ``work`` until it ends, ``stop`` is set or a renewal fails (then it is cancelled).
    True when ``work`` returned on its own, without an error."""
    interval = ttl / 3
    task = asyncio.ensure_future(work())
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=interval)
            if task.done() or stop.is_set():
                break
            try:
                still = await leases.acquire(name, owner, ttl)
            except Exception:
                still = False
            if not still:
                log.warning("lease %s lost: its work stops", name)
                break
        if stop.is_set() and not task.done():  # a moment to finish what it is doing
            await asyncio.wait({task}, timeout=interval)
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this loop itself is being cancelled: never swallow that
        except Exception:  # noqa: S110 - reported below from the task itself
            pass
    if task.cancelled():
        return False
    if task.exception() is not None:
        log.warning("lease %s: its work failed (%s)", name, task.exception().__class__.__name__)
        return False
    return True
