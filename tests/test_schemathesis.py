"""schemathesis against the served OpenAPI document (issue 13, item 2), in the normal suite.

The whole app is served on a real socket (a thread with its own event loop, SQLite, the
in-process coordinator, rate limits on as in production). The schemathesis command then runs
every check (5xx, status codes, content types, headers, response schemas, negative data
rejected, positive data accepted, missing headers, unsupported methods with their Allow header,
ignored auth, the document's links) in every phase (examples, coverage, fuzzing, stateful),
positive and negative data, three times: with a valid, a missing and a wrong API key. It is
bounded (fixed seed, deterministic generation, a fixed number of examples per operation, a time
budget) and fails on any failure schemathesis reports. The figures go to
test-output/schemathesis.txt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from bot.app import create_app
from bot.http_errors import RouteAccessLogger
from bot.openapi import openapi_document
from bot.runtime import Runtime
from settings import load_settings
from storage.models import Agency, Official, Procedure
from tests.conftest import TEST_KEYS

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
MAX_EXAMPLES = 25
TIME_BUDGET_SECONDS = 12  # per credential variant; the three together stay under a minute
SEED = 20261201
OUTPUT = Path(__file__).resolve().parent.parent / "test-output" / "schemathesis.txt"


@dataclass
class Served:
    base_url: str
    api_key: str
    requests: list[str]


class _Count(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__()
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """The app on 127.0.0.1:<free port>, in a thread, with one agency and its API key."""
    settings = load_settings(
        env="test",
        var_dir=tmp_path / "var",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'st.db'}",
        keys=TEST_KEYS,
        redis_url=None,
    )
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop: asyncio.Event | None = None
    state: dict[str, object] = {}
    requests: list[str] = []
    access = logging.getLogger("surveybot.schemathesis.access")
    access.setLevel(logging.INFO)
    access.propagate = False
    counter = _Count(requests)
    access.addHandler(counter)

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        runtime = await Runtime.create(settings)
        async with runtime.sessions() as session:
            agency = Agency(code="ubnd-st", name="UBND phường Schemathesis")
            session.add(agency)
            await session.flush()
            session.add(Official(agency_id=agency.id, code="CB01", name="Nguyễn Văn A"))
            session.add(Procedure(code="1.001234", name="Đăng ký khai sinh"))
            await session.commit()
        state["key"] = await runtime.service.create_api_key("ubnd-st", "schemathesis")
        runner = web.AppRunner(
            create_app(runtime, background=False),
            access_log_class=RouteAccessLogger,
            access_log=access,
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        state["port"] = runner.addresses[0][1]
        ready.set()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            await runtime.close()

    def run() -> None:
        try:
            loop.run_until_complete(serve())
        except BaseException as exc:  # surfaced to the test below
            state["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, name="schemathesis-server", daemon=True)
    thread.start()
    assert ready.wait(60), "the server did not start"
    if "error" in state:
        raise AssertionError(f"the server did not start: {state['error']!r}")
    try:
        yield Served(f"http://127.0.0.1:{state['port']}", str(state["key"]), requests)
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        access.removeHandler(counter)
        loop.close()


def run_schemathesis(
    served: Served,
    name: str,
    headers: list[str],
    tmp: Path,
    *,
    document: Path | None = None,
    phases: str = "examples,coverage,fuzzing,stateful",
    budget: int = TIME_BUDGET_SECONDS,
    expect_failure: bool = False,
) -> str:
    location = [str(document), "--url", served.base_url] if document else []
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        "run",
        *(location or [f"{served.base_url}/api/v1/openapi.json"]),
        "--checks",
        "all",
        "--mode",
        "all",
        "--phases",
        phases,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--max-time",
        str(budget),
        "--seed",
        str(SEED),
        "--generation-deterministic",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--no-color",
        "--output-sanitize",
        "true",
        "--output-truncate",
        "true",
        "--report",
        "junit",
        "--report-junit-path",
        str(tmp / f"{name}.xml"),
        *[arg for header in headers for arg in ("-H", header)],
    ]
    root = str(Path(__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
        "NO_COLOR": "1",
    }
    done = subprocess.run(  # noqa: S603 - our own venv's schemathesis, fixed arguments
        command, capture_output=True, text=True, timeout=180, env=env, check=False, cwd=tmp
    )
    output = done.stdout + done.stderr
    failures = output[output.find("FAILURES") :][:8000]
    if expect_failure:
        assert done.returncode != 0, f"schemathesis ({name}) found nothing:\n{output[-3000:]}"
    else:
        assert done.returncode == 0, f"schemathesis ({name}) found problems:\n{failures}"
    return output


CREDENTIALS = {
    "valid": lambda key: [f"Authorization: Bearer {key}"],
    "missing": lambda key: [],
    "wrong": lambda key: ["X-Api-Key: sbk_wrong_key_of_nobody"],
}


def test_schemathesis_finds_nothing_with_valid_missing_and_wrong_keys(
    served: Served, tmp_path: Path
) -> None:
    lines = []
    for name, headers in CREDENTIALS.items():
        before, started = len(served.requests), time.monotonic()
        output = run_schemathesis(served, name, headers(served.api_key), tmp_path)
        seconds = time.monotonic() - started
        statuses: dict[str, int] = {}
        for line in served.requests[before:]:
            status = line.split()[2] if len(line.split()) > 2 else "?"
            statuses[status] = statuses.get(status, 0) + 1
        assert not [s for s in statuses if s.startswith("5")], statuses
        summary = re.findall(r"^.*(?:passed|failed|test cases|operations).*$", output, re.M)
        lines.append(
            f"{name}: {len(served.requests) - before} requests in {seconds:.1f} s, "
            f"statuses {dict(sorted(statuses.items()))}; " + " | ".join(s.strip() for s in summary)
        )
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_schemathesis_catches_a_document_that_lies(served: Served, tmp_path: Path) -> None:
    """The harness fails when the document and the server disagree (here: the 422 codes the
    server answers, left out of the document's enums on every route)."""
    doc = json.loads(json.dumps(openapi_document()))
    for path in doc["paths"].values():
        for operation in path.values():
            refused = (
                operation.get("responses", {}).get("422") if isinstance(operation, dict) else None
            )
            if refused:
                schema = refused["content"]["application/json"]["schema"]
                schema["allOf"][1]["properties"]["error"]["enum"] = ["unknown_survey"]
    lying = tmp_path / "lying.json"
    lying.write_text(json.dumps(doc), encoding="utf-8")
    output = run_schemathesis(
        served,
        "lying",
        [f"Authorization: Bearer {served.api_key}"],
        tmp_path,
        document=lying,
        phases="examples,coverage",
        budget=8,
        expect_failure=True,
    )
    assert "ST108 Response violates schema" in output, output[-4000:]
