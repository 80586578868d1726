"""Aggregate exports: the released figures, in every format, exactly as the dashboard shows them."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
from openpyxl import load_workbook

from bot.runtime import Runtime
from storage import aggregates
from storage.aggregates import AggregateError, AggregateSpec
from storage.models import Agency
from storage.stats import NOT_ENOUGH, Thresholds
from tests.adminseed import Batch, add_agency, release, seed


async def _table(runtime: Runtime, fmt: str = "csv", **spec: str | None) -> bytes:
    header, rows = await aggregates.aggregate_table(
        runtime.sessions,
        AggregateSpec(**spec),  # type: ignore[arg-type]
        Thresholds(),
    )
    return b"".join([chunk async for chunk in aggregates.stream_table(header, rows, fmt)])


def _csv(data: bytes) -> list[dict[str, str]]:
    assert data.startswith("\ufeff".encode())
    return list(csv.DictReader(io.StringIO(data.decode("utf-8").lstrip("\ufeff"))))


@pytest.fixture
async def seeded(runtime: Runtime, agency: Agency) -> Agency:
    await add_agency(runtime, "ubnd-khac", "UBND khác", ["CB09", "CB10"])
    await seed(
        runtime,
        "ubnd-test",
        [
            Batch(15, "CB01", satisfaction=5, day=dt.date(2026, 10, 3)),
            Batch(3, "CB02", satisfaction=1),
            Batch(12, "CB02", satisfaction=4),
        ],
    )
    # Two officials: six ratings of one official would be held to the official's k (10).
    await seed(
        runtime, "ubnd-khac", [Batch(3, "CB09", satisfaction=2), Batch(3, "CB10", satisfaction=2)]
    )
    assert await release(runtime) == ["2026-10"]
    return agency


async def test_aggregates_come_from_the_release_with_its_suppression(
    runtime: Runtime, seeded: Agency
) -> None:
    agencies = _csv(await _table(runtime, level="agency"))
    assert [(r["release"], r["agency"], r["responses"], r["rank"]) for r in agencies] == [
        ("2026-10", "ubnd-test", "30", "1"),
        ("2026-10", "ubnd-khac", "6", "2"),
    ]
    officials = {r["unit"]: r for r in _csv(await _table(runtime, level="official"))}
    # CB09 and CB10 (3 each) are below the official's k; so is their sum: ubnd-khac's total
    # (6, published) minus nothing else would give them, yet both are withheld together.
    assert officials["CB09"]["responses"] == "" and officials["CB09"]["status"].startswith(
        NOT_ENOUGH
    )
    assert officials["CB01"]["responses"] == "15" and officials["CB02"]["responses"] == "15"
    criteria = _csv(await _table(runtime, level="criterion"))
    three = next(r for r in criteria if r["agency"] == "ubnd-test" and r["criterion"] == "3")
    assert three["zero_pct_dissatisfied"] == "" and three["scored"] == "30"  # 3 dissatisfied < k
    periods = _csv(await _table(runtime, level="period"))
    assert {(r["release"], r["agency"], r["responses"]) for r in periods} == {
        ("2026-10", "ubnd-test", "30"),
        ("2026-10", "ubnd-khac", "6"),
    }


async def test_an_agency_scope_sees_its_own_figures_in_every_format(
    runtime: Runtime, seeded: Agency
) -> None:
    rows = [
        json.loads(line)
        for line in (await _table(runtime, "jsonl", level="official", agency_id=seeded.id))
        .decode()
        .splitlines()
    ]
    assert {r["agency"] for r in rows} == {"ubnd-test"} and {r["unit"] for r in rows} == {
        "CB01",
        "CB02",
    }
    sheet = load_workbook(
        io.BytesIO(await _table(runtime, "xlsx", level="agency", agency_id=seeded.id))
    ).worksheets[0]
    table = [[c.value for c in row] for row in sheet.iter_rows()]
    assert table[0][:4] == ["release", "agency", "unit", "name"]
    assert [row[1] for row in table[1:]] == ["ubnd-test"]


async def test_a_release_that_does_not_exist_is_refused_by_name(
    runtime: Runtime, seeded: Agency
) -> None:
    with pytest.raises(AggregateError, match="no release '2026-09'; released: 2026-10"):
        await _table(runtime, level="agency", release="2026-09")
    with pytest.raises(AggregateError, match="unknown level 'responses'"):
        AggregateSpec(level="responses")
