"""Wiring: one object that owns the database, keys, coordination, service and channels."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.adapters.telegram import inbound as telegram_inbound
from bot.adapters.telegram.channel import TelegramChannel
from bot.adapters.telegram.inbound import TelegramInbound
from bot.adapters.web import simulator
from bot.adapters.web.channel import WebChannel
from bot.adapters.zalo.ratings import reconcile
from bot.adapters.zalo.suite import ZaloSuite, build_zalo
from bot.adapters.zalo.webhooks import ZaloInbound, poll_bot
from bot.api import AgencyApi
from bot.app import AppParts
from bot.channels import Channel
from bot.dashboard.auth import DashboardServices
from bot.dispatch import Dispatcher
from bot.flows.definition import SurveyCatalog, builtin_catalog
from bot.limits import Doors
from bot.service import SurveyService
from settings import Settings
from storage import releases
from storage.audit import AuditLog
from storage.coordination import Coordinator, LocalCoordinator, RedisCoordinator
from storage.db import Sessions, make_engine, make_sessions
from storage.disclosure import Rule
from storage.migrate import upgrade_async
from storage.pseudonym import KeyRing, load_keyring

log = logging.getLogger(__name__)
MAINTENANCE_INTERVAL_SECONDS = 60.0


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: Sessions
    keyring: KeyRing
    catalog: SurveyCatalog
    coordinator: Coordinator
    service: SurveyService
    dispatcher: Dispatcher
    web: WebChannel
    channels: dict[str, Channel]
    audit: AuditLog
    zalo: ZaloSuite | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def create(
        cls,
        settings: Settings,
        *,
        migrate: bool = True,
        extra_channels: Mapping[str, Channel] | None = None,
        keyring: KeyRing | None = None,
    ) -> Runtime:
        keyring = keyring or load_keyring(
            settings.keys, settings.keys_file, settings.var_dir, settings.is_production
        )
        url = settings.effective_database_url
        if migrate:
            await upgrade_async(url)
        engine = make_engine(url)
        sessions = make_sessions(engine)
        coordinator: Coordinator = (
            RedisCoordinator.from_url(settings.redis_url, settings.redis_prefix)
            if settings.redis_url
            else LocalCoordinator()
        )
        web = WebChannel()
        audit = AuditLog(sessions, settings.effective_audit_anchor_file)
        zalo = build_zalo(settings, make_sessions(engine), keyring, coordinator, audit)
        channels: dict[str, Channel] = {
            "web": web,
            **(zalo.channels() if zalo else {}),
            **(extra_channels or {}),
        }
        if settings.telegram_token and "telegram" not in channels:
            channels["telegram"] = TelegramChannel.from_settings(settings, keyring, coordinator)
        catalog = builtin_catalog()
        service = SurveyService(
            sessions,
            keyring,
            settings,
            catalog,
            coordinator,
            {name: ch.capabilities for name, ch in channels.items()},
        )
        dispatcher = Dispatcher(
            sessions,
            keyring,
            channels,
            max_attempts=settings.outbox_max_attempts,
            interval=settings.dispatcher_interval_seconds,
            on_undeliverable=service.mark_undeliverable,
            on_delivered=service.mark_delivered,
        )
        service.on_enqueue = dispatcher.kick
        return cls(
            settings,
            engine,
            sessions,
            keyring,
            catalog,
            coordinator,
            service,
            dispatcher,
            web,
            channels,
            audit,
            zalo,
        )

    # ------------------------------------------------------------ narrow services
    @property
    def doors(self) -> Doors:
        return Doors(self.settings, self.keyring, self.coordinator.limiter)

    def telegram_inbound(self) -> TelegramInbound | None:
        channel = self.channels.get("telegram")
        if not isinstance(channel, TelegramChannel):
            return None
        return TelegramInbound(channel, self.service, self.coordinator)

    def zalo_inbound(self) -> ZaloInbound:
        return ZaloInbound(self.settings, self.zalo, self.service, self.coordinator, self.sessions)

    def app_parts(self) -> AppParts:
        """Each HTTP part gets only what it uses; the app never sees this object."""
        return AppParts(
            settings=self.settings,
            api=AgencyApi(self.service, self.settings, self.doors),
            dashboard=DashboardServices(
                self.settings, self.sessions, self.audit, self.doors, self.coordinator
            ),
            simulator=simulator.SimulatorServices(
                self.settings, self.service, self.web, self.catalog
            ),
            telegram=self.telegram_inbound(),
            zalo=self.zalo_inbound(),
            start=self.start_background,
            close=self.close,
        )

    def start_background(self) -> None:
        """The dispatcher loop and periodic maintenance (expiry, reminders, purge)."""
        self._stop.clear()
        self._tasks.append(asyncio.create_task(self.dispatcher.run_forever(self._stop)))
        self._tasks.append(asyncio.create_task(self._maintain()))
        telegram = self.telegram_inbound()
        if telegram is not None:  # long polling, or registering the webhook
            self._tasks.extend(telegram_inbound.start_background(telegram, self._stop))
        if self.zalo is not None and self.zalo.bot is not None and self.settings.zalo_bot_polling:
            self._tasks.append(asyncio.create_task(poll_bot(self.zalo_inbound(), self._stop)))

    async def _maintain(self) -> None:
        """Every minute: close expired surveys, send due reminders, then forget what closed
        surveys left for delivery and de-duplication (``storage.retention``)."""
        while not self._stop.is_set():
            try:
                await self.service.close_expired()
                await self.service.send_reminders()
                purged = await self.service.purge_closed()
                if purged.total:
                    log.info("forgot %d outbox, %d ZNS tracking and %d webhook mark row(s)",
                             purged.outbox, purged.zns_tracking, purged.webhook_seen)  # fmt: skip
                await self.publish_releases()
                if self.zalo is not None and self.zalo.zns is not None:
                    await reconcile(self.zalo, self.service)
            except Exception:
                log.exception("maintenance round failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(MAINTENANCE_INTERVAL_SECONDS):
                    await self._stop.wait()

    async def publish_releases(self, now: dt.datetime | None = None) -> list[str]:
        """Release every closed period that is due: the only way figures reach a page."""
        published = await releases.publish_due(
            self.sessions,
            Rule(self.settings.k_min_group, self.settings.k_min_official),
            self.settings.release_period,
            self.settings.effective_release_delay_hours,
            now,
        )
        for release in published:
            log.info("released the figures of %s", release.label)
            await self.audit.record("system", "release", {"period": release.label})
        return [r.label for r in published]

    async def close(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for channel in self.channels.values():
            closer = getattr(channel, "close", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()
        await self.coordinator.close()
        if self.zalo is not None:
            await self.zalo.close()
        await self.engine.dispose()
