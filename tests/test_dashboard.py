"""Dashboard over HTTP: login (argon2, cookie flags, CSRF), roles and scope, audit of views."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select

from bot.dashboard import auth
from bot.runtime import Runtime
from storage.models import Agency, Procedure
from tests.adminseed import Batch, add_agency, release, seed


async def login(client: TestClient[Any, Any], username: str, password: str) -> Any:
    form = await client.get("/admin/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', await form.text())
    assert csrf
    return await client.post(
        "/admin/login",
        data={"csrf": csrf.group(1), "username": username, "password": password},
        allow_redirects=False,
    )


async def csrf_of(client: TestClient[Any, Any], path: str) -> str:
    """The session's CSRF token, read from the form on ``path``."""
    found = re.search(r'name="csrf" value="([^"]+)"', await (await client.get(path)).text())
    assert found
    return found.group(1)


async def test_login_roles_scope_and_audit(
    client: TestClient[Any, Any], runtime: Runtime, agency: Agency
) -> None:
    await add_agency(runtime, "ubnd-khac", "UBND khác", ["CB09"])
    await seed(runtime, "ubnd-test", [Batch(12, "CB01"), Batch(3, "CB02", satisfaction=1)])
    await seed(runtime, "ubnd-khac", [Batch(7, "CB09")])
    assert await release(runtime) == ["2026-10"]
    await auth.create_user(runtime.sessions, "lan", "mat-khau-dai", "admin")
    await auth.create_user(runtime.sessions, "xem", "mat-khau-dai", "viewer", "ubnd-test")

    assert (await client.get("/admin/", allow_redirects=False)).status == 303
    assert (await login(client, "lan", "sai-mat-khau")).status == 401
    ok = await login(client, "lan", "mat-khau-dai")
    assert ok.status == 303
    cookie = ok.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie

    page = await client.get("/admin/officials?agency=ubnd-test")
    html = await page.text()
    assert page.status == 200 and 'data-unit="CB01"' in html
    assert "Chưa đủ đánh giá" in html  # CB02 (3 ratings) is suppressed
    assert (await client.get("/admin/officials?agency=khong-co")).status == 404
    # POST without the session's CSRF token is refused.
    assert (await client.post("/admin/exports/download", data={"format": "csv"})).status == 403

    entries = await runtime.audit.recent()
    assert any(e.action == "view.officials" and e.detail["agency"] == "ubnd-test" for e in entries)

    client.session.cookie_jar.clear()
    assert (await login(client, "xem", "mat-khau-dai")).status == 303
    own = await client.get("/admin/ranking")
    assert 'data-unit="ubnd-test"' in await own.text()
    assert "ubnd-khac" not in await own.text()
    for path in ("/admin/officials?agency=ubnd-khac", "/admin/?agency=ubnd-khac", "/admin/audit"):
        assert (await client.get(path)).status == 403, path
    english = await client.get("/admin/coverage?lang=en")
    assert "Survey coverage" in await english.text()


async def test_mean_scores_read_total_out_of_the_maximum_the_data_holds(
    client: TestClient[Any, Any], runtime: Runtime, agency: Agency
) -> None:
    # satisfaction 5 → points 2 → 18 of 18; satisfaction 1 → points 0 → 6 of 18 (tests/adminseed).
    await seed(runtime, "ubnd-test", [Batch(12, "CB01"), Batch(12, "CB02", satisfaction=1)])
    assert await release(runtime) == ["2026-10"]
    await auth.create_user(runtime.sessions, "lan", "mat-khau-dai", "admin")
    assert (await login(client, "lan", "mat-khau-dai")).status == 303
    overview = await (await client.get("/admin/?agency=ubnd-test")).text()
    score = re.search(r'data-testid="total-score">([^<]*)<', overview)
    assert score and score.group(1) == "12,0 / 18", score
    assert "/18" not in overview
    officials = await (await client.get("/admin/officials?agency=ubnd-test")).text()
    assert "18,0 / 18" in officials and "6,0 / 18" in officials


async def test_the_fields_page_ranks_fields_and_shows_what_drives_dissatisfaction(
    client: TestClient[Any, Any], runtime: Runtime, agency: Agency
) -> None:
    await add_agency(runtime, "ubnd-khac", "UBND khác", ["CB01", "CB02"])
    async with runtime.sessions() as session:
        session.add(Procedure(code="3.0001", name="Cấp thẻ BHYT", field="y-te"))
        procedure = await session.scalar(select(Procedure).where(Procedure.code == "1.001234"))
        assert procedure is not None
        procedure.field = "tu-phap"
        await session.commit()
    for code in ("ubnd-test", "ubnd-khac"):
        await seed(
            runtime,
            code,
            [Batch(10, official, "1.001234", 5) for official in ("CB01", "CB02")]
            + [Batch(10, "CB01", "3.0001", 5), Batch(10, "CB02", "3.0001", 1)],
        )
    assert await release(runtime) == ["2026-10"]
    await auth.create_user(runtime.sessions, "xem", "mat-khau-dai", "viewer", "ubnd-test")
    assert (await login(client, "xem", "mat-khau-dai")).status == 303
    html = await (await client.get("/admin/fields")).text()
    rows = re.findall(r'<tr data-unit="([^"]+)"', html)
    assert rows == ["tu-phap", "y-te"]  # ranked: justice satisfied, health not
    assert "Y tế" in html and "Lĩnh vực" in html
    driving = re.findall(r'data-criterion="y-te:([^:]+):([^"]+)"', html)
    assert driving[0] == ("ubnd-test", "3")  # scored 0 by every unhappy rater, half the rest
    assert "ubnd-khac" not in html  # a viewer sees its own agency only
    english = await (await client.get("/admin/fields?lang=en")).text()
    assert "Health" in english and "Justice" in english
    procedures = await (await client.get("/admin/procedures")).text()
    assert re.search(r'data-unit="3.0001".*?data-k="field">Y tế<', procedures, re.S)
