"""The ``surveybot`` command: serve, demo, database, agencies and keys, surveys, exports, chat."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import os
import random
import secrets
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from aiohttp import web
from sqlalchemy import func, select

from bot.adapters.telegram.demo import TelegramDemo
from bot.app import create_app
from bot.channels import Capabilities, render
from bot.dashboard import auth as dashboard_auth
from bot.flows.definition import (
    SurveyCatalog,
    SurveyDefinitionError,
    file_sources,
    load_definition,
)
from bot.flows.engine import Reply, Start, SurveyEngine
from bot.flows.scoring import AGENCY_CRITERIA, MAX_PER_CRITERION, dossier_inputs
from bot.http_errors import RouteAccessLogger
from bot.logs import configure_logging
from bot.responses import apply_score, rescore_all
from bot.runtime import Runtime
from bot.service import ServiceError
from bot.supervisor import Supervisor
from settings import Settings, SettingsError, load_settings
from storage import (
    directory,
    export,
    fields,
    releases,
    report_pdf,
    report_store,
    reports,
    unit_criteria,
    units,
)
from storage.migrate import upgrade
from storage.models import (
    OFFICIAL_LEFT,
    Agency,
    Dossier,
    DossierContact,
    Invitation,
    Official,
    OptOut,
    OutboxMessage,
    Procedure,
    ProcedureAssignment,
    Response,
    SurveyLedger,
    ZaloToken,
    new_id,
)
from storage.pseudonym import (
    KeyError_,
    KeyRing,
    resolve_key_file,
    retire_document,
    rotate_document,
    write_key_file,
)
from storage.stats import Thresholds

T = TypeVar("T")
log = logging.getLogger("surveybot")
TERMINAL = Capabilities(buttons=False, max_text_chars=4096)


def _settings(**overrides: Any) -> Settings:
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    configure_logging(settings.log_level, settings.effective_log_format)
    return settings


def _run(coro_factory: Callable[[], Awaitable[T]]) -> T:
    async def wrapper() -> T:
        return await coro_factory()

    try:
        return asyncio.run(wrapper())
    except (ServiceError, KeyError_, SurveyDefinitionError) as exc:
        raise click.ClickException(str(exc)) from None


async def _with_runtime(settings: Settings, action: Callable[[Runtime], Awaitable[T]]) -> T:
    runtime = await Runtime.create(settings)
    try:
        return await action(runtime)
    finally:
        await runtime.close()


@click.group()
def main() -> None:
    """Citizen rating channel: confidential chat-bot surveys after administrative procedures."""


# ---------------------------------------------------------------------------------- serving
def _serve(
    settings: Settings,
    banner: Callable[[Runtime], Awaitable[None]] | None = None,
    *,
    telegram_demo: dict[str, Any] | None = None,
    reuse_port: bool = False,
) -> None:
    """Serve; with ``telegram_demo`` (a dict the banner can read) a local Telegram stand-in too;
    ``reuse_port`` lets several worker processes bind the one port."""

    async def make_app() -> web.Application:
        current = settings
        demo_telegram = None
        if telegram_demo is not None and not settings.telegram_token:
            demo_telegram = await TelegramDemo.start(settings)
            if demo_telegram is not None:
                current = demo_telegram.settings
                telegram_demo["demo"] = demo_telegram
        runtime = await Runtime.create(current)
        if banner is not None:
            await banner(runtime)
        app = create_app(runtime)
        if demo_telegram is not None:
            demo_telegram.setup(app)
        return app

    try:
        web.run_app(
            make_app(),
            host=settings.host,
            port=settings.port,
            access_log_class=RouteAccessLogger,
            print=None,
            reuse_port=reuse_port or None,
        )
    except (KeyError_, ServiceError) as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option(
    "--telegram-polling",
    is_flag=True,
    help="Receive Telegram updates by long polling (getUpdates) instead of the webhook.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Serving processes sharing the port (needs SURVEYBOT_REDIS_URL when more than 1).",
)
@click.option("--reuse-port", is_flag=True, hidden=True)
def serve(telegram_polling: bool, workers: int, reuse_port: bool) -> None:
    """Serve the HTTP API, rating links, the simulator, and dispatch the outbox."""
    settings = _settings(**({"telegram_polling": True} if telegram_polling else {}))
    if settings.telegram_polling and not settings.telegram_token:
        raise click.ClickException("--telegram-polling needs SURVEYBOT_TELEGRAM_TOKEN")
    if workers > 1:
        if not settings.redis_url:
            raise click.ClickException(
                "--workers needs SURVEYBOT_REDIS_URL: the processes share locks, rate limits, "
                "leases and the web chat through it"
            )
        upgrade(settings.effective_database_url)  # once, before the workers start
        click.echo(f"serving on {settings.effective_public_base_url} with {workers} workers")
        child = [sys.executable, "-c", "from bot.cli import main; main()", "serve", "--reuse-port"]
        if telegram_polling:
            child.append("--telegram-polling")
        raise SystemExit(Supervisor(child, workers).run())
    if not reuse_port:
        click.echo(f"serving on {settings.effective_public_base_url}")
    _serve(settings, reuse_port=reuse_port)


@main.command()
@click.option("--port", type=int, default=None, help="Port to serve on (default 8080).")
def demo(port: int | None) -> None:
    """Seed a small demo province (a tree of units with officials, procedures and history, and
    its logins), then serve."""
    overrides: dict[str, Any] = {"port": port} if port else {}
    # Someone trying the demo at night, or twice from one chat, should see a survey at once:
    # quiet hours and the invitation cap are off unless set explicitly.
    if "SURVEYBOT_QUIET_HOURS_START" not in os.environ:
        overrides.update(quiet_hours_start="", quiet_hours_end="")
    if "SURVEYBOT_INVITE_CAP_DAYS" not in os.environ:
        overrides["invite_cap_days"] = 0
    settings = _settings(**overrides)

    async def banner(runtime: Runtime) -> None:
        key = await seed_demo(runtime)
        logins = await seed_demo_logins(runtime)
        await runtime.publish_releases()
        await runtime.generate_reports(limit=None)  # the closed quarter's, before the banner
        shown = await releases.list_releases(runtime.sessions)
        base = settings.effective_public_base_url
        code = f"HS-DEMO-{secrets.randbelow(10**6):06d}"
        click.echo(
            f"""
Citizen rating channel: demo on {base}
  Web chat simulator : {base}/simulator
  API document       : {base}/api/v1/openapi.json
  Demo agency API key: {key}

Trigger a survey (register the dossier, then report its result):
  curl -s -X POST {base}/api/v1/dossiers -H 'Authorization: Bearer {key}' \\
       -H 'Content-Type: application/json' \\
       -d '{{"dossier_code": "{code}", "procedure_code": "1.001234", "official_code": "CB01", "received_at": "{dt.date.today() - dt.timedelta(days=5)}", "due_at": "{dt.date.today() + dt.timedelta(days=1)}"}}'
  # open the "rating_url" it prints, choose the web chat, then:
  curl -s -X POST {base}/api/v1/results -H 'Authorization: Bearer {key}' \\
       -H 'Content-Type: application/json' \\
       -d '{{"results": [{{"dossier_code": "{code}", "returned_at": "{dt.date.today()}"}}]}}'
Export (admin, released periods only): surveybot export -o rows.zip   (aggregates: --level agency)

Public results       : {base}/public   (closed quarters and years; open data as CSV and JSON)
Admin dashboard      : {base}/admin/   (figures of closed periods only; released: {", ".join(r.label for r in shown) or "none yet"})
  province admin (the whole tree)          : {logins[0][0]} / {logins[0][1]}
  district manager (quan-1-demo and wards) : {logins[1][0]} / {logins[1][1]}
  district viewer (quan-1-demo and wards)  : {logins[2][0]} / {logins[2][1]}
  ward viewer (ubnd-demo)                  : {logins[3][0]} / {logins[3][1]}
  Units, API keys and logins: {base}/admin/units, /admin/keys, /admin/logins
  quarterly / yearly reports (XLSX, PDF): {base}/admin/reports
""",
            nl=True,
        )
        if "demo" in telegram:
            click.echo(telegram["demo"].hint(base))

    telegram: dict[str, Any] = {}
    _serve(settings, banner, telegram_demo=telegram)


DEMO_OFFICIALS = [("CB01", "Nguyễn Thị Lan"), ("CB02", "Trần Văn Minh"), ("CB03", "Lê Thu Hà")]
#: An official of the first demo ward who left when the current quarter began: ratings of
#: the closed quarters name them, new results naming them are refused (422 official_left).
DEMO_LEAVER = ("CB04", "Phan Minh Tuấn")
DEMO_PROCEDURES = [
    ("1.001234", "Đăng ký khai sinh", "tu-phap"),
    ("1.004227", "Chứng thực bản sao từ bản chính", "tu-phap"),
    ("2.000986", "Cấp giấy phép xây dựng nhà ở riêng lẻ", "xay-dung"),
]


async def seed_demo(runtime: Runtime, history: int = 120) -> str:
    """Idempotent: reference data and history once; a fresh API key on every run (shown once)."""
    async with runtime.sessions() as session:
        agency = (
            await session.execute(select(Agency).where(Agency.code == "ubnd-demo"))
        ).scalar_one_or_none()
        if agency is None:
            agency = Agency(id=new_id(), code="ubnd-demo", name="UBND phường Bến Thành (demo)")
            session.add(agency)
            for code, name, field_code in DEMO_PROCEDURES:
                if (
                    await session.execute(select(Procedure).where(Procedure.code == code))
                ).scalar_one_or_none() is None:
                    session.add(Procedure(code=code, name=name, field=field_code))
            for code, name in DEMO_OFFICIALS:
                session.add(Official(agency_id=agency.id, code=code, name=name))
            today = dt.date.today()
            session.add(
                Official(
                    agency_id=agency.id,
                    code=DEMO_LEAVER[0],
                    name=DEMO_LEAVER[1],
                    status=OFFICIAL_LEFT,
                    ended_on=dt.date(today.year, (today.month - 1) // 3 * 3 + 1, 1),
                )
            )
            await session.flush()
            await _seed_history(runtime, session, agency, history)
        await session.commit()
    return await runtime.service.create_api_key("ubnd-demo", "demo")


DEMO_SECOND_AGENCY = ("ubnd-demo-2", "UBND phường Sài Gòn (demo)")
DEMO_SECOND_OFFICIALS = [
    ("SG01", "Phạm Quốc Bảo"),
    ("SG02", "Võ Thị Mai"),
    ("SG03", "Đỗ Minh Khoa"),
]
#: The demo province as a tree (code, name, kind, parent): the city's People's Committee
#: office, a department, and a district whose wards are the two demo agencies.
DEMO_TREE = [
    ("tp-demo", "UBND Thành phố Hồ Chí Minh (demo)", "province", None),
    ("so-tu-phap-demo", "Sở Tư pháp (demo)", "department", "tp-demo"),
    ("so-y-te-demo", "Sở Y tế (demo)", "department", "tp-demo"),
    ("quan-1-demo", "UBND Quận 1 (demo)", "district", "tp-demo"),
    ("ubnd-demo", "UBND phường Bến Thành (demo)", "commune", "quan-1-demo"),
    (DEMO_SECOND_AGENCY[0], DEMO_SECOND_AGENCY[1], "commune", "quan-1-demo"),
]
DEMO_DEPARTMENT_OFFICIALS = [
    ("TP01", "Hoàng Văn Nam"),
    ("TP02", "Bùi Thị Hoa"),
    ("TP03", "Ngô Đức Anh"),
]


async def seed_demo_logins(runtime: Runtime) -> list[tuple[str, str]]:
    """The demo province's tree (the two demo wards under a district, beside two departments),
    the second ward's and the justice department's history (so rankings compare), then the
    logins with fresh passwords on every run (printed once in the banner): a province admin,
    the district's manager and viewer, and the first ward's viewer."""
    async with runtime.sessions() as session:
        by_code = {a.code: a for a in (await session.execute(select(Agency))).scalars()}
        fresh: list[tuple[Agency, int]] = []
        for code, name, kind, parent in DEMO_TREE:
            unit = by_code.get(code)
            if unit is None:
                unit = by_code[code] = Agency(id=new_id(), code=code, name=name, kind=kind)
                session.add(unit)
                officials = {
                    DEMO_SECOND_AGENCY[0]: (DEMO_SECOND_OFFICIALS, 120),
                    "so-tu-phap-demo": (DEMO_DEPARTMENT_OFFICIALS, 100),
                }.get(code)
                if officials:
                    for official_code, official_name in officials[0]:
                        session.add(
                            Official(agency_id=unit.id, code=official_code, name=official_name)
                        )
                    fresh.append((unit, officials[1]))
            unit.kind = kind
            unit.parent_id = by_code[parent].id if parent else None
            await session.flush()  # parents first: the table's own key points at them
        for unit, count in fresh:
            await _seed_history(runtime, session, unit, count)
        await session.commit()
    logins = [
        ("admin", "admin", None),
        ("ql-quan-1", "manager", "quan-1-demo"),
        ("xem-quan-1", "viewer", "quan-1-demo"),
        ("xem-ubnd-demo", "viewer", "ubnd-demo"),
    ]
    out = []
    for username, role, agency_code in logins:
        password = secrets.token_urlsafe(9)
        await dashboard_auth.create_user(runtime.sessions, username, password, role, agency_code)
        out.append((username, password))
    await runtime.audit.record("cli", "demo.logins", {"users": [u for u, _, _ in logins]})
    return out


def demo_history_start(today: dt.date, delay_hours: int) -> dt.date:
    """Where the demo's history begins: the first day of the last quarter whose months are all
    released by now, so the public page (closed quarters only) has one to show at once."""
    anchor = today - dt.timedelta(days=math.ceil(delay_hours / 24) + 1)
    first = dt.date(anchor.year, (anchor.month - 1) // 3 * 3 + 1, 1)
    previous = first - dt.timedelta(days=1)
    return dt.date(previous.year, (previous.month - 1) // 3 * 3 + 1, 1)


async def _seed_history(runtime: Runtime, session: Any, agency: Agency, count: int) -> None:
    rng = random.Random(20261124)
    every = (
        (
            await session.execute(
                select(Official).where(Official.agency_id == agency.id).order_by(Official.code)
            )
        )
        .scalars()
        .all()
    )
    officials = [o for o in every if o.ended_on is None]
    leavers = [o for o in every if o.ended_on is not None]
    # Its own sequence, so the active officials' history is the same with or without a leaver.
    leaver_rng = random.Random(20261204)
    procedures = (await session.execute(select(Procedure))).scalars().all()
    definition = runtime.catalog.latest("mot-cua")
    bands = runtime.service.responses.bands
    today = dt.date.today()
    days = (today - demo_history_start(today, runtime.settings.effective_release_delay_hours)).days
    for _ in range(count):
        official = rng.choice(officials[:2]) if rng.random() < 0.94 else officials[2]
        response = Response(
            id=new_id(), agency_id=agency.id, official_id=official.id,
            procedure_id=rng.choice(procedures).id, survey_id="mot-cua", survey_version=definition.version,
            channel=rng.choice(["telegram", "zalo_oa", "zns", "web"]), language="vi",
            answered_on=today - dt.timedelta(days=rng.randrange(1, days + 1)),
            rater_hash=secrets.token_hex(32), rater_key_id="seed", complete=True,
        )  # fmt: skip
        for leaver in leavers:  # about a third of the days before they left
            if response.answered_on < (leaver.ended_on or today) and leaver_rng.random() < 0.3:
                response.official_id = leaver.id
        session.add(response)
        await session.flush()
        points: dict[str, int | None] = {}
        for question in definition.questions:
            if question.type == "text":
                continue
            option = rng.choices(question.options, weights=[6, 3, 1][: len(question.options)])[0]
            session.add(response.record_answer(question.id, option.value, option.points))
            if question.criterion:
                points[question.criterion] = option.points
            if option.satisfaction:
                response.satisfaction = option.satisfaction
        returned = today - dt.timedelta(days=rng.randrange(1, 90))
        response.score_scheme = definition.scoring
        response.score_inputs = dossier_inputs(
            points, returned + dt.timedelta(days=rng.choice([-1, 0, 1, 2])), returned
        ).to_json()
        apply_score(response, bands)


# ---------------------------------------------------------------------------------- database
@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the Alembic migrations up to the latest schema."""
    settings = _settings()
    upgrade(settings.effective_database_url)
    click.echo("database is at the latest schema")


# ---------------------------------------------------------------------------------- agencies
@main.group()
def agency() -> None:
    """Agencies (cơ quan, đơn vị)."""


@agency.command("add")
@click.argument("code")
@click.argument("name")
@click.option("--survey", default=None, help="Default survey for this agency's dossiers.")
@click.option("--parent", default=None, help="The unit it sits under (its code); none: a root.")
@click.option("--kind", type=click.Choice(list(units.KINDS)), default="commune")
def agency_add(code: str, name: str, survey: str | None, parent: str | None, kind: str) -> None:
    settings = _settings()

    async def action(runtime: Runtime) -> None:
        if survey and survey not in runtime.catalog:
            raise click.ClickException(f"no survey named {survey!r}")
        tree = await units.load_tree(runtime.sessions)
        parent_unit = tree.by_code(parent) if parent else None
        if parent and parent_unit is None:
            raise click.ClickException(f"no unit {parent!r}")
        try:
            made = await units.create_unit(
                runtime.sessions, code, name, kind, parent_unit.id if parent_unit else None
            )
        except units.UnitError as exc:
            raise click.ClickException(str(exc)) from None
        if survey:
            async with runtime.sessions() as session:
                agency = await session.get(Agency, made.id)
                assert agency is not None
                agency.default_survey = survey
                await session.commit()
        await runtime.audit.record(
            "cli", "agency.add", {"agency": made.code, "parent": parent, "kind": kind}
        )

    _run(lambda: _with_runtime(settings, action))
    click.echo(f"agency {code} added")


@agency.command("criteria")
@click.argument("code")
@click.option(
    "--c5",
    type=click.IntRange(0, MAX_PER_CRITERION),
    default=None,
    help="Criterion 5: receiving and returning at the one-stop desk (0-2).",
)
@click.option(
    "--c8",
    type=click.IntRange(0, MAX_PER_CRITERION),
    default=None,
    help="Criterion 8: complaints and petitions handled on time (0-2).",
)
@click.option(
    "--c9",
    type=click.IntRange(0, MAX_PER_CRITERION),
    default=None,
    help="Criterion 9: progress and quality of online public services (0-2).",
)
@click.option(
    "--quarter",
    default=None,
    help="The calendar quarter assessed, like 2026-Q3 (default: the current one).",
)
@click.option("--clear", is_flag=True, help="Forget the quarter's values first.")
def agency_criteria(code: str, c5: int | None, c8: int | None, c9: int | None,
                    quarter: str | None, clear: bool) -> None:  # fmt: skip
    """Set a unit's agency-level criteria 5, 8 and 9 (Circular 01/2018) for a quarter, scored
    2/1/0 by an assessor.

    The unit's surveys of that quarter are scored again at once (``storage.unit_criteria``),
    unless a release already covers the quarter: then nothing changes. ``--clear`` alone
    returns the quarter to the unit's values from before per-quarter criteria, if any.
    """
    settings = _settings()
    given = {c: v for c, v in zip(AGENCY_CRITERIA, (c5, c8, c9), strict=True) if v is not None}
    if not given and not clear:
        raise click.ClickException("give at least one of --c5, --c8, --c9 (or --clear)")
    try:
        chosen = (
            unit_criteria.Quarter.parse(quarter)
            if quarter
            else unit_criteria.Quarter.of(dt.datetime.now(dt.UTC).date())
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None

    async def action(runtime: Runtime) -> dict[str, int]:
        tree = await units.load_tree(runtime.sessions)
        unit = tree.by_code(code)
        if unit is None:
            raise click.ClickException(f"no agency {code!r}")
        bands = runtime.service.responses.bands

        def rescore(response: Response) -> bool:
            return apply_score(response, bands)

        try:
            if clear and not given:
                change = await unit_criteria.clear(runtime.sessions, unit.id, chosen, rescore)
            else:
                change = await unit_criteria.set_criteria(
                    runtime.sessions, unit.id, chosen, given, rescore, merge=not clear
                )
        except unit_criteria.Frozen as exc:
            raise click.ClickException(
                f"the criteria of {chosen} can no longer change: {exc}"
            ) from None
        await runtime.audit.record(
            "cli",
            "unit.criteria",
            {"unit": code, "quarter": chosen.label, "from": change.before, "to": change.after},
        )
        return change.after

    criteria = _run(lambda: _with_runtime(settings, action))
    shown = ", ".join(f"{k}={v}" for k, v in sorted(criteria.items())) or "none"
    click.echo(f"agency {code} criteria for {chosen}: {shown}")


@main.command("official")
@click.argument("agency_code")
@click.argument("code")
@click.argument("name")
def official_add(agency_code: str, code: str, name: str) -> None:
    """Add an official (the staff being rated) to an agency, or rename one (an official who
    left is active again). The agency's one-stop system can do the same: PUT /api/v1/officials."""
    settings = _settings()

    async def action(runtime: Runtime) -> directory.SyncResult:
        agency_id = await _agency_id(runtime, agency_code)
        entry = directory.OfficialEntry(code, name)
        result = await directory.sync_officials(
            runtime.sessions, agency_id, [entry], whole=False, today=_today()
        )
        await runtime.audit.record("cli", "official.put", {"agency": agency_code, "official": code})
        return result

    result = _run(lambda: _with_runtime(settings, action))
    verb = "added to" if result.created else "updated in" if result.updated else "unchanged in"
    click.echo(f"official {code} {verb} {agency_code}")


@main.command("official-move")
@click.argument("agency_code")
@click.argument("code")
@click.argument("to_agency")
@click.option("--as", "new_code", help="The official's code in the new unit (default: the same).")
def official_move(agency_code: str, code: str, to_agency: str, new_code: str | None) -> None:
    """Move an official to another unit. Their past ratings stay with the old unit and their
    old row (marked moved, refused in new results there); the new unit rates them from now."""
    settings = _settings()

    async def action(runtime: Runtime) -> str:
        there = await _directory_call(
            directory.move_official(
                runtime.sessions, agency_code, code, to_agency, _today(), new_code
            )
        )
        await runtime.audit.record(
            "cli",
            "official.move",
            {"agency": agency_code, "official": code, "to": to_agency, "as": there},
        )
        return there

    there = _run(lambda: _with_runtime(settings, action))
    click.echo(f"official {code} of {agency_code} moved to {to_agency} as {there}")


@main.command("official-leave")
@click.argument("agency_code")
@click.argument("code")
def official_leave(agency_code: str, code: str) -> None:
    """Retire an official who left: new results naming them are refused (422 official_left);
    their past ratings stay."""
    settings = _settings()

    async def action(runtime: Runtime) -> None:
        await _directory_call(
            directory.leave_official(runtime.sessions, agency_code, code, _today())
        )
        await runtime.audit.record(
            "cli", "official.leave", {"agency": agency_code, "official": code}
        )

    _run(lambda: _with_runtime(settings, action))
    click.echo(f"official {code} of {agency_code} has left")


@main.command("officials")
@click.argument("agency_code")
def officials_list(agency_code: str) -> None:
    """List an agency's officials with their status (active, moved, left)."""
    settings = _settings()

    async def action(runtime: Runtime) -> list[tuple[str, str, str, str]]:
        agency_id = await _agency_id(runtime, agency_code)
        async with runtime.sessions() as session:
            rows = await session.execute(
                select(Official.code, Official.name, Official.status, Official.ended_on)
                .where(Official.agency_id == agency_id)
                .order_by(Official.code)
            )
            return [(c, n, st, str(e or "")) for c, n, st, e in rows]

    for code, name, status, ended in _run(lambda: _with_runtime(settings, action)):
        click.echo("\t".join((code, status, ended, name)))


FIELD_CHOICE = click.Choice(fields.CODES)


@main.command("procedure")
@click.argument("code")
@click.argument("name", required=False)
@click.option("--field", "field_code", type=FIELD_CHOICE, help="Its field (lĩnh vực).")
@click.option("--assign", "assign_to", multiple=True, help="Assign it to this agency (repeat).")
@click.option("--unassign", "unassign_from", multiple=True, help="Unassign it from this agency.")
def procedure_add(
    code: str,
    name: str | None,
    field_code: str | None,
    assign_to: tuple[str, ...],
    unassign_from: tuple[str, ...],
) -> None:
    """Add or edit an administrative procedure (thủ tục hành chính) of the national catalogue:
    CODE is its national code (mã TTHC), with its field; assign it to the units handling it.
    The province admin's word on a procedure's name and field is final."""
    settings = _settings()

    async def action(runtime: Runtime) -> bool:
        created = await _directory_call(
            directory.set_procedure(runtime.sessions, code, name, field_code)
        )
        for agency, active in [(a, True) for a in assign_to] + [(a, False) for a in unassign_from]:
            await _directory_call(
                directory.assign_procedure(runtime.sessions, agency, code, active)
            )
        detail = {"procedure": code, "field": field_code, "assign": list(assign_to),
                  "unassign": list(unassign_from)}  # fmt: skip
        await runtime.audit.record("cli", "procedure.put", detail)
        return created

    created = _run(lambda: _with_runtime(settings, action))
    click.echo(f"procedure {code} {'added' if created else 'updated'}")


@main.command("procedures")
@click.option("--agency", "agency_code", help="Only those assigned to this agency.")
def procedures_list(agency_code: str | None) -> None:
    """List the procedures with their field (and, for an agency, whether assigned)."""
    settings = _settings()

    async def action(runtime: Runtime) -> list[tuple[str, str, str, str]]:
        async with runtime.sessions() as session:
            stmt = select(Procedure.code, Procedure.name, Procedure.field).order_by(Procedure.code)
            if agency_code is None:
                return [(c, f or "", "", n) for c, n, f in await session.execute(stmt)]
        agency_id = await _agency_id(runtime, agency_code)
        async with runtime.sessions() as session:
            rows = await session.execute(
                stmt.add_columns(ProcedureAssignment.active).join(
                    ProcedureAssignment,
                    (ProcedureAssignment.procedure_id == Procedure.id)
                    & (ProcedureAssignment.agency_id == agency_id),
                )
            )
            return [(c, f or "", "assigned" if a else "unassigned", n) for c, n, f, a in rows]

    for row in _run(lambda: _with_runtime(settings, action)):
        click.echo("\t".join(row))


async def _agency_id(runtime: Runtime, code: str) -> str:
    async with runtime.sessions() as session:
        found = await session.scalar(select(Agency.id).where(Agency.code == code))
    if found is None:
        raise click.ClickException(f"no agency {code!r}")
    return str(found)


async def _directory_call(call: Awaitable[T]) -> T:
    """A directory change, its refusals as one clear line."""
    try:
        return await call
    except directory.Unknown as exc:
        raise click.ClickException(str(exc)) from None
    except directory.Problem as exc:
        raise click.ClickException("; ".join(p for _, p in exc.problems)) from None


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


@main.group()
def apikey() -> None:
    """Agency API keys."""


@apikey.command("create")
@click.argument("agency_code")
@click.option("--label", default=None)
def apikey_create(agency_code: str, label: str | None) -> None:
    """Create an API key; it is printed once and only its hash is stored."""
    settings = _settings()

    async def action(runtime: Runtime) -> str:
        key = await runtime.service.create_api_key(agency_code, label)
        await runtime.audit.record("cli", "apikey.create", {"agency": agency_code})
        return key

    click.echo(_run(lambda: _with_runtime(settings, action)))


@main.group()
def keys() -> None:
    """Pseudonymisation keys."""


@keys.command("generate")
def keys_generate() -> None:
    """Print a new key set (JSON) for SURVEYBOT_KEYS or a key file kept outside the database."""
    click.echo(KeyRing.generate_document())


def _key_file(settings: Settings, option: Path | None) -> Path:
    """The key file a rotation rewrites: --file, else SURVEYBOT_KEYS_FILE, else var/keys.json."""
    if option is None and settings.keys:
        raise click.ClickException(
            "the keys come from SURVEYBOT_KEYS, which this command cannot rewrite: keep them in "
            "a key file (SURVEYBOT_KEYS_FILE) or pass --file"
        )
    try:
        path = resolve_key_file(option or settings.keys_file or settings.var_dir / "keys.json")
    except KeyError_ as exc:
        raise click.ClickException(str(exc)) from None
    if not path.is_file():
        raise click.ClickException(f"no key file at {path} (create one: surveybot keys generate)")
    return path


def _rewrite(path: Path, change: Callable[[str], tuple[str, T]]) -> T:
    try:
        new, done = change(path.read_text(encoding="utf-8"))
        write_key_file(path, new)
    except KeyError_ as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot rewrite {path}: {exc.strerror}") from None
    return done


_KEY_FILE_OPTION = click.option(
    "--file",
    "file_",
    type=click.Path(path_type=Path),
    default=None,
    help="Key file (default: SURVEYBOT_KEYS_FILE, else var/keys.json).",
)


@keys.command("rotate")
@_KEY_FILE_OPTION
def keys_rotate(file_: Path | None) -> None:
    """Add a new active key to every purpose; the old ones stay for look-ups until retired.

    The file is replaced atomically (mode 0600). Restart every process afterwards."""
    settings = _settings()
    path = _key_file(settings, file_)
    done = _rewrite(path, rotate_document)
    log.info("key file %s rotated: new active ids %s", path, [r.new_id for r in done])
    for rotation in done:
        click.echo(
            f"{rotation.purpose}: new active key {rotation.new_id}; "
            f"kept for look-ups: {', '.join(rotation.kept)}"
        )
    click.echo(
        f"wrote {path} (mode 0600). Restart every surveybot process; retire an old id after the "
        "grace period with `surveybot keys retire ID`."
    )


async def _key_in_use(runtime: Runtime, key_id: str) -> dict[str, int]:
    """How many stored rows were made with ``key_id`` (pseudonyms by key id, sealed values by
    their ``<id>.`` prefix): retiring it would make them unmatchable or unreadable."""
    columns: list[tuple[Any, str]] = [
        (OptOut.key_id, "opt-outs"),
        (Dossier.dossier_key_id, "dossiers"),
        (SurveyLedger.dossier_key_id, "survey ledger rows"),
        (Response.rater_key_id, "responses"),
    ]
    sealed: list[tuple[Any, str]] = [
        (Dossier.address_sealed, "dossier addresses"),
        (DossierContact.address_sealed, "dossier contacts"),
        (Invitation.address_sealed, "invitation addresses"),
        (OutboxMessage.address_sealed, "outbox addresses"),
        (ZaloToken.access_sealed, "Zalo tokens"),
    ]
    found: dict[str, int] = {}
    async with runtime.sessions() as session:
        for column, label in columns:
            query = select(func.count()).where(column == key_id)
            found[label] = int((await session.execute(query)).scalar_one())
        for column, label in sealed:
            query = select(func.count()).where(
                column.like(f"{key_id}.%") | column.like(f"{key_id}-%.%")
            )
            found[label] = int((await session.execute(query)).scalar_one())
    return {label: n for label, n in found.items() if n}


@keys.command("retire")
@click.argument("key_id")
@_KEY_FILE_OPTION
@click.option("--force", is_flag=True, help="Retire even if stored rows still use the key.")
def keys_retire(key_id: str, file_: Path | None, force: bool) -> None:
    """Remove an old key id (never an active one) once nothing stored needs it."""
    settings = _settings()
    path = _key_file(settings, file_)
    if not force:
        in_use = _run(lambda: _with_runtime(settings, lambda rt: _key_in_use(rt, key_id)))
        if in_use:
            counts = ", ".join(f"{n} {label}" for label, n in in_use.items())
            raise click.ClickException(
                f"key {key_id!r} is still used by {counts}: retiring it would lose them "
                "(an opt-out would no longer be honoured); wait, or pass --force"
            )
    purposes = _rewrite(path, lambda text: retire_document(text, key_id))
    log.info("key file %s: retired key id %s", path, key_id)
    click.echo(f"retired {key_id} ({', '.join(purposes)}); wrote {path} (mode 0600)")


# ---------------------------------------------------------------------------------- scores
@main.group()
def scores() -> None:
    """Scores of stored responses."""


@scores.command("recompute")
def scores_recompute() -> None:
    """Score every stored response again from its kept inputs, under today's bands.

    Run after changing a scheme's bands (SURVEYBOT_BAND_*) or its rules: the tally follows
    each changed response; releases already published stay as they were (they are frozen).
    """
    settings = _settings()

    async def action(runtime: Runtime) -> tuple[int, int]:
        done = await rescore_all(runtime.sessions, Thresholds.from_settings(settings).bands)
        await runtime.audit.record(
            "cli", "scores.recompute", {"responses": done.responses, "changed": done.changed}
        )
        return done.responses, done.changed

    seen, changed = _run(lambda: _with_runtime(settings, action))
    click.echo(f"re-scored {seen} responses, {changed} changed")


# ---------------------------------------------------------------------------------- surveys
@main.group()
def survey() -> None:
    """Survey definitions."""


@survey.command("check")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def survey_check(path: Path) -> None:
    """Validate a survey definition file and print a summary, or every problem found."""
    try:
        definition = load_definition(path)
    except SurveyDefinitionError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{definition.id} v{definition.version}: {len(definition.questions)} questions, valid"
    )


@survey.command("list")
def survey_list() -> None:
    """The surveys of the package and of SURVEYBOT_SURVEYS_DIR, latest version of each."""
    catalog = _file_catalog()
    for survey_id in catalog.ids():
        latest = catalog.latest(survey_id)
        click.echo(f"{survey_id} v{latest.version}  {latest.title.vi}")


def _file_catalog() -> SurveyCatalog:
    """The package's and the surveys folder's definitions, read without a database."""
    try:
        return SurveyCatalog([s.definition for s in file_sources(_settings().surveys_dir)])
    except SurveyDefinitionError as exc:
        raise click.ClickException(str(exc)) from None


# ---------------------------------------------------------------------------------- exports
@main.command("export")
@click.option("--format", "fmt", type=click.Choice(list(export.FORMATS)), default="csv")
@click.option("--level", type=click.Choice(list(export.LEVELS)), default="responses")
@click.option("--period", type=click.Choice(list(export.PERIODS)), default="month")
@click.option("--agency", "agency_code", default=None, help="Only this agency's data.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None)
def export_cmd(
    fmt: str, level: str, period: str, agency_code: str | None, output: Path | None
) -> None:
    """Anonymised exports. ``--level responses`` (the default) gives one ZIP: ratings.<fmt>,
    of the released periods only, k-anonymous on agency, official, procedure, channel, language and period, with no free
    text; comments.<fmt> (agency, quarter, text); report.json (the rule, k and what was
    generalised, suppressed or dropped). Other levels: aggregates of the latest release.
    Streams, so any size fits in bounded memory."""
    settings = _settings()
    binary = fmt == "xlsx" or level == "responses"
    if binary and output is None and sys.stdout.isatty():
        what = "a row-level export is a ZIP" if level == "responses" else "an XLSX export"
        raise click.ClickException(f"{what}: give --output FILE (or redirect stdout)")

    async def action(runtime: Runtime) -> str:
        agency_id = None
        if agency_code:
            async with runtime.sessions() as session:
                agency_id = (
                    await session.execute(select(Agency.id).where(Agency.code == agency_code))
                ).scalar_one_or_none()
            if agency_id is None:
                raise click.ClickException(f"no agency {agency_code!r}")
        spec = export.ExportSpec(
            level=level,
            fmt=fmt,
            period=period,
            agency_id=agency_id,
            until=await releases.released_until(runtime.sessions),
        )
        await runtime.audit.record(
            "cli",
            "export",
            {"format": fmt, "level": level, "period": period, "agency": agency_code or "*"},
        )
        thresholds = Thresholds.from_settings(runtime.settings)

        async def write(out: Any) -> str:
            if not spec.packaged:
                rows = await export.write_export(runtime.sessions, spec, thresholds, out)
                return f"{rows} rows"
            report = (await export.write_package(runtime.sessions, spec, thresholds, out)).report
            ratings, comments, k = report["ratings"], report["comments"], report["k"]
            return (
                f"{ratings['rows']} rating rows (k {k['k_official']} for one official, "
                f"{k['k_group']} otherwise; {ratings['rows_suppressed']} suppressed, "
                f"{ratings['rows_dropped']} dropped; period {ratings['period_coarsest']}) and "
                f"{comments['rows']} comments ({comments['withheld']} withheld)"
            )

        if output is not None:
            with output.open("wb") as handle:
                return await write(handle)
        return await write(sys.stdout.buffer)

    try:
        written = _run(lambda: _with_runtime(settings, action))
    except export.ChangedDuringExport as exc:
        if output is not None:
            output.unlink(missing_ok=True)  # nothing was written to it: leave no empty file
        raise click.ClickException(str(exc)) from None
    if output:
        click.echo(f"wrote {written} to {output}", err=True)


# ---------------------------------------------------------------------------------- admins
@main.group("admin")
def admin_group() -> None:
    """Dashboard logins (argon2-hashed passwords)."""


@admin_group.command("create")
@click.argument("username")
@click.option("--role", type=click.Choice(list(dashboard_auth.ROLES)), default="admin")
@click.option(
    "--agency", "agency_code", default=None, help="The unit whose subtree a manager or viewer has."
)
@click.password_option(envvar="SURVEYBOT_ADMIN_PASSWORD")
def admin_create(username: str, role: str, agency_code: str | None, password: str) -> None:
    """Create a login, or reset its password and role."""
    settings = _settings()

    async def action(runtime: Runtime) -> None:
        try:
            await dashboard_auth.create_user(
                runtime.sessions, username, password, role, agency_code
            )
        except dashboard_auth.AuthError as exc:
            raise click.ClickException(str(exc)) from None
        await runtime.audit.record(
            "cli",
            "admin.create",
            {"username": username, "role": role, "agency": agency_code or "*"},
        )

    _run(lambda: _with_runtime(settings, action))
    click.echo(f"login {username} ({role}) ready")


AUDIT_PROBLEMS = {
    "edited": "audit chain broken at entry {seq}",
    "rewritten": "audit entry {seq} differs from the anchor in {anchor}: the log was rewritten",
    "missing": "audit entries from {seq} on are in the anchor {anchor} but not in the database",
}


@main.group("audit")
def audit_group() -> None:
    """The tamper-evident audit log."""


@audit_group.command("verify")
def audit_verify() -> None:
    settings = _settings()
    result = _run(lambda: _with_runtime(settings, lambda rt: rt.audit.verify()))
    if not result.ok:
        raise click.ClickException(
            AUDIT_PROBLEMS[result.problem or "edited"].format(
                seq=result.first_bad_seq, anchor=settings.effective_audit_anchor_file
            )
        )
    click.echo(f"audit log intact: {result.entries} entries")


@main.group("release")
def release_group() -> None:
    """Frozen releases: the figures of closed periods, the only figures anyone is shown."""


@release_group.command("publish")
def release_publish() -> None:
    """Release every closed period that is due now (the server also does this every minute)."""
    settings = _settings()

    async def action(runtime: Runtime) -> list[str]:
        return await runtime.publish_releases()

    published = _run(lambda: _with_runtime(settings, action))
    click.echo(f"released: {', '.join(published)}" if published else "nothing due")


@release_group.command("list")
def release_list() -> None:
    """Every release: period, dates, when it was published, and the rule it was cut under."""
    settings = _settings()

    async def action(runtime: Runtime) -> list[releases.ReleaseInfo]:
        return await releases.list_releases(runtime.sessions)

    infos = _run(lambda: _with_runtime(settings, action))
    for info in infos:
        click.echo(
            f"{info.label}\t{info.starts_on} – {info.ends_on}\t"
            f"published {info.published_at:%Y-%m-%d %H:%M} UTC\t"
            + json.dumps(info.rule, sort_keys=True)
        )
    if not infos:
        click.echo("no release yet")


@main.group("report")
def report_group() -> None:
    """Quarterly and yearly reports (XLSX and PDF), summed from the releases only."""


@report_group.command("generate")
@click.option("--period", "label", default=None, help="2026-Q4 or 2026; default: every one due")
@click.option(
    "--agency", "agency_code", default=None, help="an agency's code; default: the province"
)
def report_generate(label: str | None, agency_code: str | None) -> None:
    """Generate the reports due (the server does this every minute), or one period's."""
    settings = _settings()

    async def action(runtime: Runtime) -> list[str]:
        if label is None:
            return [
                f"{r.code or '*'} {r.label}" for r in await runtime.generate_reports(limit=None)
            ]
        scope = releases.PROVINCE
        if agency_code:
            async with runtime.sessions() as session:
                found = await session.scalar(select(Agency.id).where(Agency.code == agency_code))
            if found is None:
                raise click.ClickException(f"no agency {agency_code!r}")
            scope = found
        report, created = await report_store.generate(
            runtime.sessions,
            scope,
            reports.parse_period(label),
            Thresholds.from_settings(settings),
            "request",
            settings.report_font or report_pdf.DEFAULT_FONT,
        )
        if created:
            await runtime.audit.record("cli", "report.generate", report.audit_detail())
        return [f"{report.code or '*'} {report.label}" + ("" if created else " (already stored)")]

    try:
        made = _run(lambda: _with_runtime(settings, action))
    except reports.ReportError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("generated: " + ", ".join(made) if made else "nothing due")


@main.command("stats")
def stats() -> None:
    """Counts per survey (responses), for a quick look after a demo."""
    settings = _settings()

    async def action(runtime: Runtime) -> dict[str, int]:
        async with runtime.sessions() as session:
            rows = await session.execute(
                select(Response.survey_id, func.count()).group_by(Response.survey_id)
            )
            return {survey_id: count for survey_id, count in rows.all()}

    click.echo(json.dumps(_run(lambda: _with_runtime(settings, action)), ensure_ascii=False))


# ---------------------------------------------------------------------------------- terminal chat
@main.command()
@click.option("--survey", "survey_id", default="mot-cua", help="Survey to try.")
@click.option("--lang", type=click.Choice(["vi", "en"]), default="vi")
def chat(survey_id: str, lang: str) -> None:
    """Try a survey in the terminal: numbered options, typed replies; nothing is stored."""
    catalog = _file_catalog()
    if survey_id not in catalog:
        raise click.ClickException(
            f"no survey named {survey_id!r}; try: {', '.join(catalog.ids())}"
        )
    engine = SurveyEngine(catalog.latest(survey_id))
    state = engine.new_state(secrets.token_hex(3), lang)
    step = engine.step(state, Start())
    while True:
        for prompt in step.prompts:
            click.echo(render(prompt, TERMINAL, lang).text + "\n")
        if step.finished:
            return
        try:
            line = input("> ")
        except EOFError:
            return
        step = engine.step(step.state, Reply(line))
