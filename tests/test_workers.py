"""``surveybot serve --workers 3``: three processes share one port, each answers, a killed
worker is replaced, and SIGTERM stops them all gracefully (issue 12, item 1)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from bot.cli import main
from tests.children import child_env, free_port, pids_answering
from tests.conftest import REDIS_URL, scratch_pg_database

SURVEYBOT = Path(sys.executable).parent / "surveybot"


@pytest.fixture
def own_database() -> Iterator[str]:
    with scratch_pg_database("surveybot_workers") as url:
        yield url


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
    env = child_env(
        own_database, tmp_path, redis_url=REDIS_URL, redis_prefix=redis_prefix, port=str(port)
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
    env = child_env(own_database, tmp_path, redis_url=REDIS_URL, redis_prefix=redis_prefix)
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
