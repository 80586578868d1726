"""One contract for the shared Telegram state, run over the process-memory and the Redis flavour.

Every test makes its states through the ``states`` fixture: in memory two "processes" share one
object (the embedded default has one process); on Redis each is a client of its own, as two
processes would be. Time moves through ``states.advance``: the memory flavour's clock is a fake
the test moves, Redis's clock is the server's own ``TIME``, so there the test lets that much real
time pass (a fraction of a second: the windows are short). The waits a state reports are checked
against the time that really passed, so the same bounds hold for both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bot.adapters.telegram.state import (
    MemoryTelegramState,
    QuestionRef,
    RateLimits,
    RedisTelegramState,
    TelegramState,
)
from tests.conftest import REDIS_URL

LIMITS = RateLimits(per_chat=2, per_chat_window=0.5, per_bot=4, per_bot_window=0.5)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class States:
    """Makes states that share one store, and moves the time they see."""

    def __init__(self, flavour: str, prefix: str) -> None:
        self.flavour = flavour
        self.prefix = prefix
        self.clock = FakeClock()
        self._memory: MemoryTelegramState | None = None
        self._clients: list[Redis] = []

    def make(self, limits: RateLimits = LIMITS, ref_ttl: float = 60) -> TelegramState:
        if self.flavour == "memory":
            if self._memory is None:
                self._memory = MemoryTelegramState(limits, ref_ttl, clock=self.clock)
            assert self._memory.limits == limits and self._memory.ref_ttl == ref_ttl
            return self._memory
        client = Redis.from_url(REDIS_URL)
        self._clients.append(client)
        return RedisTelegramState(client, self.prefix, "123", limits, ref_ttl)

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for the states (Redis: really, it reads its own clock)."""
        if self.flavour == "memory":
            self.clock.now += seconds
        else:
            await asyncio.sleep(seconds)

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def states(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[States]:
    made = States(str(request.param), redis_prefix)
    yield made
    await made.close()


def assert_wait(wait: float, expected: float, since: float) -> None:
    """``wait`` is what is left of ``expected`` seconds counted from ``since`` (a monotonic
    reading taken before the slot that binds was taken): never more, and no less than what
    really passed allows (2 ms for Redis's whole milliseconds)."""
    passed = time.monotonic() - since
    assert expected - passed - 0.002 <= wait <= expected + 1e-9


async def test_limits_per_chat_per_bot_and_pause_hold_across_processes(states: States) -> None:
    one, other = states.make(), states.make()
    padded = LIMITS.padded(LIMITS.per_chat_window)  # the window plus a safety margin
    since = time.monotonic()
    assert await one.acquire("chat-a") == (0.0, "")
    assert await other.acquire("chat-a") == (0.0, "")  # a second process, same chat
    wait, scope = await one.acquire("chat-a")
    assert scope == "chat"
    assert_wait(wait, padded, since)
    assert (await other.acquire("chat-b"))[0] == 0
    assert (await other.acquire("chat-c"))[0] == 0
    wait, scope = await one.acquire("chat-d")  # the bot's 4 per half second are spent
    assert scope == "bot"
    assert_wait(wait, LIMITS.padded(LIMITS.per_bot_window), since)
    await states.advance(wait + 0.01)  # the wait the state named: then the slot is there
    assert await one.acquire("chat-a") == (0.0, "")
    since = time.monotonic()
    await other.pause(1)
    wait, scope = await one.acquire("chat-e")
    assert scope == "pause"
    assert_wait(wait, 1.0, since)
    assert (await one.acquire(None))[1] == "pause"  # a pause holds bot-wide sends too
    await states.advance(wait + 0.01)
    assert await one.acquire(None) == (0.0, "")


async def test_a_denied_acquire_takes_no_slot(states: States) -> None:
    state = states.make(RateLimits(per_chat=1, per_chat_window=0.5, per_bot=0))
    assert await state.acquire("chat-a") == (0.0, "")
    for _ in range(5):
        assert (await state.acquire("chat-a"))[1] == "chat"
    wait, _ = await state.acquire("chat-a")
    await states.advance(wait + 0.01)
    assert await state.acquire("chat-a") == (0.0, "")  # the refusals queued nothing


async def test_a_send_counts_from_its_answer_so_a_slow_request_cannot_crowd_the_next(
    states: States,
) -> None:
    """A request that took 0.3 s to be answered holds its chat's and the bot's window from its
    answer on: half a second after the acquire the next send still waits (unsettled it would
    go, and could reach Telegram less than a window after the slow one arrived)."""
    limits = RateLimits(per_chat=1, per_chat_window=0.5, per_bot=1, per_bot_window=0.5)
    one, other = states.make(limits), states.make(limits)
    assert await one.acquire("chat-a", "slow") == (0.0, "")
    await states.advance(0.3)  # the request is on its way
    since = time.monotonic()
    await one.settle("chat-a", "slow")  # its answer is back
    await states.advance(0.3)  # 0.6 s after the acquire, 0.3 s after the answer
    wait, scope = await other.acquire("chat-a", "next")
    assert scope in {"chat", "bot"}
    assert_wait(wait, limits.padded(0.5) - 0.3, since)
    wait, scope = await other.acquire("chat-b", "elsewhere")  # the bot's window holds too
    assert scope == "bot"
    await states.advance(wait + 0.01)
    assert await other.acquire("chat-a", "next") == (0.0, "")
    await one.settle("chat-z", "unknown")  # a slot no window holds: nothing changes or appears
    assert (await one.acquire("chat-z"))[1] == "bot"


async def test_a_waiting_reply_gets_the_next_bot_slot_before_the_backlog(states: States) -> None:
    """Each reply refused by a full bot window holds the slot it waits for: in the next window
    the backlog's sends stop one short of the bot's limit per reply waiting (here two of
    four), the replies take the slots they left, and once they have them the backlog has the
    whole limit again, with no slot left idle."""
    limits = RateLimits(per_chat=0, per_chat_window=1.0, per_bot=4, per_bot_window=0.5)
    backlog, conversation = states.make(limits), states.make(limits)
    assert [await backlog.acquire(None) for _ in range(4)] == [(0.0, "")] * 4
    first_wait, scope = await conversation.acquire("chat-r", "reply-1", reply=True)
    assert scope == "bot"
    assert (await conversation.acquire("chat-s", "reply-2", reply=True))[1] == "bot"
    await states.advance(first_wait + 0.01)
    taken = [(await backlog.acquire(None))[1] for _ in range(3)]
    assert taken == ["", "", "bot"]  # two of four: one is left for each reply
    assert await conversation.acquire("chat-r", "reply-1", reply=True) == (0.0, "")
    assert (await backlog.acquire(None))[1] == "bot"  # the other reply still holds its slot
    assert await conversation.acquire("chat-s", "reply-2", reply=True) == (0.0, "")
    await states.advance(limits.padded(0.5) + 0.01)  # no reply waits: the whole limit
    assert [await backlog.acquire(None) for _ in range(4)] == [(0.0, "")] * 4


async def test_a_reply_that_never_comes_back_holds_its_slot_one_window_only(
    states: States,
) -> None:
    limits = RateLimits(per_chat=0, per_chat_window=1.0, per_bot=4, per_bot_window=0.5)
    backlog, conversation = states.make(limits), states.make(limits)
    assert [await backlog.acquire(None) for _ in range(4)] == [(0.0, "")] * 4
    wait, _ = await conversation.acquire("chat-r", "gone", reply=True)
    await states.advance(wait + 0.01)
    assert [(await backlog.acquire(None))[1] for _ in range(4)] == ["", "", "", "bot"]
    await states.advance(limits.padded(0.5) + 0.01)  # its hold lapsed with the window
    assert [await backlog.acquire(None) for _ in range(4)] == [(0.0, "")] * 4


async def test_a_limit_of_zero_is_off(states: States) -> None:
    state = states.make(RateLimits(per_chat=0, per_chat_window=1.0, per_bot=0))
    assert [await state.acquire("chat-a") for _ in range(50)] == [(0.0, "")] * 50


async def test_racers_at_the_same_time_share_exactly_the_limits(states: States) -> None:
    """40 sends at once through four processes: the chat's 2 and the bot's 4, no more."""
    limits = RateLimits(per_chat=2, per_chat_window=60, per_bot=4, per_bot_window=60)
    racers = [states.make(limits) for _ in range(4)]
    same_chat = await asyncio.gather(*(racers[i % 4].acquire("race") for i in range(20)))
    assert sum(wait == 0 for wait, _ in same_chat) == 2
    many_chats = await asyncio.gather(*(racers[i % 4].acquire(f"c{i}") for i in range(20)))
    assert sum(wait == 0 for wait, _ in many_chats) == 2  # 2 of the bot's 4 went to "race"
    assert {scope for wait, scope in many_chats if wait} == {"bot"}


async def test_question_refs_are_shared_between_processes_and_expire(states: States) -> None:
    one, other = states.make(ref_ttl=1), states.make(ref_ttl=1)
    await one.put_ref("c0ffee", "c3", QuestionRef("Câu 3?", [5, 7], None))
    ref = await other.get_ref("c0ffee", "c3")
    assert ref is not None and ref.live == [5, 7] and ref.text == "Câu 3?" and ref.done is None
    assert await other.get_ref("c0ffee", "c4") is None
    await states.advance(1.1)
    assert await other.get_ref("c0ffee", "c3") is None


async def test_forget_drops_a_chats_window_and_notes_under_each_pseudonym(
    states: States,
) -> None:
    one, other = states.make(RateLimits(1, 60.0, 0, 1.0)), states.make(RateLimits(1, 60.0, 0, 1.0))
    for contact in ("p1", "p2", "p3"):
        assert await one.acquire(contact) == (0.0, "")
        await one.put_ref(contact, "q1", QuestionRef("Câu 1?", [1]))
    await other.forget(["p1", "p2"], ["q1"])
    assert await one.acquire("p1") == (0.0, "") and await one.acquire("p2") == (0.0, "")
    assert await one.get_ref("p1", "q1") is None and await one.get_ref("p2", "q1") is None
    assert (await one.acquire("p3"))[1] == "chat"  # another chat keeps its state
    assert await one.get_ref("p3", "q1") is not None


# ============================================================================ Redis's layout
async def test_redis_refs_are_keyed_by_pseudonym_and_expire(redis_prefix: str) -> None:
    client = Redis.from_url(REDIS_URL)
    try:
        state = RedisTelegramState(client, redis_prefix, "123", RateLimits(2, 0.5, 4, 0.5), 60)
        await state.put_ref("c0ffee", "c3", QuestionRef("Câu 3?", [9]))
        ref = await state.get_ref("c0ffee", "c3")
        assert ref is not None and ref.live == [9]
        keys = sorted([k.decode() async for k in client.scan_iter(match=f"{redis_prefix}*")])
        ttls = [await client.ttl(k) for k in keys]
    finally:
        await client.aclose()
    assert keys == [f"{redis_prefix}tg:123:q:c0ffee:c3"]
    assert all(t > 0 for t in ttls)
