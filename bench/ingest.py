"""Ingest benchmark: dossier registration and batch result reports through the real HTTP API,
on PostgreSQL and Redis, against a bare aiohttp handler parsing the same JSON in the same run.

* ``register``: ``POST /api/v1/dossiers`` from 32 concurrent clients (target ≥ 1,000/s);
* ``results``: ``POST /api/v1/results`` in batches of 1,000 for bound dossiers, each result
  starting a survey and writing its first messages to the outbox (target ≥ 5,000 results/s);
* ``bare``: the same requests to a handler that only parses the body, served by the same
  aiohttp in the same process: the ceiling of the HTTP layer on this machine at this moment.

A scratch PostgreSQL database is created and dropped; the dispatcher does not run (this
measures ingest, not delivery). Prints the figures and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from bot.app import create_app
from bot.runtime import Runtime
from settings import load_settings
from storage.migrate import upgrade_async
from storage.models import Agency, Official, Procedure
from storage.pseudonym import KeyRing

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = "redis://127.0.0.1:6379/0"
CLIENTS = 32
BATCH = 1000


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = _port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


def _dossier(n: int) -> dict[str, Any]:
    today = dt.date.today()
    return {
        "dossier_code": f"000.00.12.H29-{n:08d}",
        "procedure_code": "1.001234",
        "official_code": f"CB{n % 10:02d}",
        "received_at": (today - dt.timedelta(days=6)).isoformat(),
        "due_at": (today + dt.timedelta(days=1)).isoformat(),
    }


async def _register(base: str, key: str, codes: range) -> tuple[float, list[str]]:
    """Every dossier of ``codes`` from CLIENTS concurrent clients; seconds and rating tokens."""
    queue = iter(codes)
    tokens: list[str] = []
    headers = {"Authorization": f"Bearer {key}"}

    async def client(http: aiohttp.ClientSession) -> None:
        for n in queue:
            async with http.post(f"{base}/api/v1/dossiers", json=_dossier(n), headers=headers) as r:
                body = await r.json()
                if r.status not in (200, 201):
                    raise RuntimeError(f"registration answered {r.status}: {body}")
                tokens.append(str(body.get("rating_token", "")))

    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(connector=connector) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(CLIENTS)))
        return time.perf_counter() - started, tokens


async def _results(base: str, key: str, codes: range) -> float:
    headers = {"Authorization": f"Bearer {key}"}
    today = dt.date.today().isoformat()
    batches = [
        {"results": [{"dossier_code": _dossier(n)["dossier_code"], "returned_at": today}
                     for n in codes[i : i + BATCH]]}
        for i in range(0, len(codes), BATCH)
    ]  # fmt: skip
    async with aiohttp.ClientSession() as http:
        started = time.perf_counter()
        for batch in batches:
            async with http.post(f"{base}/api/v1/results", json=batch, headers=headers) as r:
                if r.status != 200:
                    raise RuntimeError(f"results answered {r.status}: {await r.text()}")
                await r.read()
        return time.perf_counter() - started


async def _bare(registrations: int, results: int) -> tuple[float, float]:
    async def parse(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"ok": True, "n": len(body) if isinstance(body, dict) else 0})

    app = web.Application(client_max_size=8 * 1024**2)
    app.router.add_post("/api/v1/dossiers", parse)
    app.router.add_post("/api/v1/results", parse)
    runner, base = await _serve(app)
    try:
        register_s, _ = await _register(base, "bare", range(registrations))
        results_s = await _results(base, "bare", range(results))
    finally:
        await runner.cleanup()
    return register_s, results_s


@contextlib.contextmanager
def _profiled(directory: Path | None, name: str) -> Iterator[None]:
    """Sample the loop's thread (every task on it) with pyinstrument into ``directory/name.txt``
    (and ``.html``); nothing when no directory was asked for."""
    if directory is None:
        yield
        return
    from pyinstrument import Profiler  # a development tool: only imported when asked for

    profiler = Profiler(async_mode="disabled")
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{name}.txt").write_text(profiler.output_text(unicode=True, show_all=False))
        (directory / f"{name}.html").write_text(profiler.output_html())


async def run(registrations: int, results: int, profile: Path | None = None) -> dict[str, Any]:
    name = f"surveybot_bench_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    try:
        await upgrade_async(url)
        settings = load_settings(
            env="test", database_url=url, redis_url=REDIS, keys=KeyRing.generate_document(),
            redis_prefix=f"bench:{name}:", quiet_hours_start="", quiet_hours_end="",
            invite_cap_days=0, api_rate_per_second=1e6, api_burst=10**6,
        )  # fmt: skip
        runtime = await Runtime.create(settings)
        async with runtime.sessions() as session:
            agency = Agency(code="ubnd-bench", name="UBND phường Đo")
            session.add(agency)
            await session.flush()
            session.add_all(
                [Official(agency_id=agency.id, code=f"CB{i:02d}", name=f"Cán bộ {i}")
                 for i in range(10)]
            )  # fmt: skip
            session.add(Procedure(code="1.001234", name="Đăng ký khai sinh"))
            await session.commit()
        key = await runtime.service.create_api_key("ubnd-bench", "bench")
        runner, base = await _serve(create_app(runtime, background=False))
        try:
            with _profiled(profile, "register"):
                register_s, tokens = await _register(base, key, range(registrations))
            for token in tokens[:results]:  # bound on the web chat (setup, not timed)
                await runtime.service.bind(token, "web", await runtime.web.open_session(), "vi")
            with _profiled(profile, "results"):
                results_s = await _results(base, key, range(results))
        finally:
            await runner.cleanup()
            await runtime.close()
    finally:
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    bare_register_s, bare_results_s = await _bare(registrations, results)
    register_rate = registrations / register_s
    results_rate = results / results_s
    bare_register = registrations / bare_register_s
    bare_results = results / bare_results_s
    figures: dict[str, Any] = {
        "bench": "ingest",
        "date": dt.date.today().isoformat(),
        "registrations": registrations,
        "results": results,
        "register_per_s": round(register_rate, 1),
        "bare_register_per_s": round(bare_register, 1),
        "register_ratio": round(register_rate / bare_register, 3),
        "results_per_s": round(results_rate, 1),
        "bare_results_per_s": round(bare_results, 1),
        "results_ratio": round(results_rate / bare_results, 4),
        "register_target_met": register_rate >= 1000,
        "results_target_met": results_rate >= 5000,
    }
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench ingest")
    parser.add_argument("--registrations", type=int, default=2000)
    parser.add_argument("--results", type=int, default=2000)
    parser.add_argument(
        "--profile", type=Path, default=None, metavar="DIR",
        help="profile each phase with pyinstrument (pip install pyinstrument) into DIR",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.results > args.registrations:
        parser.error("--results cannot exceed --registrations (a result needs its dossier)")
    figures = asyncio.run(run(args.registrations, args.results, args.profile))
    print(
        f"registration: {figures['register_per_s']:,.0f}/s at {CLIENTS} clients "
        f"(bare {figures['bare_register_per_s']:,.0f}/s, ratio {figures['register_ratio']})"
    )
    print(
        f"results: {figures['results_per_s']:,.0f}/s in batches of {BATCH} "
        f"(bare {figures['bare_results_per_s']:,.0f}/s, ratio {figures['results_ratio']})"
    )
    print(json.dumps(figures))
