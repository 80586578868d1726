"""The web chat's mailbox store: one contract, run over both implementations (process memory and
Redis), in the manner of aiogram's FSM storage tests; then what only one of them has to show
(memory: a bounded number of mailboxes; Redis: what its keys hold and their TTL).

Time passing is simulated, never waited for: the memory store reads an injected clock, and on
Redis every key of the test's prefix has its remaining TTL cut by the same amount.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from bot.adapters.web.channel import WebChannel
from bot.adapters.web.mailboxes import (
    MAX_MESSAGES,
    Mailboxes,
    MemoryMailboxes,
    RedisMailboxes,
    digest,
    make_mailboxes,
)
from bot.channels import DeliveryError, OutboundMessage
from storage.coordination import LocalCoordinator, RedisCoordinator
from tests.conftest import REDIS_URL
from tests.helpers import dump_redis

TTL = 600.0


class Harness:
    """A store under test and a way to make time pass for it."""

    def __init__(self, store: Mailboxes) -> None:
        self.store = store

    async def age(self, seconds: float) -> None:
        raise NotImplementedError


class MemoryHarness(Harness):
    def __init__(self) -> None:
        self.now = 1000.0
        super().__init__(MemoryMailboxes(ttl_seconds=TTL, clock=lambda: self.now))

    async def age(self, seconds: float) -> None:
        self.now += seconds


class RedisHarness(Harness):
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        super().__init__(RedisMailboxes(redis, prefix, ttl_seconds=TTL))

    async def age(self, seconds: float) -> None:
        """Every key is ``seconds`` nearer its expiry (PEXPIRE at or below 0 deletes it)."""
        async for key in self.redis.scan_iter(match=f"{self.prefix}*"):
            left = await self.redis.pttl(key)
            if left > 0:
                await self.redis.pexpire(key, left - int(seconds * 1000))


@pytest.fixture(params=["memory", "redis"])
async def harness(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Harness]:
    if request.param == "memory":
        yield MemoryHarness()
        return
    redis = Redis.from_url(REDIS_URL)
    try:
        yield RedisHarness(redis, redis_prefix)
    finally:
        await redis.aclose()


def message(text: str, **extra: Any) -> dict[str, Any]:
    return OutboundMessage(text, [("Có", "q:1:yes")], question_id="c3", extra=extra).to_dict()


# ============================================================================ the contract
async def test_sessions_are_random_server_made_ids_with_empty_mailboxes(harness: Harness) -> None:
    store = harness.store
    sessions = {await store.open() for _ in range(20)}
    assert len(sessions) == 20
    for session in sessions:
        assert len(session) >= 24 and session.isascii()
        assert await store.touch(session)
        assert await store.poll(session, 0) == []


async def test_an_unknown_session_is_refused_everywhere(harness: Harness) -> None:
    store = harness.store
    await store.open()
    for session in ("nobody-opened-this", "", "x" * 300, "ü\x00"):
        assert await store.append(session, message("Câu hỏi")) is None
        assert await store.poll(session, 0) is None
        assert not await store.touch(session)
        assert await store.get_preview(session) is None
        assert not await store.put_preview(session, {"state": {}})


async def test_messages_are_numbered_upwards_and_polled_after_a_number(harness: Harness) -> None:
    store = harness.store
    session = await store.open()
    sent = [message("Một"), message("Hai — tiếng Việt có dấu", ack=True), message("Ba")]
    numbers = [await store.append(session, m) for m in sent]
    assert numbers == [1, 2, 3]
    everything = await store.poll(session, 0)
    assert everything == [{**m, "id": n} for m, n in zip(sent, numbers, strict=True)]
    assert [m["id"] for m in await store.poll(session, 2) or []] == [3]
    assert await store.poll(session, 3) == []
    assert await store.poll(session, 10**40) == []  # any integer the page sends
    assert [m["id"] for m in await store.poll(session, -5) or []] == [1, 2, 3]
    assert await store.append(session, message("Bốn")) == 4


async def test_mailboxes_are_apart(harness: Harness) -> None:
    store = harness.store
    a, b = await store.open(), await store.open()
    await store.append(a, message("cho A"))
    await store.append(b, message("cho B"))
    await store.append(a, message("cho A lần hai"))
    assert [m["text"] for m in await store.poll(a, 0) or []] == ["cho A", "cho A lần hai"]
    assert [(m["id"], m["text"]) for m in await store.poll(b, 0) or []] == [(1, "cho B")]


async def test_a_mailbox_keeps_the_last_500_messages(harness: Harness) -> None:
    store = harness.store
    session = await store.open()
    for n in range(MAX_MESSAGES + 10):
        await store.append(session, message(f"tin {n + 1}"))
    kept = await store.poll(session, 0) or []
    assert len(kept) == MAX_MESSAGES == 500
    assert (kept[0]["id"], kept[-1]["id"]) == (11, 510)
    assert kept[0]["text"] == "tin 11"


async def test_a_mailbox_expires_after_the_ttl_of_no_use(harness: Harness) -> None:
    store = harness.store
    idle, used = await store.open(), await store.open()
    await store.append(idle, message("bị bỏ quên"))
    await store.append(used, message("còn dùng"))
    for use in ("poll", "append", "touch", "preview"):
        await harness.age(TTL * 0.6)
        if use == "poll":
            assert await store.poll(used, 0)
        elif use == "append":
            assert await store.append(used, message("nữa"))
        elif use == "touch":
            assert await store.touch(used)
        else:
            assert await store.put_preview(used, {"state": {"q": use}})
            assert await store.get_preview(used) == {"state": {"q": use}}
    assert await store.poll(idle, 0) is None  # idle for 2.4 TTLs: gone
    assert await store.append(idle, message("quá muộn")) is None
    assert (await store.poll(used, 0) or [{}])[0].get("text") == "còn dùng"
    await harness.age(TTL + 1)
    assert not await store.touch(used)
    assert await store.get_preview(used) is None


async def test_the_end_of_a_conversation_drops_what_the_page_has_read(harness: Harness) -> None:
    store = harness.store
    session = await store.open()
    for text in ("Câu 1", "Đã chọn: Rất hài lòng"):
        await store.append(session, message(text))
    assert len(await store.poll(session, 0) or []) == 2  # the page has shown these
    await store.append(session, message("Đã chọn: Không lần nào"))  # not polled yet
    closing = await store.append(session, message("Cảm ơn", forget=["c3"]), closing=True)
    assert closing == 4
    # What was read is gone at once; what was not is handed out once, then gone too.
    assert [m["text"] for m in await store.poll(session, 2) or []] == [
        "Đã chọn: Không lần nào",
        "Cảm ơn",
    ]
    assert [m["text"] for m in await store.poll(session, 0) or []] == ["Cảm ơn"]
    # The session stays open: a second dossier bound to the same chat carries on, numbered on.
    assert await store.append(session, message("Phiếu thứ hai")) == 5
    assert [(m["id"], m["text"]) for m in await store.poll(session, 0) or []] == [
        (4, "Cảm ơn"),
        (5, "Phiếu thứ hai"),
    ]
    assert await store.append(session, message("Đã xoá"), closing=True) == 6
    assert [m["text"] for m in await store.poll(session, 0) or []] == ["Đã xoá"]


async def test_a_preview_is_kept_with_its_session(harness: Harness) -> None:
    store = harness.store
    session, other = await store.open(), await store.open()
    assert await store.get_preview(session) is None
    state = {"survey": "mot-cua", "version": 1, "state": {"lang": "vi", "answers": {"c3": 1}}}
    assert await store.put_preview(session, state)
    await store.append(session, message("Câu 1"))
    assert await store.get_preview(session) == state
    assert await store.get_preview(other) is None
    assert await store.put_preview(session, {**state, "state": {"done": True}})
    assert (await store.get_preview(session) or {})["state"] == {"done": True}


async def test_the_web_channel_fails_a_closed_session_for_good(harness: Harness) -> None:
    channel = WebChannel(harness.store)
    session = await channel.open_session()
    await channel.send(session, OutboundMessage("Xin chào"))
    assert [m["text"] for m in await channel.poll(session, 0)] == ["Xin chào"]
    with pytest.raises(DeliveryError) as refused:
        await channel.send("nobody-opened-this", OutboundMessage("Xin chào"))
    assert refused.value.permanent
    await harness.age(TTL + 1)
    with pytest.raises(DeliveryError) as expired:
        await channel.send(session, OutboundMessage("Còn đó không?"))
    assert expired.value.permanent
    assert await channel.poll(session, 0) == []


# ============================================================================ per implementation
async def test_memory_keeps_a_bounded_number_of_mailboxes_least_recently_used_first() -> None:
    store = MemoryMailboxes(max_mailboxes=3)
    first, second, third = [await store.open() for _ in range(3)]
    assert await store.touch(first)  # used: second is now the least recently used
    fourth = await store.open()
    assert [await store.touch(s) for s in (first, second, third, fourth)] == [
        True,
        False,
        True,
        True,
    ]


async def test_redis_keys_hold_no_session_id_and_expire_on_their_own(redis_prefix: str) -> None:
    redis = Redis.from_url(REDIS_URL)
    try:
        store = RedisMailboxes(redis, redis_prefix)
        session = await store.open()
        await store.append(session, message("Câu 1"))
        await store.put_preview(session, {"state": {}})
        keys = sorted([k.decode() async for k in redis.scan_iter(match=f"{redis_prefix}*")])
        assert keys == [
            f"{redis_prefix}web:{digest(session)}",
            f"{redis_prefix}web:{digest(session)}:m",
        ]
        for key in keys:
            assert 0 < await redis.pttl(key) <= 6 * 3600 * 1000
        assert session not in await dump_redis(redis_prefix)
        await redis.pexpire(keys[0], 1000)  # nearly gone: a poll gives it the whole TTL again
        await store.poll(session, 0)
        assert await redis.pttl(keys[0]) > 6 * 3600 * 1000 - 60_000
        # Once the conversation ended and the page read it, only the closing message is left.
        await store.append(session, message("Đã chọn: Rất hài lòng"))
        await store.poll(session, 0)
        await store.append(session, message("Cảm ơn"), closing=True)
        left = cast(list[bytes], await redis.zrange(keys[1], 0, -1))
        assert [json.loads(m.decode().partition(":")[2])["text"] for m in left] == ["Cảm ơn"]
    finally:
        await redis.aclose()


async def test_the_store_follows_the_coordinator(redis_prefix: str) -> None:
    assert isinstance(make_mailboxes(LocalCoordinator()), MemoryMailboxes)
    coordinator = RedisCoordinator.from_url(REDIS_URL, redis_prefix)
    try:
        assert isinstance(make_mailboxes(coordinator), RedisMailboxes)
    finally:
        await coordinator.close()
