"""The OA access-token lifecycle: refresh ahead of expiry, one refresh at a time, sealed at rest.

Why so careful: Zalo refresh tokens are single-use and rotate. Two processes refreshing with the
same refresh token lose the grant (the second is refused and nobody holds a valid token), and a
process that uses a new pair before storing it loses the grant if it crashes. So a refresh holds
the coordinator lock (one across all processes), re-reads the stored pair inside it (another
process may have just refreshed), and commits the new pair sealed with the key ring before any
call uses it.

Why two kinds of failure: a refresh that failed for a passing reason (HTTP 429 or 5xx, a network
error or timeout, Zalo's rate-limit code, a code we do not know) leaves the grant as it was, so
it is tried again a few times with exponential backoff and jitter (outside the lock, on the
suite's clock and sleep, bounded in tries and in total time: ``zalo_token_refresh_*``), then
sends pause (``TokenUnavailable``) and the next send tries again. Only an answer that the grant
itself is gone (``GRANT_GONE``) needs a human (re-consent): the grant is marked failed, recorded
in the audit log as an admin alert, and Zalo sends pause rather than fail, so nothing is lost. A
timed-out refresh may have been taken by Zalo (the new pair then never reached us): the retry
is then refused as a used refresh token and the grant is marked failed, which is what it is.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.adapters.zalo.http import ZaloHttp, ZaloTransportError, zalo_error
from storage.audit import AuditLog
from storage.coordination import Coordinator
from storage.db import Sessions
from storage.models import ZaloToken
from storage.pseudonym import KeyRing

log = logging.getLogger(__name__)
LOCK_NAME = "zalo-oauth-refresh"
#: How long sends wait after transient failures when no setting says otherwise.
TRANSPORT_RETRY_SECONDS = 30.0
#: OAuth answers meaning the grant itself is gone, so only a re-consent helps. No official
#: refresh-specific code is documented (zalo.md §3 "Refresh failure shape" and §9 question 5);
#: S4 describes OAuth errors as -14xxx [L], and these are the ones the emulator answers for an
#: invalid app id (-14002), an invalid app secret (-14005) and an invalid, expired or already
#: used refresh token (-14014): not documented, our reading. Added from the documented tables:
#: -101/-102 app invalid / not existed and -104 app secret invalid (zalo.md §4.4), -223 "OA has
#: not authorized this API" whose handling is re-consent (zalo.md §1.5).
GRANT_GONE = frozenset({-14002, -14005, -14014, -101, -102, -104, -223})
#: Zalo's rate-limit code (zalo.md §1.5 and §6: -32, "back off, retry").
RATE_LIMITED = frozenset({-32})


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """How a transiently failing refresh is retried (``zalo_token_refresh_*`` settings)."""

    attempts: int = 4
    backoff_seconds: float = 1.0
    budget_seconds: float = 20.0
    retry_later_seconds: float = TRANSPORT_RETRY_SECONDS

    def delay(self, tries_done: int, rng: random.Random) -> float:
        """Exponential backoff with jitter: half fixed, half random ("equal jitter")."""
        step = self.backoff_seconds * 2 ** (tries_done - 1)
        return step / 2 + rng.uniform(0, step / 2)


class _Transient(Exception):
    """One refresh attempt failed for a passing reason (``reason`` names no identifier)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenUnavailable(Exception):
    """No usable access token now; retry after ``retry_after`` seconds."""

    def __init__(self, reason: str, retry_after: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class ZaloTokens:
    """Hands out a valid OA access token, refreshing it when it is about to expire."""

    def __init__(
        self,
        http: ZaloHttp,
        sessions: Sessions,
        keyring: KeyRing,
        coordinator: Coordinator,
        *,
        app_id: str,
        app_secret: str,
        oauth_base_url: str,
        bootstrap_refresh_token: str | None,
        margin_seconds: float,
        pause_seconds: float,
        clock: Callable[[], float],
        audit: AuditLog,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        policy: RefreshPolicy | None = None,
    ) -> None:
        self.http = http
        self.sessions = sessions
        self.audit = audit
        self.keys = keyring
        self.coordinator = coordinator
        self.app_id = app_id
        self.app_secret = app_secret
        self.url = oauth_base_url.rstrip("/") + "/v4/oa/access_token"
        self.bootstrap = bootstrap_refresh_token
        self.margin = margin_seconds
        self.pause = pause_seconds
        self.clock = clock
        self.sleep = sleep or _real_sleep
        self.policy = policy or RefreshPolicy()
        self._rng = random.Random()  # jitter only, not a secret
        self._cached: tuple[str, float] | None = None
        #: After transient failures used up the retries: no refresh call before this instant.
        self._retry_at = 0.0

    async def access_token(self) -> str:
        """A token valid for at least the refresh margin (refreshing first when needed)."""
        if self._cached and self._cached[1] - self.margin > self.clock():
            return self._cached[0]
        return await self._ensure(stale=None)

    async def invalidate(self, token: str) -> str:
        """Zalo called ``token`` invalid: get the current one, refreshing unless already done."""
        return await self._ensure(stale=token)

    async def install(self, refresh_token: str) -> None:
        """An admin re-consented: store the new refresh token and resume sends."""
        async with self.coordinator.lock(LOCK_NAME, timeout=60), self.sessions() as session:
            row = await session.get(ZaloToken, self.app_id) or ZaloToken(app_id=self.app_id)
            row.refresh_sealed = self.keys.seal(refresh_token)
            row.access_sealed = None
            row.access_expires_at = None
            row.status = "ok"
            row.updated_at = self._now()
            session.add(row)
            await session.commit()
        self._cached = None
        self._retry_at = 0.0

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    async def _ensure(self, stale: str | None) -> str:
        """The stored token unless stale, else a refresh, retried while failures are transient."""
        started = self.clock()
        tries = 0
        while True:
            try:
                return await self._attempt(stale, first=tries == 0)
            except _Transient as exc:
                tries += 1
                delay = self.policy.delay(tries, self._rng)
                spent = self.clock() - started
                if tries >= self.policy.attempts or spent + delay > self.policy.budget_seconds:
                    wait = self.policy.retry_later_seconds
                    self._retry_at = self.clock() + wait
                    log.warning(
                        "zalo token refresh failed %d time(s) (%s); the grant is kept, "
                        "sends wait %.0f s",
                        tries,
                        exc.reason,
                        wait,
                    )
                    raise TokenUnavailable("zalo token refresh unavailable", wait) from None
                log.info("zalo token refresh failed (%s); trying again", exc.reason)
            await self.sleep(delay)

    async def _attempt(self, stale: str | None, *, first: bool) -> str:
        async with self.coordinator.lock(LOCK_NAME, timeout=60), self.sessions() as session:
            row = await session.get(ZaloToken, self.app_id)
            if row is not None and row.status == "failed":
                raise TokenUnavailable("zalo token refresh failed; re-consent needed", self.pause)
            if row is not None and row.access_sealed and row.access_expires_at:
                token = self.keys.open(row.access_sealed)
                expires = row.access_expires_at.timestamp()
                if token != stale and expires - self.margin > self.clock():
                    self._cached = (token, expires)
                    return token
            if first and self._retry_at > self.clock():
                raise TokenUnavailable(
                    "zalo token refresh unavailable", self._retry_at - self.clock()
                )
            if row is not None and row.refresh_sealed:
                refresh = self.keys.open(row.refresh_sealed)
            elif self.bootstrap:
                refresh = self.bootstrap
            else:
                raise TokenUnavailable("no Zalo refresh token configured", self.pause)
            try:
                status, body = await self.http.request(
                    "POST",
                    self.url,
                    form={
                        "refresh_token": refresh,
                        "app_id": self.app_id,
                        "grant_type": "refresh_token",
                    },
                    headers={"secret_key": self.app_secret},
                )
            except ZaloTransportError as exc:  # network error, timeout, 5xx, not JSON
                raise _Transient(str(exc)) from None
            if status == 429:
                raise _Transient("HTTP 429")
            access, new_refresh = body.get("access_token"), body.get("refresh_token")
            if not isinstance(access, str) or not isinstance(new_refresh, str):
                code = zalo_error(body)
                if code in RATE_LIMITED:
                    raise _Transient(f"rate limited, error {code}")
                if code not in GRANT_GONE and not isinstance(access, str):
                    raise _Transient(f"error {code}")
                # The grant is gone (or an access token came without its rotated refresh
                # token, so the spent one cannot be replaced): a person must re-consent.
                row = row or ZaloToken(app_id=self.app_id)
                row.status = "failed"
                row.access_sealed = None
                row.updated_at = self._now()
                session.add(row)
                await session.commit()
                self._cached = None
                log.error("zalo token refresh refused (error %s): Zalo sends paused", code)
                await self.audit.record(
                    "system:zalo",
                    "zalo.token_refresh_failed",
                    {"error": code, "action": "re-consent the OA; Zalo sends are paused"},
                )
                raise TokenUnavailable("zalo token refresh refused", self.pause)
            try:
                lifetime = float(body.get("expires_in", 90000))
            except (TypeError, ValueError):
                lifetime = 90000.0
            expires = self.clock() + lifetime
            row = row or ZaloToken(app_id=self.app_id)
            row.access_sealed = self.keys.seal(access)
            row.refresh_sealed = self.keys.seal(new_refresh)
            row.access_expires_at = dt.datetime.fromtimestamp(expires, dt.UTC)
            row.status = "ok"
            row.updated_at = self._now()
            session.add(row)
            await session.commit()  # stored before use: a crash now keeps the grant
            self._cached = (access, expires)
            self._retry_at = 0.0
            log.info("zalo access token refreshed")
            return access


async def _real_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)
