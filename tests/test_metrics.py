"""Prometheus metrics: ``/metrics`` answers the exposition format behind its setting and token,
a survey run through the web simulator moves the counters and leaves the queues at 0, 429s and
dead letters are counted per channel, and two processes' counters are summed in multi-process
mode. Labels are channel names, lanes and queues only."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from bot import metrics
from bot.app import create_app
from bot.channels import DeliveryError
from bot.runtime import Runtime
from settings import SettingsError, load_settings
from storage import outbox
from storage.models import Agency, OutboxMessage, Release
from storage.pseudonym import KeyRing
from tests.conftest import REDIS_URL, _truncate, add_test_agency, make_settings, today
from tests.helpers import answer_with_first_buttons, simulator_messages
from tests.test_outbox import force_ready, make_runtime, start_survey

METRICS_TOKEN = "scraper-token-for-tests"
AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}
#: The only label names any metric of ours may carry.
ALLOWED_LABELS = {"channel", "lane", "queue", "le"}


@pytest.fixture
async def metered(
    tmp_path: Path, database_url: str, keyring: KeyRing, redis_prefix: str
) -> AsyncIterator[tuple[Runtime, TestClient[Any, Any]]]:
    """The app with ``SURVEYBOT_METRICS_ENABLED`` and a token, and a client against it."""
    settings = make_settings(
        tmp_path, database_url, redis_url=REDIS_URL, redis_prefix=redis_prefix,
        metrics_enabled=True, metrics_token=METRICS_TOKEN,
    )  # fmt: skip
    runtime = await Runtime.create(settings, keyring=keyring)
    await _truncate(runtime)
    try:
        async with TestClient(TestServer(create_app(runtime, background=False))) as client:
            yield runtime, client
    finally:
        await runtime.close()


async def scrape(
    client: TestClient[Any, Any],
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await client.get("/metrics", headers=AUTH)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            if sample.name.startswith("surveybot_"):
                assert set(sample.labels) <= ALLOWED_LABELS, sample
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_a_web_survey_counts_its_sends_and_leaves_every_queue_empty(
    metered: tuple[Runtime, TestClient[Any, Any]],
) -> None:
    runtime, client = metered
    agency = await add_test_agency(runtime)
    api_key = await runtime.service.create_api_key(agency.code, "tests")
    before = await scrape(client)
    assert value(before, "surveybot_outbox_queue_depth", lane="reply", channel="web") == 0

    headers = {"Authorization": f"Bearer {api_key}"}
    registration = await client.post(
        "/api/v1/dossiers", headers=headers, json={"dossier_code": "HS-M1"}
    )
    token = (await registration.json())["rating_token"]
    session = (await (await client.post("/simulator/api/session", json={"token": token})).json())[
        "session"
    ]
    await client.post(
        "/api/v1/results", headers=headers,
        json={"dossier_code": "HS-M1", "returned_at": today().isoformat()},
    )  # fmt: skip
    queued = await scrape(client)  # the invitation waits in its lane until the dispatcher runs
    assert value(queued, "surveybot_outbox_queue_depth", lane="invitation", channel="web") >= 1
    seen = await answer_with_first_buttons(client, runtime, session)
    assert seen[-1]["text"].startswith("Cảm ơn")

    after = await scrape(client)
    sent = "surveybot_messages_sent_total"
    assert value(after, sent, channel="web") - value(before, sent, channel="web") == len(seen)
    for lane in ("reply", "invitation"):
        for channel in runtime.channels:
            assert value(after, "surveybot_outbox_queue_depth", lane=lane, channel=channel) == 0
            assert (
                "surveybot_outbox_queue_depth",
                frozenset({("lane", lane), ("channel", channel)}),
            ) in after
    assert value(after, "surveybot_inbox_pending", channel="web") == 0
    assert value(after, "surveybot_inbox_dead_letters", channel="web") == 0
    count = "surveybot_send_seconds_count"
    assert value(after, count, channel="web") - value(before, count, channel="web") == len(seen)
    assert ("surveybot_release_age_seconds", frozenset()) not in after  # no release yet

    async with runtime.sessions() as db:
        db.add(Release(
            label="2026-10", period="month", starts_on=dt.date(2026, 10, 1), ends_on=dt.date(2026, 10, 31),
            published_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1), rule={},
        ))  # fmt: skip
        await db.commit()
    age = value(await scrape(client), "surveybot_release_age_seconds")
    assert 3600 <= age < 3600 + 300


async def test_metrics_need_their_token_and_are_off_unless_enabled(
    metered: tuple[Runtime, TestClient[Any, Any]], client: TestClient[Any, Any]
) -> None:
    _, guarded = metered
    assert (await guarded.get("/metrics")).status == 401
    wrong = await guarded.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401 and (await wrong.json())["error"] == "unauthorized"
    assert (await guarded.get("/metrics", headers=AUTH)).status == 200
    assert (await client.get("/metrics")).status == 404  # the default: no route at all
    with pytest.raises(SettingsError, match="SURVEYBOT_METRICS_TOKEN"):
        load_settings(env="production", redis_url=REDIS_URL, keys="{}", metrics_enabled=True)


async def test_webhooks_are_timed_per_channel(
    metered: tuple[Runtime, TestClient[Any, Any]],
) -> None:
    _, client = metered
    before = value(await scrape(client), "surveybot_webhook_seconds_count", channel="telegram")
    response = await client.post("/telegram/webhook", json={"update_id": 1})
    assert response.status == 404  # no bot token in the tests: the route answers 404, timed
    after = await scrape(client)
    assert value(after, "surveybot_webhook_seconds_count", channel="telegram") == before + 1
    simulator = [
        k for k in after if k[0] == "surveybot_webhook_seconds_count" and ("channel", "web") in k[1]
    ]
    assert not simulator  # only routes named <channel>_webhook are timed


async def test_answer_latency_counts_each_reply_to_an_answer_and_shows_a_reply_that_waited(
    metered: tuple[Runtime, TestClient[Any, Any]],
) -> None:
    runtime, client = metered
    agency = await add_test_agency(runtime)
    headers = {"Authorization": f"Bearer {await runtime.service.create_api_key(agency.code, 't')}"}
    registration = await client.post(
        "/api/v1/dossiers", headers=headers, json={"dossier_code": "HS-AL"}
    )
    token = (await registration.json())["rating_token"]
    opened = await client.post("/simulator/api/session", json={"token": token})
    session = (await opened.json())["session"]
    await client.post(
        "/api/v1/results", headers=headers,
        json={"dossier_code": "HS-AL", "returned_at": today().isoformat()},
    )  # fmt: skip
    await runtime.dispatcher.drain()  # the acknowledgement and the invitation: no answer yet
    first = await simulator_messages(client, session)
    question = next(m for m in reversed(first) if m["buttons"])
    name = "surveybot_answer_latency_seconds"
    before = await scrape(client)  # the registry is the process's: counted from here

    def grew(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], **labels: str) -> float:
        suffix = "_bucket" if "le" in labels else "_count"
        return value(samples, name + suffix, **labels) - value(before, name + suffix, **labels)

    # One answer whose reply sat in the outbox for 3 s before the dispatcher took it.
    body = {"session": session, "payload": question["buttons"][0][1]}
    assert (await client.post("/simulator/api/send", json=body)).status == 202
    async with runtime.sessions() as db:
        pending = select(OutboxMessage).where(
            OutboxMessage.status == "pending", OutboxMessage.priority == outbox.PRIORITY_REPLY
        )
        for row in (await db.execute(pending)).scalars():
            row.created_at -= dt.timedelta(seconds=3)  # order within the conversation kept
        await db.commit()
    await runtime.dispatcher.drain()
    waited = await scrape(client)
    replies = grew(waited, channel="web")
    assert replies >= 1  # the next question (and, on the web, the answer's acknowledgement)
    assert grew(waited, channel="web", le="2.0") == 0  # every one of them waited 3 s
    assert grew(waited, channel="web", le="5.0") == replies

    # The rest of the survey: each reply handed to the channel is one more observation.
    seen = await answer_with_first_buttons(client, runtime, session)  # the whole transcript
    assert seen[-1]["text"].startswith("Cảm ơn")
    assert [m["id"] for m in seen[: len(first)]] == [m["id"] for m in first]
    done = await scrape(client)
    assert grew(done, channel="web") == len(seen) - len(first)  # every message after an answer
    assert grew(done, channel="telegram") == 0


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_429s_and_dead_letters_are_counted_per_channel(
    runtime: Runtime, agency: Agency
) -> None:
    runtime, channel = await make_runtime(runtime)
    limited = counter("surveybot_send_rate_limited_total", channel="flaky")
    failures = counter("surveybot_send_failures_total", channel="flaky")
    dead = counter("surveybot_dead_letters_total", queue="outbox", channel="flaky")
    await start_survey(runtime, agency, "HS-M2", "u-m2")
    channel.failures = [DeliveryError("429", retry_after=3), DeliveryError("5xx")]
    for _ in range(3):
        await force_ready(runtime)
        await runtime.dispatcher.drain()
    assert counter("surveybot_send_rate_limited_total", channel="flaky") == limited + 1
    assert counter("surveybot_send_failures_total", channel="flaky") == failures + 2
    assert counter("surveybot_dead_letters_total", queue="outbox", channel="flaky") == dead
    paused = DeliveryError("grant gone", retry_after=300, paused=True)
    channel.failures = [paused, DeliveryError("blocked", permanent=True)]
    await start_survey(runtime, agency, "HS-M3", "u-m3", drain=False)
    for _ in range(2):
        await force_ready(runtime)
        await runtime.dispatcher.drain()
    assert (
        counter("surveybot_send_rate_limited_total", channel="flaky") == limited + 1
    )  # a pause is no 429
    assert counter("surveybot_dead_letters_total", queue="outbox", channel="flaky") == dead + 1


CHILD = """
import sys
from bot import metrics
for _ in range(int(sys.argv[1])):
    metrics.message_sent("web", metrics.now())
metrics.send_failed("telegram", 5.0, False)
print("ok")
"""


def test_two_processes_counters_are_summed_in_multiprocess_mode(tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    children = [
        subprocess.Popen(  # noqa: S603 - this interpreter, our own fixed script
            [sys.executable, "-c", CHILD, str(n)], env=env, stdout=subprocess.PIPE, text=True
        )
        for n in (3, 4)
    ]
    for child in children:
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0 and out.strip() == "ok"
    assert len(list(directory.glob("counter_*.db"))) == 2  # one file per process

    text = metrics.exposition(path=str(directory)).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("surveybot_messages_sent_total", (("channel", "web"),))] == 7
    assert samples[("surveybot_send_seconds_count", (("channel", "web"),))] == 7
    assert samples[("surveybot_send_rate_limited_total", (("channel", "telegram"),))] == 2
