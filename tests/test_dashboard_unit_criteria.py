"""The quarterly agency-level criteria in the dashboard: a district manager sets and changes a
ward's criteria for a quarter (its surveys re-scored), is refused (403, audited) on another
district's ward reached by editing the form, and once a release covers the quarter every change
is refused with a clear message; a viewer reads the values and can post nothing."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select

from bot.dashboard import auth
from bot.runtime import Runtime
from storage import unit_criteria
from storage.models import Response
from storage.unit_criteria import Quarter
from tests.adminseed import release
from tests.test_dashboard_manage import PASSWORD, As, _actions, _province
from tests.test_unit_criteria import _scored

Q3 = Quarter(2026, 3)
PAGE = "/admin/unit-criteria?agency=phuong-a&quarter=2026-Q3"


async def _total(runtime: Runtime, response_id: str) -> float | None:
    async with runtime.sessions() as session:
        return await session.scalar(select(Response.score_total).where(Response.id == response_id))


async def test_a_manager_sets_and_changes_a_wards_quarter_until_it_is_released(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    ids = await _province(runtime)
    await auth.create_user(runtime.sessions, "ql-quan-1", PASSWORD, "manager", "quan-1")
    await auth.create_user(runtime.sessions, "xem-quan-1", PASSWORD, "viewer", "quan-1")
    answered = await _scored(runtime, ids["phuong-a"], dt.date(2026, 8, 14))
    assert await _total(runtime, answered) == 15.0

    manager = await As.login(client, "ql-quan-1", PASSWORD)
    status, page = await manager.get(PAGE)
    assert status == 200 and 'data-testid="criteria-set"' in page
    assert "Chỉ số chung của đơn vị" in page and "Tiếp thu, giải trình ý kiến phản ánh" in page
    assert 'data-testid="nav-unit-criteria"' in page
    assert 'data-unit="phuong-x"' not in page  # another district's ward is not listed

    status, where = await manager.post(
        "/admin/unit-criteria/set", unit="phuong-a", quarter="2026-Q3", c5="2", c8="1", c9=""
    )
    assert (status, where) == (303, PAGE + "#criteria-form")
    found = await unit_criteria.read(runtime.sessions, ids["phuong-a"], Q3.starts_on)
    assert found.own == {"5": 2, "8": 1}
    assert await _total(runtime, answered) == 14.6  # 13 of 16, scaled to 18
    status, page = await manager.get(PAGE)
    assert 'data-testid="c5-2" checked' in page and 'data-testid="c9-none" checked' in page
    assert 'data-testid="unit-phuong-a-8">1<' in page

    # Changed: the survey follows.
    await manager.post(
        "/admin/unit-criteria/set", unit="phuong-a", quarter="2026-Q3", c5="2", c8="2", c9="2"
    )
    assert await _total(runtime, answered) == 16.0
    # The manager's own unit is its to assess too.
    assert (
        await manager.post("/admin/unit-criteria/set", unit="quan-1", quarter="2026-Q3", c5="1")
    )[0] == 303

    # Bad input: a polite 400 naming what is wrong, nothing written, never a 500.
    for fields in (
        {"unit": "phuong-a", "quarter": "2026-Q3", "c5": "3"},
        {"unit": "phuong-a", "quarter": "2026-Q3", "c8": "hai"},
        {"unit": "phuong-a", "quarter": "2026-Q9", "c5": "1"},
        {"unit": "phuong-a", "quarter": "", "c5": "1"},
    ):
        status, page = await manager.post("/admin/unit-criteria/set", **fields)
        assert status == 400 and 'data-testid="error"' in page, fields
    assert (await manager.get("/admin/unit-criteria?agency=phuong-a&quarter=Q3"))[0] == 400

    # Another district's ward, reached by editing the form: 403, audited, nothing written.
    for path in ("/admin/unit-criteria/set", "/admin/unit-criteria/clear"):
        status, page = await manager.post(path, unit="phuong-x", quarter="2026-Q3", c5="0")
        assert status == 403 and 'data-testid="error"' in page
    assert (await unit_criteria.read(runtime.sessions, ids["phuong-x"], Q3.starts_on)).own is None
    assert (await manager.get("/admin/unit-criteria?agency=phuong-x"))[0] == 403

    # The viewer reads the values beside their rules, and can change nothing.
    viewer = await As.login(client, "xem-quan-1", PASSWORD)
    status, page = await viewer.get(PAGE)
    assert status == 200 and 'data-testid="criteria-values"' in page
    assert 'data-testid="criteria-set"' not in page and 'data-testid="value-9">2<' in page
    status, _ = await viewer.post(
        "/admin/unit-criteria/set", unit="phuong-a", quarter="2026-Q3", c5="0"
    )
    assert status == 403
    assert (await viewer.post("/admin/unit-criteria/clear", unit="phuong-a", quarter="2026-Q3"))[
        0
    ] == 403
    assert await _total(runtime, answered) == 16.0

    # August and September released: the quarter is frozen, and the page says so.
    assert await release(runtime, dt.datetime(2026, 10, 20, tzinfo=dt.UTC)) == [
        "2026-08",
        "2026-09",
    ]
    status, page = await manager.get(PAGE)
    assert 'data-testid="frozen"' in page and "2026-08, 2026-09" in page
    assert 'data-testid="criteria-set"' not in page and 'data-testid="criteria-values"' in page
    status, page = await manager.post(
        "/admin/unit-criteria/set", unit="phuong-a", quarter="2026-Q3", c5="0", c8="0", c9="0"
    )
    assert status == 409 and "không thể thay đổi" in page and "2026-08" in page
    assert (await manager.post("/admin/unit-criteria/clear", unit="phuong-a", quarter="2026-Q3"))[
        0
    ] == 409
    found = await unit_criteria.read(runtime.sessions, ids["phuong-a"], Q3.starts_on)
    assert found.own == {"5": 2, "8": 2, "9": 2} and await _total(runtime, answered) == 16.0
    # The next quarter is still open; in English the page speaks English.
    assert (
        await manager.post("/admin/unit-criteria/set", unit="phuong-a", quarter="2026-Q4", c5="1")
    )[0] == 303
    status, page = await manager.get("/admin/unit-criteria?agency=phuong-a&quarter=2026-Q4&lang=en")
    assert "Agency-level criteria" in page and "Progress and quality of online public" in page
    assert "Chỉ số chung" not in page

    actions = await _actions(runtime)
    changes = [d for a, b, d in actions if a == "admin:ql-quan-1" and b == "unit.criteria"]
    assert {"unit": "phuong-a", "quarter": "2026-Q3", "from": {"5": 2, "8": 1},
            "to": {"5": 2, "8": 2, "9": 2}} in changes  # fmt: skip
    denied = [d for a, b, d in actions if b == "access.denied"]
    assert sum(d.get("unit") == "phuong-x" for d in denied) == 2
    assert any(d.get("path") == "/admin/unit-criteria/set" for d in denied)
    assert not any("responses" in str(d) or "rescored" in str(d) for d in changes)


async def test_choosing_another_unit_keeps_the_quarter_chosen(
    client: TestClient[Any, Any], runtime: Runtime
) -> None:
    """The unit selector above the page submits the quarter on show with it, so a manager
    going from ward to ward stays in the quarter they are scoring."""
    await _province(runtime)
    await auth.create_user(runtime.sessions, "ql-quan-1", PASSWORD, "manager", "quan-1")
    manager = await As.login(client, "ql-quan-1", PASSWORD)
    status, page = await manager.get(PAGE)
    assert status == 200
    scope = page.split('<form method="get" class="scope">', 1)[1].split("</form>", 1)[0]
    assert '<input type="hidden" name="quarter" value="2026-Q3">' in scope
    assert 'data-testid="agency-select"' in scope
