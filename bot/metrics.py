"""The Prometheus metrics every process records, and their exposition.

One module holds every metric object, so the sites that count (the dispatcher, the inbox worker,
the webhook timing middleware in ``bot/telemetry.py``) add one call each. Labels are channel
names, lanes and queue names only: nothing that identifies a citizen, a chat or a message is ever
a label or a value.

Multi-process mode: when ``PROMETHEUS_MULTIPROC_DIR`` is set (before the process starts; one
empty directory per host, emptied at each deploy), prometheus-client writes each process's
values to its own files there and ``exposition`` reads them all with ``MultiProcessCollector``,
so whichever process answers ``/metrics`` reports every process's counters summed. Without it,
the process's default registry is reported. No metric here is a live gauge (what the database
holds is read at scrape time by ``bot/telemetry.py``), so a dead process's files need no clean-up
beyond counters' usual monotonic sums.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterable

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

disable_created_metrics()  # no "_created" twin of every series: half the scrape, nothing lost
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Seconds: a send is an HTTP call to a platform; a webhook stores, then processes inline.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

MESSAGES_SENT = Counter(
    "surveybot_messages_sent", "Outbox messages the channel accepted", ["channel"]
)
SEND_FAILURES = Counter(
    "surveybot_send_failures", "Sends that failed (retried later, or given up)", ["channel"]
)
RATE_LIMITED = Counter(
    "surveybot_send_rate_limited",
    "Sends refused as rate limited: HTTP 429 or the channel's flood limit (retry_after)",
    ["channel"],
)
DEAD_LETTERS = Counter(
    "surveybot_dead_letters",
    "Messages given up: outbox rows undeliverable, inbox events past their attempts",
    ["queue", "channel"],
)
SEND_SECONDS = Histogram(
    "surveybot_send_seconds", "Time to hand one message to its channel", ["channel"],
    buckets=_BUCKETS,
)  # fmt: skip
WEBHOOK_SECONDS = Histogram(
    "surveybot_webhook_seconds", "Time to answer a channel's webhook", ["channel"],
    buckets=_BUCKETS,
)  # fmt: skip

ANSWER_SECONDS = Histogram(
    "surveybot_answer_latency_seconds",
    "From a citizen's answer accepted (its reply enqueued) to the next question (or the "
    "thank-you) handed to the channel",
    ["channel"],
    buckets=_BUCKETS,
)  # fmt: skip


def now() -> float:
    """A monotonic start time for ``message_sent``."""
    return time.perf_counter()


def message_sent(channel: str, started: float) -> None:
    """One message the channel accepted, ``started`` at ``now()``."""
    MESSAGES_SENT.labels(channel).inc()
    SEND_SECONDS.labels(channel).observe(time.perf_counter() - started)


def answer_handed_over(channel: str, accepted_at: dt.datetime) -> None:
    """A reply to an answer accepted at ``accepted_at`` (the wall clock of the process that
    accepted it, stored with its outbox row) was just handed to ``channel``. Measured on wall
    clocks because acceptance and hand-over may happen in two processes; a clock behind the
    acceptor's counts as 0, never as a negative wait."""
    waited = (dt.datetime.now(dt.UTC) - accepted_at).total_seconds()
    ANSWER_SECONDS.labels(channel).observe(max(waited, 0.0))


def send_failed(channel: str, retry_after: float | None, dead: bool) -> None:
    """A failed send: a 429 (or the channel's flood limit) when the channel asked to wait
    ``retry_after`` seconds (the dispatcher passes None for a paused channel), given up when
    ``dead``."""
    SEND_FAILURES.labels(channel).inc()
    if retry_after is not None:
        RATE_LIMITED.labels(channel).inc()
    if dead:
        DEAD_LETTERS.labels("outbox", channel).inc()


def dead_letter(queue: str, channel: str) -> None:
    """An item of ``queue`` ("outbox", "inbox") given up for good."""
    DEAD_LETTERS.labels(queue, channel).inc()


def webhook_answered(channel: str, seconds: float) -> None:
    WEBHOOK_SECONDS.labels(channel).observe(seconds)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


class _Families(Collector):
    """Ready-made metric families (what was read at scrape time)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


class _Delegate(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


def process_registry(path: str | None = None) -> CollectorRegistry:
    """The counters and histograms to report: every process's under ``path`` (or
    ``PROMETHEUS_MULTIPROC_DIR``), summed; without either, this process's default registry."""
    registry = CollectorRegistry(auto_describe=False)
    directory = path or multiprocess_dir()
    if directory:
        MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_Delegate(REGISTRY))
    return registry


def exposition(families: Iterable[Metric] = (), *, path: str | None = None) -> bytes:
    """The text exposition format of the processes' metrics and ``families`` read at scrape."""
    registry = process_registry(path)
    registry.register(_Families(families))
    return generate_latest(registry)
