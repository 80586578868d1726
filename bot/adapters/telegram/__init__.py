"""The Telegram channel: python-telegram-bot as a typed Bot API client (``channel``), its
webhook and long polling (``inbound``), per-chat and per-bot state and limits (``state``), and
the demo's local stand-in for api.telegram.org (``demo``)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from aiohttp import web

from bot.adapters.base import ChannelPackage, ChannelServices, Loop, Readiness
from bot.adapters.telegram import inbound
from bot.adapters.telegram.channel import TelegramChannel
from bot.channels import Channel

SETTINGS = (
    "telegram_token", "telegram_bot_username", "telegram_api_base_url", "telegram_webhook_secret",
    "telegram_register_webhook", "telegram_polling", "telegram_poll_timeout_seconds",
    "telegram_per_chat_limit", "telegram_per_chat_window_seconds", "telegram_per_bot_limit",
    "telegram_per_bot_window_seconds", "public_base_url", "survey_ttl_hours",
)  # fmt: skip


class TelegramPlugin:
    """The bot when ``SURVEYBOT_TELEGRAM_TOKEN`` is set: its delivery port, its webhook (404
    without a token) and, in the background, long polling or the webhook's registration."""

    def __init__(self, services: ChannelServices) -> None:
        settings = services.settings
        self.channel: TelegramChannel | None = None
        self.inbound: inbound.TelegramInbound | None = None
        self.poller: inbound.TelegramPoller | None = None
        if settings.telegram_token:
            self.channel = TelegramChannel.from_settings(
                settings, services.keyring, services.coordinator
            )
            self.inbound = inbound.TelegramInbound(self.channel, services.funnel, services.inbox)

    @property
    def channels(self) -> Mapping[str, Channel]:
        return {self.channel.name: self.channel} if self.channel is not None else {}

    def routes(self) -> Sequence[web.RouteDef]:
        return inbound.routes(self.inbound)

    def loops(self) -> Sequence[Loop]:
        """Long polling when configured, else (with a secret) register our webhook once, else
        just learn the bot's username (for deep links) before the first send."""
        if self.channel is None or self.inbound is None:
            return ()
        channel, settings = self.channel, self.channel.settings
        if settings.telegram_polling:
            self.poller = inbound.TelegramPoller(
                channel, self.inbound, settings.telegram_poll_timeout_seconds
            )
            return (self.poller.run,)
        if settings.telegram_webhook_secret and settings.telegram_register_webhook:
            url = settings.telegram_webhook_url

            async def register(stop: asyncio.Event) -> None:
                await channel.register_webhook(url)

            return (register,)

        async def ready(stop: asyncio.Event) -> None:
            await channel.ready_quietly()

        return (ready,)

    async def maintain(self) -> None:
        return None

    async def readiness(self) -> Mapping[str, Readiness]:
        """Polling: whether getUpdates answers. Webhook: whether this process registered it
        (or that registration is left to the operator)."""
        channel = self.channel
        if channel is None:
            return {}
        settings = channel.settings
        if settings.telegram_polling:
            polling = self.poller is not None and self.poller.polling
            return {channel.name: Readiness(polling, {"mode": "polling", "polling": polling})}
        if not (settings.telegram_webhook_secret and settings.telegram_register_webhook):
            return {channel.name: Readiness(True, {"mode": "webhook", "webhook": "external"})}
        registered = channel.webhook_state == "registered"
        return {channel.name: Readiness(registered, {"mode": "webhook",
                                                     "webhook": channel.webhook_state})}  # fmt: skip

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()


PACKAGE = ChannelPackage("telegram", SETTINGS, TelegramPlugin)
