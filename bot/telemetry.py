"""``GET /metrics``, the webhook timing middleware, and what is read from the database at scrape.

``/metrics`` exists only with ``SURVEYBOT_METRICS_ENABLED=true``; with ``SURVEYBOT_METRICS_TOKEN``
set it also wants ``Authorization: Bearer <token>`` (401 otherwise, compared in constant time),
and production refuses to start with metrics on and no token (``settings.py``): the counters
move when citizens answer, so they are for operators, never for an agency. It answers the text
exposition format: the counters and histograms of ``bot/metrics.py`` (every process's, in
multi-process mode), then gauges read now, once per scrape, from the database:

* ``surveybot_outbox_queue_depth{lane, channel}``: unsent outbox rows (one GROUP BY over
  priority and channel; every configured channel and both lanes are reported, 0 when empty);
* ``surveybot_inbox_pending{channel}`` and ``surveybot_inbox_dead_letters{channel}`` (one
  GROUP BY over channel and status);
* ``surveybot_release_age_seconds``: since the latest release was published (absent before the
  first).
"""

from __future__ import annotations

import datetime as dt
import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import func, select

from bot import metrics
from bot.http_errors import Handler, error_response
from storage import inbox, outbox
from storage.db import Sessions
from storage.models import InboxEvent, OutboxMessage, Release, utcnow

LANES = {outbox.PRIORITY_REPLY: "reply", outbox.PRIORITY_INVITATION: "invitation"}
WEBHOOK_SUFFIX = "_webhook"


@dataclass(frozen=True)
class Scrape:
    """What ``/metrics`` reads from the database: the runtime gives it its sessions and the
    names of the configured channels (labels are channel names and lanes, nothing else)."""

    sessions: Sessions
    channels: Sequence[str]
    clock: Callable[[], dt.datetime] = field(default=utcnow)

    async def families(self) -> list[Metric]:
        async with self.sessions() as session:
            queued = (
                await session.execute(
                    select(OutboxMessage.priority, OutboxMessage.channel, func.count())
                    .where(OutboxMessage.status.in_(outbox.UNSENT))
                    .group_by(OutboxMessage.priority, OutboxMessage.channel)
                )
            ).all()
            events = (
                await session.execute(
                    select(InboxEvent.channel, InboxEvent.status, func.count())
                    .where(InboxEvent.status.in_((inbox.PENDING, inbox.DEAD)))
                    .group_by(InboxEvent.channel, InboxEvent.status)
                )
            ).all()
            published = await session.scalar(select(func.max(Release.published_at)))
        depth = {(lane, name): 0 for lane in LANES.values() for name in self.channels}
        for priority, channel, count in queued:
            lane = LANES.get(priority, str(priority))
            depth[(lane, channel)] = depth.get((lane, channel), 0) + int(count)
        queue = GaugeMetricFamily(
            "surveybot_outbox_queue_depth",
            "Outbox messages not yet sent, per lane and channel",
            labels=["lane", "channel"],
        )
        for (lane, channel), count in sorted(depth.items()):
            queue.add_metric([lane, channel], count)
        counts = {
            (status, name): 0 for status in (inbox.PENDING, inbox.DEAD) for name in self.channels
        }
        for channel, status, count in events:
            counts[(status, channel)] = int(count)
        pending = GaugeMetricFamily(
            "surveybot_inbox_pending",
            "Inbound events stored, not yet processed",
            labels=["channel"],
        )
        dead = GaugeMetricFamily(
            "surveybot_inbox_dead_letters",
            "Inbound events given up, waiting for an admin's requeue",
            labels=["channel"],
        )
        for (status, channel), count in sorted(counts.items()):
            (pending if status == inbox.PENDING else dead).add_metric([channel], count)
        found: list[Metric] = [queue, pending, dead]
        if published is not None:
            age = GaugeMetricFamily(
                "surveybot_release_age_seconds", "Seconds since the latest release was published"
            )
            age.add_metric([], max(0.0, (self.clock() - published).total_seconds()))
            found.append(age)
        return found


SCRAPE: web.AppKey[Scrape] = web.AppKey("metrics_scrape", Scrape)
TOKEN: web.AppKey[str] = web.AppKey("metrics_token", str)


async def metrics_endpoint(request: web.Request) -> web.Response:
    expected = request.app[TOKEN]
    if expected:
        given = request.headers.get("Authorization", "")
        scheme, _, credential = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credential.strip().encode("utf-8", "surrogateescape"), expected.encode()
        ):
            response = error_response(401, "unauthorized", "a metrics token is required")
            response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    body = metrics.exposition(await request.app[SCRAPE].families())
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})


def setup(app: web.Application, scrape: Scrape, token: str | None) -> None:
    """Add ``GET /metrics`` (the caller decides whether metrics are enabled)."""
    app[SCRAPE] = scrape
    app[TOKEN] = token or ""
    app.router.add_get("/metrics", metrics_endpoint, name="metrics")


@web.middleware
async def webhook_timing(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Times every request whose route is named ``<channel>_webhook`` (``telegram_webhook``,
    ``zalo_oa_webhook``, ``zalo_bot_webhook``), answered or failed."""
    name = request.match_info.route.name
    if not name or not name.endswith(WEBHOOK_SUFFIX):
        return await handler(request)
    started = time.perf_counter()
    try:
        return await handler(request)
    finally:
        metrics.webhook_answered(name.removesuffix(WEBHOOK_SUFFIX), time.perf_counter() - started)
