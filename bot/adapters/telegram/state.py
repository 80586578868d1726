"""Shared, short-lived Telegram state: outbound rate limits and question message ids.

Everything here is keyed by the contact pseudonym (an HMAC), never by a raw chat id, and expires
on its own: it is coordination, not a source of truth. Losing it (a Redis flush) costs at most a
question message that is not edited in place or a brief burst above the flood limits that Telegram answers with ``retry_after``. When a
conversation ends (survey completed, /stop, /delete) the chat's own keys are deleted at once
(``forget``) rather than left to expire.

Two implementations share one interface: Redis (several processes behave as one bot, and the
limits hold across them because the clock is Redis's own ``TIME``) and process memory (the
embedded single-process default).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.asyncio import Redis


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Sliding-window limits: at most ``per_chat`` sends in any ``per_chat_window`` seconds to one
    chat, ``per_bot`` in any ``per_bot_window`` seconds overall. A limit of 0 disables it."""

    per_chat: int = 3
    per_chat_window: float = 3.0
    per_bot: int = 25
    per_bot_window: float = 1.0

    @property
    def reply_reserve(self) -> int:
        """At most this many bot-wide slots per window are held back from invitations for
        replies that wait for one: half the limit (15 of Telegram's 30)."""
        return self.per_bot // 2 if self.per_bot >= 2 else 0

    def bot_limit(self, reply: bool, replies_waiting: int) -> int:
        """The bot-wide limit one acquire sees: all of it for a reply; for anything else, one
        slot fewer per reply waiting for a bot-wide slot, up to the reserve. A slot is held
        only while a reply waits for it, so with no reply waiting the backlog has the whole
        limit, and with some it loses exactly the slots they take."""
        if reply:
            return self.per_bot
        return self.per_bot - min(replies_waiting, self.reply_reserve)

    def padded(self, window: float) -> float:
        """A small safety margin (2 %, at most 50 ms): a send's place in a window is when its
        answer came back (``settle``), never before Telegram saw it, so the margin only covers
        the clocks' resolution and Telegram's own rounding, not network delay."""
        return window + min(0.05, window / 50)


@dataclass(slots=True)
class QuestionRef:
    """The messages that asked one question in one chat: the live ones still carry buttons."""

    text: str
    live: list[int] = field(default_factory=list)
    done: int | None = None

    def dumps(self) -> str:
        return json.dumps({"text": self.text, "live": self.live, "done": self.done})

    @classmethod
    def loads(cls, raw: str | bytes) -> QuestionRef:
        data = json.loads(raw)
        return cls(str(data.get("text") or ""), [int(i) for i in data.get("live") or []],
                   data.get("done"))  # fmt: skip


class TelegramState(Protocol):
    async def acquire(
        self, contact: str | None, slot: str | None = None, *, reply: bool = False
    ) -> tuple[float, str]:
        """Take one send slot for this chat (None: bot-wide only), named ``slot`` for
        ``settle``. ``(0, "")`` when taken, else the seconds to wait before trying again and
        the limit that binds: "chat", "bot" or "pause" (nothing is taken then).

        A ``reply`` (inside a running conversation) refused by the bot-wide window holds the
        slot it waits for: until it takes one (or a window after that slot, if it never comes
        back), every other send sees the bot's limit less one per reply waiting, so the next
        free slots go to replies instead of being raced for by a backlog of invitations (bench
        dispatch: a reply's p99 5.3 s behind 10,000), and no slot is left idle for a reply that
        is not waiting (a fixed tenth held back while any reply waited cost the backlog 9 % of
        the limit: 91 % of 30/s)."""

    async def settle(self, contact: str | None, slot: str) -> None:
        """The send that took ``slot`` has its answer: its place in the windows moves to now.

        Telegram counts a message when it arrives, which is after we took the slot by however
        long the request took to get there; counted from the acquire, a request delayed on
        the way (a busy process, a slow network) and the next one sent on time could arrive
        closer together than the window, and Telegram answers 429 (measured: python -m bench
        dispatch, docs/benchmarks.md). Counted from the answer, which comes after the
        arrival, they cannot."""

    async def pause(self, seconds: float) -> None:
        """Telegram said 429: hold every send of this bot for ``seconds``."""

    async def get_ref(self, contact: str, question_id: str) -> QuestionRef | None: ...

    async def put_ref(self, contact: str, question_id: str, ref: QuestionRef) -> None: ...

    async def forget(self, contacts: list[str], question_ids: list[str]) -> None:
        """Drop a chat's own state (its send window, its question message notes) under each of
        its pseudonyms: its conversation is over, or its citizen erased it."""


class MemoryTelegramState:
    """Process-local state for the embedded default (one process serves the bot)."""

    def __init__(self, limits: RateLimits, ref_ttl_seconds: float, clock: Any = time.monotonic):
        self.limits = limits
        self.ref_ttl = ref_ttl_seconds
        self.clock = clock
        #: Each window's sends as (when, slot), oldest first.
        self._chats: dict[str, deque[tuple[float, str]]] = {}
        self._bot: deque[tuple[float, str]] = deque()
        self._paused_until = 0.0
        #: Replies waiting for a bot-wide slot: their slot name → until when it is held.
        self._replies_waiting: dict[str, float] = {}
        self._refs: dict[tuple[str, str], tuple[float, str]] = {}
        self._lock = asyncio.Lock()

    async def acquire(
        self, contact: str | None, slot: str | None = None, *, reply: bool = False
    ) -> tuple[float, str]:
        async with self._lock:
            now = self.clock()
            if self._paused_until > now:
                return self._paused_until - now, "pause"
            if len(self._chats) > 50_000:
                self._chats = {k: q for k, q in self._chats.items() if q and q[-1][0] > now - 60}
            bot_window = self.limits.padded(self.limits.per_bot_window)
            waiting = self._replies_waiting
            for name in [n for n, until in waiting.items() if until <= now]:
                del waiting[name]
            bot_limit = self.limits.bot_limit(reply, len(waiting))
            windows: list[tuple[str, deque[tuple[float, str]], int, float]] = [
                ("bot", self._bot, bot_limit, bot_window),
            ]
            if contact is not None:
                queue = self._chats.setdefault(contact, deque())
                window = self.limits.padded(self.limits.per_chat_window)
                windows.append(("chat", queue, self.limits.per_chat, window))
            wait, scope = 0.0, ""
            for name, queue, limit, window in windows:
                if limit <= 0:
                    continue
                while queue and queue[0][0] <= now - window:
                    queue.popleft()
                if len(queue) >= limit:
                    needed = queue[len(queue) - limit][0] + window - now
                    if needed > wait:
                        wait, scope = needed, name
            if wait > 0:
                if reply and scope == "bot":
                    # until a window after the slot it waits for frees
                    waiting[slot or secrets.token_hex(8)] = now + wait + bot_window
                return max(wait, 0.001), scope
            if reply and slot:
                waiting.pop(slot, None)
            for _, queue, limit, _ in windows:
                if limit > 0:
                    queue.append((now, slot or ""))
            return 0.0, ""

    async def settle(self, contact: str | None, slot: str) -> None:
        async with self._lock:
            now = self.clock()
            queues = [self._bot] + ([self._chats[contact]] if contact in self._chats else [])
            for queue in queues:
                if any(taken == slot for _, taken in queue):
                    moved = sorted((now if taken == slot else at, taken) for at, taken in queue)
                    queue.clear()
                    queue.extend(moved)

    async def pause(self, seconds: float) -> None:
        async with self._lock:
            self._paused_until = max(self._paused_until, self.clock() + seconds)

    async def get_ref(self, contact: str, question_id: str) -> QuestionRef | None:
        entry = self._refs.get((contact, question_id))
        if entry is None or entry[0] < self.clock():
            return None
        return QuestionRef.loads(entry[1])

    async def put_ref(self, contact: str, question_id: str, ref: QuestionRef) -> None:
        now = self.clock()
        if len(self._refs) > 100_000:
            self._refs = {k: v for k, v in self._refs.items() if v[0] > now}
        self._refs[(contact, question_id)] = (now + self.ref_ttl, ref.dumps())

    async def forget(self, contacts: list[str], question_ids: list[str]) -> None:
        async with self._lock:
            for contact in contacts:
                self._chats.pop(contact, None)
                for question in question_ids:
                    self._refs.pop((contact, question), None)


# KEYS: 1 chat window (or a dummy), 2 bot window, 3 pause marker, 4 replies waiting (a sorted
# set: slot name → until when it is held).
# ARGV: 1 chat limit, 2 chat window ms, 3 bot limit, 4 bot window ms, 5 unique member,
# 6 1 for a reply, 7 the most slots held back for waiting replies.
# Returns {0, 0} when a slot was taken, else {milliseconds to wait, 1 chat | 2 bot | 3 pause}. Redis's clock is the only clock,
# so several processes on several machines agree on the windows.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local paused = tonumber(redis.call('GET', KEYS[3]) or '0')
if paused > now then return {paused - now, 3} end
local reply = ARGV[6] == '1'
local wait = 0
local scope = 0
for i = 1, 2 do
  local limit = tonumber(ARGV[i * 2 - 1])
  if i == 2 and not reply then
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
    limit = limit - math.min(redis.call('ZCARD', KEYS[4]), tonumber(ARGV[7]))
  end
  local window = tonumber(ARGV[i * 2])
  if limit > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
    local n = redis.call('ZCARD', KEYS[i])
    if n >= limit then
      local oldest = redis.call('ZRANGE', KEYS[i], n - limit, n - limit, 'WITHSCORES')
      local w = tonumber(oldest[2]) + window - now
      if w > wait then
        wait = w
        scope = i
      end
    end
  end
end
if wait > 0 then
  if reply and scope == 2 then
    redis.call('ZADD', KEYS[4], now + math.ceil(wait) + tonumber(ARGV[4]), ARGV[5])
    redis.call('PEXPIRE', KEYS[4], math.ceil(wait) + tonumber(ARGV[4]) + 1000)
  end
  return {math.max(1, math.ceil(wait)), scope}
end
if reply then
  redis.call('ZREM', KEYS[4], ARGV[5])
end
for i = 1, 2 do
  local limit = tonumber(ARGV[i * 2 - 1])
  if limit > 0 then
    redis.call('ZADD', KEYS[i], now, ARGV[5])
    redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[i * 2]) + 1000)
  end
end
return {0, 0}
"""

# KEYS: the chat window (or a dummy), the bot window. ARGV: 1 the slot, 2 and 3 their TTLs in ms.
# Moves the slot to now in each window that still holds it (XX: never adds one).
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, 2 do
  if redis.call('ZADD', KEYS[i], 'XX', 'CH', now, ARGV[1]) > 0 then
    redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[i + 1]))
  end
end
return 1
"""

_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local untils = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if untils > current then
  redis.call('SET', KEYS[1], untils, 'PX', tonumber(ARGV[1]) + 1000)
end
return 1
"""


_SCOPES = {0: "", 1: "chat", 2: "bot", 3: "pause"}


class RedisTelegramState:
    """Redis-backed state shared by every process serving the bot."""

    def __init__(
        self, redis: Redis, prefix: str, bot_key: str, limits: RateLimits, ref_ttl_seconds: float
    ) -> None:
        self.redis = redis
        self.limits = limits
        self.ref_ttl = max(1, int(ref_ttl_seconds))
        self.base = f"{prefix}tg:{bot_key}:"
        self._acquire = redis.register_script(_ACQUIRE)
        self._pause = redis.register_script(_PAUSE)
        self._settle = redis.register_script(_SETTLE)

    def _windows(self, contact: str | None) -> list[str]:
        return [f"{self.base}rate:chat:{contact or '-'}", f"{self.base}rate:bot"]

    async def acquire(
        self, contact: str | None, slot: str | None = None, *, reply: bool = False
    ) -> tuple[float, str]:
        limits = self.limits
        chat_limit = limits.per_chat if contact is not None else 0
        keys = [*self._windows(contact), f"{self.base}rate:pause", f"{self.base}rate:reply"]
        args: list[str | int] = [
            chat_limit,
            int(limits.padded(limits.per_chat_window) * 1000),
            limits.per_bot,
            int(limits.padded(limits.per_bot_window) * 1000),
            slot or secrets.token_hex(8),
            1 if reply else 0,
            limits.reply_reserve,
        ]
        wait_ms, scope = await self._acquire(keys=keys, args=args)
        return int(wait_ms) / 1000.0, _SCOPES[int(scope)]

    async def settle(self, contact: str | None, slot: str) -> None:
        limits = self.limits
        ttls = [
            int(limits.padded(limits.per_chat_window) * 1000) + 1000,
            int(limits.padded(limits.per_bot_window) * 1000) + 1000,
        ]
        await self._settle(keys=self._windows(contact), args=[slot, *ttls])

    async def pause(self, seconds: float) -> None:
        await self._pause(keys=[f"{self.base}rate:pause"], args=[max(1, int(seconds * 1000))])

    def _ref_key(self, contact: str, question_id: str) -> str:
        return f"{self.base}q:{contact}:{question_id}"

    async def get_ref(self, contact: str, question_id: str) -> QuestionRef | None:
        raw = await self.redis.get(self._ref_key(contact, question_id))
        return QuestionRef.loads(raw) if raw else None

    async def put_ref(self, contact: str, question_id: str, ref: QuestionRef) -> None:
        await self.redis.set(self._ref_key(contact, question_id), ref.dumps(), ex=self.ref_ttl)

    async def forget(self, contacts: list[str], question_ids: list[str]) -> None:
        keys = [f"{self.base}rate:chat:{contact}" for contact in contacts]
        keys += [self._ref_key(contact, q) for contact in contacts for q in question_ids]
        if keys:
            await self.redis.delete(*keys)
