"""``surveybot serve --workers 3``: three processes share one port, each answers, a killed
worker is replaced, and SIGTERM stops them all gracefully (issue 12, item 1)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from bot.cli import main
from tests.conftest import REDIS_URL, TEST_KEYS, scratch_pg_database

SURVEYBOT = Path(sys.executable).parent / "surveybot"


@pytest.fixture
def own_database() -> Iterator[str]:
    with scratch_pg_database("surveybot_workers") as url:
        yield url


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def pids_answering(port: int, want: int, seconds: float = 60) -> set[int]:
    """Fresh connections until ``want`` distinct processes answered /healthz."""
    seen: set[int] = set()
    async with asyncio.timeout(seconds):
        while len(seen) < want:
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector) as http:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                        if response.status == 200:
                            seen.add(int((await response.json())["pid"]))
                            continue
            await asyncio.sleep(0.05)  # not up yet
    return seen


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_three_workers_share_the_port_are_replaced_and_stop_together(
    own_database: str, tmp_path: Path, redis_prefix: str
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURVEYBOT_")}
    env.update(
        SURVEYBOT_ENV="test",
        SURVEYBOT_DATABASE_URL=own_database,
        SURVEYBOT_REDIS_URL=REDIS_URL,
        SURVEYBOT_REDIS_PREFIX=redis_prefix,
        SURVEYBOT_KEYS=TEST_KEYS,
        SURVEYBOT_VAR_DIR=str(tmp_path / "var"),
        SURVEYBOT_PORT=str(port),
    )
    log = (tmp_path / "serve.log").open("wb")
    parent = await asyncio.create_subprocess_exec(
        str(SURVEYBOT), "serve", "--workers", "3", env=env, stdout=log, stderr=log
    )
    try:
        workers = await pids_answering(port, 3)
        assert len(workers) == 3 and parent.pid not in workers

        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)  # a crash: the supervisor replaces it
        replaced = await pids_answering(port, 3)
        assert victim not in replaced and len(replaced - workers) == 1

        parent.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            assert await parent.wait() == 0
        assert not [pid for pid in replaced if alive(pid)], "a worker outlived the stop"
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
        log.close()


def test_several_workers_without_redis_are_refused(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SURVEYBOT_REDIS_URL", raising=False)
    result = CliRunner().invoke(main, ["serve", "--workers", "2"])
    assert result.exit_code != 0
    assert "--workers needs SURVEYBOT_REDIS_URL" in result.output
    assert "Traceback" not in result.output


async def test_gunicorn_with_aiohttps_worker_serves_from_each_worker(
    own_database: str, tmp_path: Path, redis_prefix: str
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURVEYBOT_")}
    env.update(
        SURVEYBOT_ENV="test",
        SURVEYBOT_DATABASE_URL=own_database,
        SURVEYBOT_REDIS_URL=REDIS_URL,
        SURVEYBOT_REDIS_PREFIX=redis_prefix,
        SURVEYBOT_KEYS=TEST_KEYS,
        SURVEYBOT_VAR_DIR=str(tmp_path / "var"),
    )
    log = (tmp_path / "gunicorn.log").open("wb")
    gunicorn = Path(sys.executable).parent / "gunicorn"
    server = await asyncio.create_subprocess_exec(
        str(gunicorn), "bot.serving:app", "--worker-class", "aiohttp.GunicornWebWorker",
        "--workers", "2", "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "20",
        env=env, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        assert len(await pids_answering(port, 2)) == 2
        server.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            assert await server.wait() == 0
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
        log.close()
