"""Wiring of the Zalo channels from settings: one HTTP pool, one token manager, three channels.

Why one object: the OA and ZNS share the app's rotating OAuth pair, so they must share one
``ZaloTokens``; and tests replace ``clock`` with the emulator's virtual clock (and ``sleep`` with
one that moves it) so that 25-hour token lifetimes, webhook timestamps and refresh backoff can be
exercised without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.adapters.zalo.bot import ZaloBotChannel
from bot.adapters.zalo.http import ZaloHttp
from bot.adapters.zalo.oa import ZaloOAChannel
from bot.adapters.zalo.tokens import RefreshPolicy, ZaloTokens
from bot.adapters.zalo.zns import ZnsChannel
from bot.channels import Channel
from settings import Settings
from storage.audit import AuditLog
from storage.coordination import Coordinator
from storage.db import Sessions
from storage.pseudonym import KeyRing


@dataclass
class ZaloSuite:
    settings: Settings
    http: ZaloHttp
    tokens: ZaloTokens | None = None
    oa: ZaloOAChannel | None = None
    zns: ZnsChannel | None = None
    bot: ZaloBotChannel | None = None
    #: Epoch seconds; replaceable (tests use the emulator's virtual clock).
    clock: Callable[[], float] = field(default=time.time)
    #: Waits that many seconds; replaceable (tests move the emulator's virtual clock instead).
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)

    def now(self) -> float:
        return self.clock()

    async def wait(self, seconds: float) -> None:
        await self.sleep(seconds)

    def channels(self) -> dict[str, Channel]:
        found: dict[str, Channel] = {}
        for channel in (self.oa, self.zns, self.bot):
            if channel is not None:
                found[channel.name] = channel
        return found

    async def close(self) -> None:
        await self.http.close()


def build_zalo(
    settings: Settings,
    sessions: Sessions,
    keyring: KeyRing,
    coordinator: Coordinator,
    audit: AuditLog,
) -> ZaloSuite | None:
    """The configured Zalo channels, or None when neither the OA app nor a bot is configured."""
    if not settings.zalo_oa_configured and not settings.zalo_bot_token:
        return None
    suite = ZaloSuite(settings, ZaloHttp(settings.zalo_http_timeout_seconds))
    if settings.zalo_oa_configured:
        assert settings.zalo_app_id and settings.zalo_app_secret
        suite.tokens = ZaloTokens(
            suite.http,
            sessions,
            keyring,
            coordinator,
            app_id=settings.zalo_app_id,
            app_secret=settings.zalo_app_secret,
            oauth_base_url=settings.zalo_oauth_base_url,
            bootstrap_refresh_token=settings.zalo_refresh_token,
            margin_seconds=settings.zalo_token_refresh_margin_seconds,
            pause_seconds=settings.zalo_token_pause_seconds,
            clock=suite.now,
            audit=audit,
            sleep=suite.wait,
            policy=RefreshPolicy(
                attempts=settings.zalo_token_refresh_attempts,
                backoff_seconds=settings.zalo_token_refresh_backoff_seconds,
                budget_seconds=settings.zalo_token_refresh_budget_seconds,
                retry_later_seconds=settings.zalo_token_refresh_retry_later_seconds,
            ),
        )
        suite.oa = ZaloOAChannel(
            suite.http, suite.tokens, settings.zalo_openapi_base_url, settings.zalo_oa_max_buttons
        )
        if settings.zalo_zns_rating_template_id:
            suite.zns = ZnsChannel(
                suite.http,
                suite.tokens,
                settings.zalo_business_base_url,
                settings.zalo_zns_rating_template_id,
                settings.zalo_zns_template_data,
                settings.zalo_zns_mode,
            )
    if settings.zalo_bot_token:
        suite.bot = ZaloBotChannel(
            suite.http, settings.zalo_bot_token, settings.zalo_bot_api_base_url
        )
    return suite
