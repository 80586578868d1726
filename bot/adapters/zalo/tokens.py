"""The OA access-token lifecycle: refresh ahead of expiry, one refresh at a time, sealed at rest.

Why so careful: Zalo refresh tokens are single-use and rotate. Two processes refreshing with the
same refresh token lose the grant (the second is refused and nobody holds a valid token), and a
process that uses a new pair before storing it loses the grant if it crashes. So a refresh holds
the coordinator lock (one across all processes), re-reads the stored pair inside it (another
process may have just refreshed), and commits the new pair sealed with the key ring before any
call uses it. A refused refresh needs a human (re-consent): it is recorded in the audit log as an
admin alert and Zalo sends pause (``TokenUnavailable``) rather than fail, so nothing is lost.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from bot.adapters.zalo.http import ZaloHttp, ZaloTransportError, zalo_error
from storage.audit import AuditLog
from storage.coordination import Coordinator
from storage.db import Sessions
from storage.models import ZaloToken
from storage.pseudonym import KeyRing

log = logging.getLogger(__name__)
LOCK_NAME = "zalo-oauth-refresh"
TRANSPORT_RETRY_SECONDS = 30.0


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
        self._cached: tuple[str, float] | None = None

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

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    async def _ensure(self, stale: str | None) -> str:
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
            if row is not None and row.refresh_sealed:
                refresh = self.keys.open(row.refresh_sealed)
            elif self.bootstrap:
                refresh = self.bootstrap
            else:
                raise TokenUnavailable("no Zalo refresh token configured", self.pause)
            try:
                body = await self.http.call(
                    "POST",
                    self.url,
                    form={
                        "refresh_token": refresh,
                        "app_id": self.app_id,
                        "grant_type": "refresh_token",
                    },
                    headers={"secret_key": self.app_secret},
                )
            except ZaloTransportError as exc:
                log.warning("zalo token refresh did not complete (%s); will retry", exc)
                raise TokenUnavailable(
                    "zalo token refresh unreachable", TRANSPORT_RETRY_SECONDS
                ) from None
            access, new_refresh = body.get("access_token"), body.get("refresh_token")
            if not isinstance(access, str) or not isinstance(new_refresh, str):
                code = zalo_error(body)
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
            log.info("zalo access token refreshed")
            return access
