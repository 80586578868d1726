"""The web chat's mailboxes: what the dispatcher sent to a simulator session, until its page
polls it, and the state of a "try" conversation (a preview of a survey, no database).

Two implementations share one contract (``tests/test_web_mailboxes.py`` runs the same suite
over both): process memory, the embedded single-process default, and Redis, used whenever
``SURVEYBOT_REDIS_URL`` is set, so a session opened on one process is delivered to by the
dispatcher of any other and polled through any of them (no sticky sessions needed).

What the contract keeps:

* session ids are random strings made here (``open``); a session nobody opened, or whose mailbox
  expired, is unknown: ``append`` answers None and the channel fails the message for good;
* each mailbox numbers its messages 1, 2, 3, ... and ``poll(session, after)`` returns the ones
  numbered above ``after``, oldest first; at most ``MAX_MESSAGES`` are kept (the oldest go);
* a mailbox expires ``MAILBOX_TTL_SECONDS`` after its last use (open, append, poll, touch,
  preview); on Redis that is the keys' own TTL, refreshed by each use;
* the messages are survey questions and acknowledgements that may echo an answer, so the end
  of a conversation (a message marked ``closing``: the thank-you, the /stop and /delete replies)
  drops every earlier message the page has already been given, and any earlier one still unread
  as soon as a poll hands it out; the closing message itself stays, and the session stays open
  (a second dossier may be bound to the same chat);
* Redis keys are ``<prefix>web:<SHA-256 of the session id>``: they hold neither the session id
  (whoever reads Redis cannot poll a mailbox) nor anything else about the citizen.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.asyncio import Redis

from storage.coordination import Coordinator, RedisCoordinator

MAILBOX_TTL_SECONDS = 6 * 3600
#: Messages kept per mailbox (the oldest are dropped).
MAX_MESSAGES = 500
#: Mailboxes kept in process memory (the least recently used go first); Redis is bounded by
#: the TTL alone.
MAX_MAILBOXES = 10_000
#: ``after`` is clamped to this (a float in Lua is exact up to 2**53).
MAX_AFTER = 2**53


def digest(session: str) -> str:
    """What the shared stores know a session by: the session id itself never leaves the page and
    the process. Session ids are 144 random bits, so an unkeyed hash cannot be reversed."""
    return hashlib.sha256(session.encode("utf-8", "surrogatepass")).hexdigest()


class Mailboxes(Protocol):
    async def open(self) -> str:
        """A new, empty mailbox under a fresh random session id."""

    async def touch(self, session: str) -> bool:
        """Whether the session is open; its expiry starts again."""

    async def append(
        self, session: str, message: dict[str, Any], *, closing: bool = False
    ) -> int | None:
        """Keep ``message`` under the next number (returned), or None for an unknown session.
        ``closing``: the conversation ends with it (see the module's doc)."""

    async def poll(self, session: str, after: int) -> list[dict[str, Any]] | None:
        """The messages numbered above ``after`` (each with its ``id``), or None when the session
        is unknown."""

    async def get_preview(self, session: str) -> dict[str, Any] | None:
        """The "try" conversation's state kept with the session, or None."""

    async def put_preview(self, session: str, preview: dict[str, Any]) -> bool:
        """Keep a "try" conversation's state (JSON); False when the session is unknown."""


def make_mailboxes(coordinator: Coordinator) -> Mailboxes:
    """Redis when the runtime coordinates through Redis, else process memory."""
    if isinstance(coordinator, RedisCoordinator):
        return RedisMailboxes(coordinator.redis, coordinator.prefix)
    return MemoryMailboxes()


def _clamp(after: int) -> int:
    return max(0, min(int(after), MAX_AFTER))


# ----------------------------------------------------------------------------- process memory
@dataclass
class _Box:
    messages: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_MESSAGES))
    touched: float = 0.0
    seq: int = 0
    #: The highest number a poll has handed out, and the last closing message's number.
    read: int = 0
    closed: int = 0
    preview: str | None = None

    def prune(self) -> None:
        upto = min(self.read, self.closed - 1)
        while self.messages and self.messages[0]["id"] <= upto:
            self.messages.popleft()


class MemoryMailboxes:
    """Mailboxes in this process's memory: the embedded single-process default."""

    def __init__(
        self,
        ttl_seconds: float = MAILBOX_TTL_SECONDS,
        max_mailboxes: int = MAX_MAILBOXES,
        clock: Any = time.monotonic,
    ) -> None:
        self.ttl = ttl_seconds
        self.max_mailboxes = max_mailboxes
        self.clock = clock
        self._boxes: OrderedDict[str, _Box] = OrderedDict()

    def _get(self, session: str) -> _Box | None:
        box = self._boxes.get(session)
        if box is None:
            return None
        now = self.clock()
        if box.touched + self.ttl <= now:
            del self._boxes[session]
            return None
        box.touched = now
        self._boxes.move_to_end(session)
        return box

    def _expire(self) -> None:
        cutoff = self.clock() - self.ttl
        while self._boxes:  # least recently used first: stop at the first one still alive
            oldest = next(iter(self._boxes.values()))
            if oldest.touched > cutoff and len(self._boxes) < self.max_mailboxes:
                break
            self._boxes.popitem(last=False)

    async def open(self) -> str:
        self._expire()
        session = secrets.token_urlsafe(18)
        self._boxes[session] = _Box(touched=self.clock())
        return session

    async def touch(self, session: str) -> bool:
        return self._get(session) is not None

    async def append(
        self, session: str, message: dict[str, Any], *, closing: bool = False
    ) -> int | None:
        box = self._get(session)
        if box is None:
            return None
        box.seq += 1
        box.messages.append({**json.loads(json.dumps(message)), "id": box.seq})
        if closing:
            box.closed = box.seq
            box.prune()
        return box.seq

    async def poll(self, session: str, after: int) -> list[dict[str, Any]] | None:
        box = self._get(session)
        if box is None:
            return None
        after = _clamp(after)
        found = [dict(m) for m in box.messages if m["id"] > after]
        if found:
            box.read = max(box.read, found[-1]["id"])
            box.prune()
        return found

    async def get_preview(self, session: str) -> dict[str, Any] | None:
        box = self._get(session)
        if box is None or box.preview is None:
            return None
        preview: dict[str, Any] = json.loads(box.preview)
        return preview

    async def put_preview(self, session: str, preview: dict[str, Any]) -> bool:
        box = self._get(session)
        if box is None:
            return False
        box.preview = json.dumps(preview)
        return True


# ----------------------------------------------------------------------------- Redis
# One hash per mailbox (seq, read, closed, preview) and one sorted set of its messages, scored by
# number, each member "<number>:<the message's JSON>". Every script refreshes both keys' TTL.
# KEYS: 1 the hash, 2 the messages. Each script answers 0 / {0} for an unknown session.

# ARGV: 1 the message's JSON, 2 TTL ms, 3 messages kept, 4 "1" when closing.
_APPEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local id = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('ZADD', KEYS[2], id, id .. ':' .. ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[3]) + 1))
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'closed', id)
  local upto = math.min(tonumber(redis.call('HGET', KEYS[1], 'read') or '0'), id - 1)
  if upto > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', upto) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return id
"""

# ARGV: 1 after, 2 TTL ms. Answers {1, member, member, ...}.
_POLL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local found = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf')
if #found > 0 then
  local last = tonumber(string.match(found[#found], '^(%d+):'))
  local read = math.max(last, tonumber(redis.call('HGET', KEYS[1], 'read') or '0'))
  redis.call('HSET', KEYS[1], 'read', read)
  local upto = math.min(read, tonumber(redis.call('HGET', KEYS[1], 'closed') or '0') - 1)
  if upto > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', upto) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local answer = {1}
for i = 1, #found do answer[i + 1] = found[i] end
return answer
"""

# ARGV: 1 TTL ms. Answers 1 when open.
_TOUCH = """
if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
"""

# ARGV: 1 TTL ms, 2 the preview's JSON or "" to read it. Answers {0} unknown, else {1, preview}.
_PREVIEW = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'preview', ARGV[2]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return {1, redis.call('HGET', KEYS[1], 'preview') or ''}
"""


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class RedisMailboxes:
    """Mailboxes in Redis, shared by every process of the deployment."""

    def __init__(self, redis: Redis, prefix: str, ttl_seconds: float = MAILBOX_TTL_SECONDS) -> None:
        self.redis = redis
        self.base = f"{prefix}web:"
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        self._append = redis.register_script(_APPEND)
        self._poll = redis.register_script(_POLL)
        self._touch = redis.register_script(_TOUCH)
        self._preview = redis.register_script(_PREVIEW)

    def keys(self, session: str) -> list[str]:
        box = f"{self.base}{digest(session)}"
        return [box, f"{box}:m"]

    async def open(self) -> str:
        session = secrets.token_urlsafe(18)
        box, _ = self.keys(session)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(box, "seq", 0)
            pipe.pexpire(box, self.ttl_ms)
            await pipe.execute()
        return session

    async def touch(self, session: str) -> bool:
        return bool(await self._touch(keys=self.keys(session), args=[self.ttl_ms]))

    async def append(
        self, session: str, message: dict[str, Any], *, closing: bool = False
    ) -> int | None:
        body = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        args: list[str | int] = [body, self.ttl_ms, MAX_MESSAGES, "1" if closing else "0"]
        number = int(await self._append(keys=self.keys(session), args=args))
        return number or None

    async def poll(self, session: str, after: int) -> list[dict[str, Any]] | None:
        answer = await self._poll(keys=self.keys(session), args=[_clamp(after), self.ttl_ms])
        if not int(answer[0]):
            return None
        found: list[dict[str, Any]] = []
        for member in answer[1:]:
            number, _, body = _text(member).partition(":")
            found.append({**json.loads(body), "id": int(number)})
        return found

    async def get_preview(self, session: str) -> dict[str, Any] | None:
        answer = await self._preview(keys=self.keys(session), args=[self.ttl_ms, ""])
        if not int(answer[0]) or not answer[1]:
            return None
        preview: dict[str, Any] = json.loads(_text(answer[1]))
        return preview

    async def put_preview(self, session: str, preview: dict[str, Any]) -> bool:
        body = json.dumps(preview, ensure_ascii=False, separators=(",", ":"))
        answer = await self._preview(keys=self.keys(session), args=[self.ttl_ms, body])
        return bool(int(answer[0]))
