"""Wiring: one object that owns the database, keys, coordination, service and channels.

The composition root: the only module that sees every part. It builds each registered channel
package (``bot.adapters.REGISTRY``) from one ``ChannelServices``, hands the HTTP app its parts
(``app_parts``), and runs the background loops and the maintenance round.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.adapters import REGISTRY
from bot.adapters.base import ChannelPackage, ChannelPlugin, ChannelServices, Readiness
from bot.adapters.gate import Inbox
from bot.adapters.web.channel import WebChannel
from bot.adapters.zalo import ZaloPlugin
from bot.adapters.zalo.suite import ZaloSuite
from bot.api import AgencyApi
from bot.app import AppParts
from bot.channels import Capabilities, Channel
from bot.dashboard.auth import DashboardServices
from bot.dispatch import Dispatcher
from bot.flows.definition import SurveyCatalog
from bot.inbound import Funnel
from bot.limits import Doors
from bot.service import SurveyService
from bot.telemetry import Scrape
from settings import Settings
from storage import inbox, leases, releases, report_pdf, report_store, survey_drafts
from storage.audit import AuditLog
from storage.coordination import Coordinator, LocalCoordinator, RedisCoordinator
from storage.db import Sessions, make_engine, make_sessions
from storage.disclosure import Rule
from storage.inbox_worker import InboxWorker
from storage.migrate import at_head, upgrade_async
from storage.pseudonym import KeyRing, load_keyring
from storage.stats import Thresholds
from storage.surveys import load_catalog

log = logging.getLogger(__name__)
#: Reports rendered per maintenance round (about a second each): the rest wait a round.
REPORTS_PER_ROUND = 10
MAINTENANCE_INTERVAL_SECONDS = 60.0
#: How long a stop waits for inbound events being processed to finish (their leases would
#: otherwise have to run out before another process takes them over).
CLOSE_DRAIN_SECONDS = 10.0
#: A singleton loop's lease: renewed every third of it, taken over this long after its holder
#: stopped renewing (died).
LEASE_SECONDS = 15.0


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
    channels: dict[str, Channel]
    audit: AuditLog
    #: Processes the durable inbox (every channel's stored inbound events).
    inbox: InboxWorker
    #: The built channel packages, by package name.
    plugins: dict[str, ChannelPlugin] = field(default_factory=dict)
    #: This process's name in the leases (host, pid and a random part).
    owner: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    )
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
        packages: Sequence[ChannelPackage] = REGISTRY,
    ) -> Runtime:
        keyring = keyring or load_keyring(
            settings.keys, settings.keys_file, settings.var_dir, settings.is_production
        )
        url = settings.effective_database_url
        if migrate:
            await upgrade_async(url)
        engine = make_engine(url)
        sessions = make_sessions(engine)
        try:  # every survey version in use, or every problem of the files, before anything runs
            catalog = await load_catalog(sessions, settings.surveys_dir)
        except BaseException:
            await engine.dispose()
            raise
        coordinator: Coordinator = (
            RedisCoordinator.from_url(settings.redis_url, settings.redis_prefix)
            if settings.redis_url
            else LocalCoordinator()
        )
        audit = AuditLog(sessions, settings.effective_audit_anchor_file)
        # Filled below, once the packages said which channels they configured.
        capabilities: dict[str, Capabilities] = {}
        phones = [channel for package in packages for channel in package.phone_channels]
        service = SurveyService(
            sessions, keyring, settings, catalog, coordinator, capabilities, phone_channels=phones
        )
        worker = InboxWorker(
            sessions,
            keyring,
            lease=dt.timedelta(seconds=settings.inbox_lease_seconds),
            max_attempts=settings.inbox_max_attempts,
        )
        door = Inbox(sessions, keyring, worker, settings.inbox_inline_seconds)
        services = ChannelServices(
            settings, keyring, coordinator, sessions, audit, catalog, Funnel(service), service, door
        )
        plugins = {package.name: package.build(services) for package in packages}
        channels: dict[str, Channel] = {}
        for plugin in plugins.values():
            channels.update(plugin.channels)
        channels.update(extra_channels or {})
        capabilities.update({name: ch.capabilities for name, ch in channels.items()})
        dispatcher = Dispatcher(
            sessions,
            keyring,
            channels,
            max_attempts=settings.outbox_max_attempts,
            interval=settings.dispatcher_interval_seconds,
            on_undeliverable=service.mark_undeliverable,
            on_delivered=service.mark_delivered,
            lease=dt.timedelta(seconds=settings.outbox_lease_seconds),
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
            channels,
            audit,
            worker,
            plugins,
        )

    # ------------------------------------------------------------ shortcuts (tests, the CLI)
    @property
    def web(self) -> WebChannel:
        """The simulator's mailboxes."""
        channel = self.channels["web"]
        assert isinstance(channel, WebChannel)
        return channel

    @property
    def zalo(self) -> ZaloSuite | None:
        """The configured Zalo channels, or None."""
        plugin = self.plugins.get("zalo")
        return plugin.suite if isinstance(plugin, ZaloPlugin) else None

    # ------------------------------------------------------------ narrow services
    @property
    def doors(self) -> Doors:
        return Doors(self.settings, self.keyring, self.coordinator.limiter)

    def app_parts(self) -> AppParts:
        """Each HTTP part gets only what it uses; the app never sees this object."""
        routes: list[web.RouteDef] = []
        for plugin in self.plugins.values():
            routes.extend(plugin.routes())
        return AppParts(
            settings=self.settings,
            api=AgencyApi(self.service, self.settings, self.doors),
            dashboard=DashboardServices(
                self.settings,
                self.sessions,
                self.audit,
                self.doors,
                self.coordinator,
                self.catalog,
            ),
            channel_routes=routes,
            start=self.start_background,
            close=self.close,
            readiness=self.readiness,
            metrics=Scrape(self.sessions, tuple(self.channels)),
        )

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """What ``/readyz`` reports: each dependency's state and every channel's."""
        checks: dict[str, Any] = {}
        try:
            checks["migrations"] = (
                "at head"
                if await at_head(self.engine, self.settings.effective_database_url)
                else "behind"
            )
            checks["database"] = "ok"
            async with self.sessions() as session:
                checks["inbox"] = {
                    "pending": await inbox.pending_count(session),
                    "dead_letters": len(await inbox.dead_letters(session)),
                }
        except Exception as exc:
            checks["database"] = f"unreachable ({exc.__class__.__name__})"
        try:
            await self.coordinator.ping()
            checks["redis"] = "ok" if self.settings.redis_url else "not used"
        except Exception as exc:
            checks["redis"] = f"unreachable ({exc.__class__.__name__})"
        channels: dict[str, Any] = {name: {"ok": True} for name in self.channels}
        for plugin in self.plugins.values():
            try:
                reports = await plugin.readiness()
            except Exception as exc:
                reports = {
                    name: Readiness(False, {"error": exc.__class__.__name__})
                    for name in plugin.channels
                }
            channels.update({name: report.as_json() for name, report in reports.items()})
        checks["channels"] = channels
        ok = (
            checks["database"] == "ok"
            and checks.get("migrations") == "at head"
            and checks["redis"] in ("ok", "not used")
            and all(report["ok"] for report in channels.values())
        )
        return ok, checks

    def start_background(self) -> None:
        """The dispatcher loop and the inbox worker in every process (their claims share the
        work); periodic maintenance (expiry, reminders, purge, releases, each channel's round)
        and each channel's own loops (long polling, webhook registration) in one process at a
        time, under a named lease that another process takes over when the holder dies."""
        self._stop.clear()
        self._tasks.append(asyncio.create_task(self.dispatcher.run_forever(self._stop)))
        self._tasks.append(asyncio.create_task(self.inbox.run(self._stop)))
        self._tasks.append(asyncio.create_task(self._refresh_surveys()))
        self._tasks.append(asyncio.create_task(self._singleton("maintenance", self._maintain)))
        for name, plugin in self.plugins.items():
            for index, loop in enumerate(plugin.loops()):
                work = functools.partial(loop, self._stop)
                self._tasks.append(asyncio.create_task(self._singleton(f"{name}:{index}", work)))

    async def _singleton(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        await leases.hold(
            self.coordinator.leases, f"loop:{name}", self.owner, work, self._stop,
            ttl=LEASE_SECONDS,
        )  # fmt: skip

    async def _refresh_surveys(self) -> None:
        """In every process: learn the survey versions published in the dashboard elsewhere."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.survey_refresh_seconds):
                    await self._stop.wait()
            if self._stop.is_set():
                return
            try:
                added = await survey_drafts.refresh(self.sessions, self.catalog)
                if added:
                    log.info("learnt %d survey version(s) published by another process", added)
            except Exception:
                log.exception("survey refresh failed")

    async def _maintain(self) -> None:
        """Every minute: close expired surveys, send due reminders, then forget what closed
        surveys left for delivery and de-duplication (``storage.retention``)."""
        while not self._stop.is_set():
            try:
                await self.service.close_expired()
                await self.service.send_reminders()
                purged = await self.service.purge_closed()
                if purged.total:
                    log.info("forgot %d outbox, %d ZNS tracking and %d inbox row(s)",
                             purged.outbox, purged.zns_tracking, purged.inbox)  # fmt: skip
                await self.publish_releases()
                try:  # a report that cannot be made (its font missing) holds up nothing else
                    await self.generate_reports()
                except Exception:
                    log.exception("periodic reports not generated")
                for plugin in self.plugins.values():
                    await plugin.maintain()
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

    async def generate_reports(
        self, limit: int | None = REPORTS_PER_ROUND
    ) -> list[report_store.StoredReport]:
        """The quarterly and yearly reports of every period closed by the releases so far, each
        stored and audited once (the maintenance round; a racing process keeps the same one).
        At most ``limit`` a call: the round also closes surveys and sends reminders, so a
        province's worth of reports is spread over the next rounds (None: all of them)."""
        made = []
        due = await report_store.due(self.sessions)
        for scope, period in due if limit is None else due[:limit]:
            report, created = await report_store.generate(
                self.sessions,
                scope,
                period,
                Thresholds.from_settings(self.settings),
                "schedule",
                self.settings.report_font or report_pdf.DEFAULT_FONT,
            )
            if created:
                made.append(report)
                await self.audit.record("system", "report.generate", report.audit_detail())
        return made

    async def close(self) -> None:
        """A graceful stop: inbound events being processed and sends under way finish (up to
        ``CLOSE_DRAIN_SECONDS``), claimed messages not yet sent are given back, singleton
        leases are released so another process takes over at once; then what is left is
        cancelled."""
        self._stop.set()
        await self.inbox.drain(CLOSE_DRAIN_SECONDS)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=CLOSE_DRAIN_SECONDS)
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
        for plugin in self.plugins.values():
            with contextlib.suppress(Exception):
                await plugin.close()
        await self.coordinator.close()
        await self.engine.dispose()
