"""The Zalo channels: the Official Account (consultation messages with buttons), ZNS (the rating
template sent by phone number) and the Zalo Bot (text only), as one package.

Why one package for three channels: the OA and ZNS share one rotating OAuth pair (a refresh
token is good once, so two token managers would lock each other out), the three share one HTTP
pool and one virtual clock in tests, and the OA's webhook also carries ZNS's ratings and
delivery receipts. Each is still its own delivery port (``zalo_oa``, ``zns``, ``zalo_bot``), with
its own capabilities, so the channel order and fallback treat them apart.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

from aiohttp import web
from sqlalchemy import select

from bot.adapters.base import ChannelPackage, ChannelServices, Loop, Readiness
from bot.adapters.zalo import webhooks
from bot.adapters.zalo.ratings import reconcile
from bot.adapters.zalo.suite import ZaloSuite, build_zalo
from bot.adapters.zalo.zns import ZnsChannel
from bot.channels import Channel
from storage.models import ZaloToken

SETTINGS = (
    "zalo_app_id", "zalo_app_secret", "zalo_oa_id", "zalo_oa_secret", "zalo_refresh_token",
    "zalo_oauth_base_url", "zalo_openapi_base_url", "zalo_business_base_url",
    "zalo_http_timeout_seconds", "zalo_token_refresh_margin_seconds", "zalo_token_pause_seconds",
    "zalo_token_refresh_attempts", "zalo_token_refresh_backoff_seconds",
    "zalo_token_refresh_budget_seconds", "zalo_token_refresh_retry_later_seconds",
    "zalo_oa_max_buttons", "zalo_zns_rating_template_id", "zalo_zns_template_data",
    "zalo_zns_mode", "zalo_zns_reconcile_hours", "zalo_bot_token", "zalo_bot_api_base_url",
    "zalo_bot_webhook_secret", "zalo_bot_polling", "zalo_webhook_max_age_seconds",
    "zalo_webhook_max_skew_seconds",
)  # fmt: skip


class ZaloPlugin:
    """The configured Zalo channels (``suite`` is None when neither the OA nor a bot is set up),
    their two webhooks, the Bot's long polling and the ZNS rating reconciliation."""

    def __init__(self, services: ChannelServices) -> None:
        self.settings = services.settings
        self.sessions = services.sessions
        self.suite: ZaloSuite | None = build_zalo(
            services.settings,
            services.sessions,
            services.keyring,
            services.coordinator,
            services.audit,
        )
        self.inbound = webhooks.ZaloInbound(
            services.settings,
            self.suite,
            services.funnel,
            services.tracked,
            services.inbox,
        )
        self.inbound.register()

    @property
    def channels(self) -> Mapping[str, Channel]:
        return self.suite.channels() if self.suite is not None else {}

    def routes(self) -> Sequence[web.RouteDef]:
        return webhooks.routes(self.inbound)

    def loops(self) -> Sequence[Loop]:
        if self.suite is None or self.suite.bot is None or not self.settings.zalo_bot_polling:
            return ()
        poll: Loop = functools.partial(webhooks.poll_bot, self.inbound)
        return (poll,)

    async def maintain(self) -> None:
        """Store the ZNS ratings whose webhook was lost (``rating/get`` over the recent window)."""
        if self.suite is not None and self.suite.zns is not None:
            await reconcile(self.suite, self.inbound.tracked)

    async def readiness(self) -> Mapping[str, Readiness]:
        """The OA and ZNS share one OAuth grant: "ok", "failed" (a person must consent again)
        or "missing" (never stored); the access token's remaining life. The Bot: its mode."""
        suite = self.suite
        if suite is None:
            return {}
        report: dict[str, Readiness] = {}
        if suite.oa is not None or suite.zns is not None:
            async with self.sessions() as session:
                row = await session.scalar(
                    select(ZaloToken).where(ZaloToken.app_id == (self.settings.zalo_app_id or ""))
                )
            grant = "missing" if row is None or not row.refresh_sealed else row.status
            expires = row.access_expires_at if row is not None else None
            left = int(expires.timestamp() - suite.now()) if expires is not None else None
            details = {"grant": grant, "access_token_seconds_left": left}
            for channel in (suite.oa, suite.zns):
                if channel is not None:
                    report[channel.name] = Readiness(grant == "ok", details)
        if suite.bot is not None:
            mode = "polling" if self.settings.zalo_bot_polling else "webhook"
            report[suite.bot.name] = Readiness(True, {"mode": mode})
        return report

    async def close(self) -> None:
        if self.suite is not None:
            await self.suite.close()


PACKAGE = ChannelPackage("zalo", SETTINGS, ZaloPlugin, phone_channels=(ZnsChannel.name,))
