"""Periodic reports in the dashboard: listed and downloaded within the user's scope, audited."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select

from bot.dashboard import auth
from bot.runtime import Runtime
from storage import units
from storage.models import Agency, AuditEntry, PeriodicReport
from tests.adminseed import Batch, add_agency, release, seed
from tests.test_dashboard import csrf_of, login

OCT = dt.date(2026, 10, 15)
AFTER_Q4 = dt.datetime(2027, 1, 20, tzinfo=dt.UTC)


async def two_agencies_reported(runtime: Runtime) -> dict[tuple[str, str], str]:
    """Two agencies rated in Q4, released and reported on schedule: (code, period) → report id."""
    await add_agency(runtime, "ubnd-khac", "UBND khác", ["CB09"])
    await seed(runtime, "ubnd-test", [Batch(12, "CB01", day=OCT), Batch(11, "CB02", day=OCT)])
    await seed(runtime, "ubnd-khac", [Batch(12, "CB09", satisfaction=1, day=OCT)])
    await release(runtime, AFTER_Q4)
    await runtime.generate_reports()
    async with runtime.sessions() as session:
        rows = (await session.execute(select(PeriodicReport))).scalars()
        return {(r.code, r.label): r.id for r in rows}


async def audited(runtime: Runtime, action: str) -> list[dict[str, Any]]:
    async with runtime.sessions() as session:
        entries = await session.scalars(select(AuditEntry).where(AuditEntry.action == action))
        return [{"actor": e.actor, **e.detail} for e in entries]


async def test_a_viewer_lists_and_downloads_only_its_own_agencys_reports(
    client: TestClient[Any, Any], runtime: Runtime, agency: Agency
) -> None:
    ids = await two_agencies_reported(runtime)
    assert set(ids) == {
        (code, label) for code in ("", "ubnd-test", "ubnd-khac") for label in ("2026", "2026-Q4")
    }
    await auth.create_user(runtime.sessions, "xem", "mat-khau-dai", "viewer", "ubnd-test")
    assert (await login(client, "xem", "mat-khau-dai")).status == 303

    html = await (await client.get("/admin/reports")).text()
    listed = set(re.findall(r'data-report="([^"]+)"', html))
    assert listed == {"ubnd-test:2026", "ubnd-test:2026-Q4"}

    own = await client.get(f"/admin/reports/{ids[('ubnd-test', '2026-Q4')]}.pdf")
    assert own.status == 200 and own.content_type == "application/pdf"
    assert (await own.read()).startswith(b"%PDF")
    assert "bao-cao-ubnd-test-2026-Q4.pdf" in own.headers["Content-Disposition"]
    sheet = await client.get(f"/admin/reports/{ids[('ubnd-test', '2026')]}.xlsx")
    assert sheet.status == 200 and (await sheet.read()).startswith(b"PK")
    # Another agency's report, the province's, an unknown id or format: all Not Found.
    for path in (
        f"/admin/reports/{ids[('ubnd-khac', '2026-Q4')]}.pdf",
        f"/admin/reports/{ids[('', '2026-Q4')]}.xlsx",
        f"/admin/reports/{ids[('ubnd-test', '2026-Q4')]}.exe",
        "/admin/reports/0123456789abcdef0123456789abcdef.pdf",
        "/admin/reports/%00%ff.pdf",
    ):
        answer = await client.get(path)
        assert answer.status == 404, path
        assert "%PDF" not in await answer.text()
    downloads = await audited(runtime, "report.download")
    assert [(d["actor"], d["scope"], d["period"], d["format"]) for d in downloads] == [
        ("admin:xem", "ubnd-test", "2026-Q4", "pdf"),
        ("admin:xem", "ubnd-test", "2026", "xlsx"),
    ]


async def test_reports_on_demand_are_scoped_checked_and_audited(
    client: TestClient[Any, Any], runtime: Runtime, agency: Agency
) -> None:
    await add_agency(runtime, "ubnd-khac", "UBND khác", ["CB09"])
    await seed(runtime, "ubnd-test", [Batch(12, "CB01", day=OCT), Batch(11, "CB02", day=OCT)])
    await seed(runtime, "ubnd-khac", [Batch(12, "CB09", day=OCT)])
    assert await release(runtime) == ["2026-10"]  # October only: Q4 is still open
    await auth.create_user(runtime.sessions, "xem", "mat-khau-dai", "viewer", "ubnd-test")
    await auth.create_user(runtime.sessions, "lan", "mat-khau-dai", "admin")
    assert (await login(client, "xem", "mat-khau-dai")).status == 303
    csrf = await csrf_of(client, "/admin/reports")

    refused = await client.post("/admin/reports/generate", data={"period": "2026-Q4"})
    assert refused.status == 403  # no CSRF token
    bad = await client.post("/admin/reports/generate", data={"csrf": csrf, "period": "2026-Q9"})
    assert bad.status == 400 and "2026-Q4" in await bad.text()
    empty = await client.post("/admin/reports/generate", data={"csrf": csrf, "period": "2025"})
    assert empty.status == 400 and "2025" in await empty.text()
    # Another agency's by URL editing: refused before anything is made.
    other = await client.post(
        "/admin/reports/generate?agency=ubnd-khac", data={"csrf": csrf, "period": "2026-Q4"}
    )
    assert other.status == 403
    made = await client.post(
        "/admin/reports/generate",
        data={"csrf": csrf, "period": "2026-Q4"},
        allow_redirects=False,
    )
    assert made.status == 303
    html = await (await client.get("/admin/reports")).text()
    assert re.findall(r'data-report="([^"]+)"', html) == ["ubnd-test:2026-Q4"]
    assert "số liệu tạm" in html  # a quarter not yet closed is provisional

    client.session.cookie_jar.clear()
    assert (await login(client, "lan", "mat-khau-dai")).status == 303
    csrf = await csrf_of(client, "/admin/reports")
    province = await client.post(
        "/admin/reports/generate", data={"csrf": csrf, "period": "2026"}, allow_redirects=False
    )
    assert province.status == 303
    html = await (await client.get("/admin/reports")).text()
    assert set(re.findall(r'data-report="([^"]+)"', html)) == {"ubnd-test:2026-Q4", "*:2026"}
    generated = await audited(runtime, "report.generate")
    assert [(g["actor"], g["scope"], g["period"], g["trigger"]) for g in generated] == [
        ("admin:xem", "ubnd-test", "2026-Q4", "request"),
        ("admin:lan", "*", "2026", "request"),
    ]


async def test_a_district_viewer_sees_the_reports_of_its_wards_and_no_other(
    client: TestClient[Any, Any], runtime: Runtime, agency: Agency
) -> None:
    """A viewer bound to a district reads its subtree: its own and its wards' reports, never a
    unit outside it (the scope rule, not "its own unit only")."""
    district = await units.create_unit(runtime.sessions, "quan-x", "UBND quận X", "district", None)
    await units.move_unit(runtime.sessions, agency.id, district.id)  # ubnd-test is its ward
    ids = await two_agencies_reported(runtime)
    assert ("quan-x", "2026-Q4") in ids
    await auth.create_user(runtime.sessions, "quan", "mat-khau-dai", "viewer", "quan-x")
    assert (await login(client, "quan", "mat-khau-dai")).status == 303
    listed = set(
        re.findall(r'data-report="([^"]+)"', await (await client.get("/admin/reports")).text())
    )
    assert listed == {f"{c}:{p}" for c in ("quan-x", "ubnd-test") for p in ("2026", "2026-Q4")}
    ward = await client.get(f"/admin/reports/{ids[('ubnd-test', '2026-Q4')]}.xlsx")
    assert ward.status == 200
    for outside in (("ubnd-khac", "2026-Q4"), ("", "2026-Q4")):
        assert (await client.get(f"/admin/reports/{ids[outside]}.xlsx")).status == 404
