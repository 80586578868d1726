"""What the tests that start ``surveybot`` processes share: a free port, the environment of a
child process (the test's own database, keys and directory, nothing inherited from the
developer's ``SURVEYBOT_*`` variables) and waiting for its workers to answer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path

import aiohttp

from tests.conftest import TEST_KEYS


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def child_env(database_url: str, tmp_path: Path, **settings: str) -> dict[str, str]:
    """The environment of a ``surveybot`` child: ``settings`` as ``SURVEYBOT_<NAME>``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SURVEYBOT_")}
    env.update(
        SURVEYBOT_ENV="test",
        SURVEYBOT_DATABASE_URL=database_url,
        SURVEYBOT_KEYS=TEST_KEYS,
        SURVEYBOT_VAR_DIR=str(tmp_path / "var"),
    )
    env.update({f"SURVEYBOT_{name.upper()}": value for name, value in settings.items()})
    return env


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
