"""Dashboard login throttling over real HTTP: lockout per (account, client), per client and per
account, on both databases with the buckets in real Redis. Time is a fake clock the tests move."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bot.dashboard import auth
from bot.runtime import Runtime
from tests.test_limits import FakeClock

Client = TestClient[Any, Any]
PASSWORD = "mat-khau-dai"


@pytest.fixture
async def admin(runtime: Runtime) -> str:
    await auth.create_user(runtime.sessions, "lan", PASSWORD, "admin")
    return "lan"


@pytest.fixture
def clock(runtime: Runtime) -> FakeClock:
    clock = FakeClock()
    runtime.coordinator.limiter.clock = clock  # type: ignore[attr-defined]
    # Tests speak for several clients through a trusted proxy's X-Forwarded-For.
    runtime.settings.trusted_proxies = "127.0.0.1,::1"
    return clock


async def login(client: Client, username: str, password: str, address: str = "198.51.100.1") -> Any:
    headers = {"X-Forwarded-For": address}
    form = await client.get("/admin/login", headers=headers)
    csrf = re.search(r'name="csrf" value="([^"]+)"', await form.text())
    assert csrf
    return await client.post(
        "/admin/login",
        data={"csrf": csrf.group(1), "username": username, "password": password},
        headers=headers,
        allow_redirects=False,
    )


async def throttled(runtime: Runtime) -> list[Any]:
    return [e for e in await runtime.audit.recent(1000) if e.action == "login.throttled"]


async def test_the_41st_wrong_password_gets_429_with_retry_after(
    client: Client, runtime: Runtime, admin: str, clock: FakeClock
) -> None:
    answers = [await login(client, admin, f"sai-{i}") for i in range(41)]
    statuses = [a.status for a in answers]
    pair = runtime.settings.login_pair_attempts
    assert statuses == [401] * pair + [429] * (41 - pair)
    last = answers[40]
    retry_after = last.headers["Retry-After"]
    assert retry_after.isdigit() and int(retry_after) >= 1
    assert "text/html" in last.headers["Content-Type"]
    assert "Đăng nhập sai quá nhiều lần" in await last.text()
    # While locked out, even the right password is not checked from this client...
    assert (await login(client, admin, PASSWORD)).status == 429
    # ...and the lockout is audited once, not once per request.
    entries = await throttled(runtime)
    assert len(entries) == 1 and entries[0].detail["limit"] == "pair"
    assert entries[0].detail["username"] == "lan"


async def test_with_the_limits_off_the_41st_wrong_password_is_answered_401(
    client: Client, runtime: Runtime, admin: str, clock: FakeClock
) -> None:
    runtime.settings.rate_limits_enabled = False
    statuses = [(await login(client, admin, f"sai-{i}")).status for i in range(41)]
    assert statuses == [401] * 41


async def test_guesses_at_the_same_time_cannot_slip_past_the_lockout(
    client: Client, runtime: Runtime, admin: str, clock: FakeClock
) -> None:
    """Tokens are taken before argon2 runs: 30 concurrent guesses, exactly 10 checked."""
    answers = await asyncio.gather(*(login(client, admin, f"sai-{i}") for i in range(30)))
    statuses = sorted(a.status for a in answers)
    pair = runtime.settings.login_pair_attempts
    assert statuses == [401] * pair + [429] * (30 - pair)


async def test_after_the_window_the_right_password_works_and_clears_the_failures(
    client: Client, runtime: Runtime, admin: str, clock: FakeClock
) -> None:
    for i in range(12):
        last = await login(client, admin, f"sai-{i}")
    assert last.status == 429
    clock.advance(int(last.headers["Retry-After"]))
    assert (await login(client, admin, PASSWORD)).status == 303
    # A success gives back its pair's failures: the next typo is a 401 again, not a lockout.
    pair = runtime.settings.login_pair_attempts
    statuses = [(await login(client, admin, f"sai-{i}")).status for i in range(pair)]
    assert statuses == [401] * pair


async def test_an_attack_from_many_addresses_cannot_lock_the_admin_out(
    client: Client, runtime: Runtime, admin: str, clock: FakeClock
) -> None:
    settings = runtime.settings
    settings.login_account_attempts = 8
    settings.login_pair_attempts = 3
    # The attacker spends the account's bucket from three addresses (3 x 3 guesses > 8).
    statuses = [
        (await login(client, admin, f"sai-{n}-{i}", f"203.0.113.{n}")).status
        for n in range(3)
        for i in range(3)
    ]
    assert statuses == [401] * 8 + [429]
    # An address that already failed on this account is refused while the account is under attack.
    again = await login(client, admin, "sai-x", "203.0.113.1")
    assert again.status == 429 and int(again.headers["Retry-After"]) >= 1
    # A fresh client gets its one try, with the wrong password...
    assert (await login(client, admin, "sai-y", "203.0.113.99")).status == 401
    # ...and the admin's correct password from a fresh client still logs in.
    assert (await login(client, admin, PASSWORD, "192.0.2.10")).status == 303
    limits = {e.detail["limit"] for e in await throttled(runtime)}
    assert "account" in limits


async def test_a_fresh_client_gets_one_try_even_when_it_sends_many_at_once(
    client: Client, runtime: Runtime, admin: str, clock: FakeClock
) -> None:
    runtime.settings.login_account_attempts = 2
    for i in range(2):
        assert (await login(client, admin, f"sai-{i}", f"203.0.113.{i}")).status == 401
    answers = await asyncio.gather(
        *(login(client, admin, f"sai-x{i}", "198.51.100.77") for i in range(10))
    )
    assert sorted(a.status for a in answers) == [401] + [429] * 9


async def test_one_address_spraying_many_accounts_is_throttled(
    client: Client, runtime: Runtime, admin: str, clock: FakeClock
) -> None:
    burst = runtime.settings.login_client_attempts
    statuses = [(await login(client, f"user{i}", "sai-mat-khau")).status for i in range(burst + 1)]
    assert statuses == [401] * burst + [429]
    # Another client is not affected.
    assert (await login(client, admin, PASSWORD, "192.0.2.10")).status == 303
