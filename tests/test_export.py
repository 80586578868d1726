"""Exports: anonymised rows (re-keyed, coarsened, shuffled, neutralised) and suppressed aggregates."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from collections.abc import Mapping
from typing import Any

import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from bot.runtime import Runtime
from storage import export
from storage.export import ExportError, ExportSpec
from storage.models import Agency, Response
from storage.stats import Thresholds
from tests.adminseed import Batch, add_agency, seed


async def _export(runtime: Runtime, **spec: str | None) -> bytes:
    out = io.BytesIO()
    await export.write_export(runtime.sessions, ExportSpec(**spec), Thresholds(), out)  # type: ignore[arg-type]
    return out.getvalue()


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
            Batch(3, "CB02", satisfaction=1, comment='=HYPERLINK("http://x")'),
            Batch(12, "CB02", satisfaction=4, comment="Cán bộ nhiệt tình"),
        ],
    )
    # Two officials: six ratings of one official would be held to the official's k (10).
    await seed(
        runtime, "ubnd-khac", [Batch(3, "CB09", satisfaction=2), Batch(3, "CB10", satisfaction=2)]
    )
    return agency


async def test_row_export_is_rekeyed_coarsened_shuffled_and_neutralised(
    runtime: Runtime, seeded: Agency
) -> None:
    first = _csv(await _export(runtime, period="month"))
    second = _csv(await _export(runtime, period="quarter"))
    assert len(first) == len(second) == 36
    async with runtime.sessions() as session:
        responses = (await session.execute(select(Response))).scalars().all()
    raw_ids = {r.id for r in responses} | {r.rater_hash for r in responses}
    text = json.dumps(first, ensure_ascii=False)
    assert not any(raw in text for raw in raw_ids)
    # Pseudonyms are re-keyed per export: nothing joins the two files.
    assert not {r["response"] for r in first} & {r["response"] for r in second}
    assert {r["period"] for r in first} == {"2026-10"} and {r["period"] for r in second} == {
        "2026-Q4"
    }
    # Shuffled: the order is not the database's insertion order and differs per export.
    assert [r["official"] for r in first] != ["CB01"] * 15 + ["CB02"] * 15 + ["CB09"] * 6
    comments = {r["q_comment"] for r in first}
    assert '\'=HYPERLINK("http://x")' in comments and "Cán bộ nhiệt tình" in comments
    assert {r["q_c3"] for r in first} == {"mot_lan"}


async def test_agency_scope_and_formats(runtime: Runtime, seeded: Agency) -> None:
    rows = [
        json.loads(line)
        for line in (await _export(runtime, fmt="jsonl", agency_id=seeded.id)).splitlines()
    ]
    assert len(rows) == 30 and {r["agency"] for r in rows} == {"ubnd-test"}
    workbook = load_workbook(io.BytesIO(await _export(runtime, fmt="xlsx", level="official")))
    sheet = workbook.worksheets[0]
    table = [[c.value for c in row] for row in sheet.iter_rows()]
    assert table[0][:3] == ["agency", "unit", "name"]
    by_unit = {row[1]: row for row in table[1:]}
    assert by_unit["CB01"][3] == 15 and by_unit["CB02"][3] == 15
    assert by_unit["CB09"][3] is None and by_unit["CB09"][9] == "Chưa đủ đánh giá"
    assert by_unit["CB01"][2] == "Nguyễn Văn A" and by_unit["CB09"][2] == "Cán bộ CB09"


async def test_aggregates_suppress_small_and_complementary_cells(
    runtime: Runtime, seeded: Agency
) -> None:
    agencies = _csv(await _export(runtime, level="agency"))
    assert [(r["agency"], r["responses"], r["rank"]) for r in agencies] == [
        ("ubnd-test", "30", "1"),
        ("ubnd-khac", "6", "2"),
    ]
    procedures = _csv(await _export(runtime, level="procedure"))
    assert {(r["agency"], r["unit"]): r["responses"] for r in procedures} == {
        ("ubnd-test", "1.001234"): "30",
        ("ubnd-khac", "1.001234"): "6",
    }
    periods = _csv(await _export(runtime, level="period", period="day"))
    by_day = {(r["agency"], r["period"]): r for r in periods}
    # 2026-10-03 has 15 responses, 2026-10-15 has 15: both shown; ubnd-khac's one day is 6.
    assert by_day[("ubnd-test", "2026-10-03")]["responses"] == "15"
    officials = _csv(await _export(runtime, level="official", fmt="csv", agency_id=seeded.id))
    assert {r["unit"] for r in officials} == {"CB01", "CB02"}
    criteria = _csv(await _export(runtime, level="criterion"))
    three = next(r for r in criteria if r["agency"] == "ubnd-test" and r["criterion"] == "3")
    assert three["zero_pct_dissatisfied"] == "" and three["scored"] == "30"  # 3 dissatisfied < k


async def test_bad_export_requests_are_refused() -> None:
    with pytest.raises(ExportError, match="unknown format 'pdf'"):
        ExportSpec(fmt="pdf")
    with pytest.raises(ExportError, match="unknown level"):
        ExportSpec(level="rater")


def _comparable(row: Mapping[str, Any]) -> tuple[str, ...]:
    """A row's cells but its pseudonym, numbers as floats (CSV has text, JSON numbers)."""
    numbers = ("survey_version", "complete", "satisfaction", "score18")
    return tuple(
        f"{k}={float(v) if k in numbers and v not in ('', None) else v}"
        for k, v in sorted(row.items())
        if k != "response"
    )


async def test_csv_and_jsonl_carry_the_same_cells_for_awkward_text(
    runtime: Runtime, seeded: Agency
) -> None:
    """Commas, quotes, line breaks, would-be formulas and Vietnamese survive every format."""
    nasty = ['a, "b"\nc', "+1 234", "@SUM(A1)", "\tx", "dấu, phẩy", '"', "-", ""]
    await add_agency(runtime, '=ubnd,"lạ"', "UBND lạ", ["-CB,1"])
    await seed(
        runtime,
        '=ubnd,"lạ"',
        [Batch(1, "-CB,1", comment=text, day=dt.date(2024, 12, 30)) for text in nasty],
    )
    for period in ("week", "year"):
        from_csv = _csv(await _export(runtime, period=period))
        from_jsonl = [
            json.loads(line)
            for line in (await _export(runtime, fmt="jsonl", period=period)).splitlines()
        ]
        assert len(from_csv) == len(from_jsonl) == 44

        assert sorted(map(_comparable, from_csv)) == sorted(map(_comparable, from_jsonl))
    strange = [r for r in from_csv if r["agency"] == '\'=ubnd,"lạ"']
    assert {r["official"] for r in strange} == {"'-CB,1"}
    assert {r["period"] for r in strange} == {"2024"}
    comments = {r["q_comment"] for r in strange}
    assert comments == {'a, "b"\nc', "'+1 234", "'@SUM(A1)", "'\tx", "dấu, phẩy", '"', "'-", ""}


async def test_a_large_row_export_runs_in_parallel_parts_with_the_same_rows(
    runtime: Runtime, seeded: Agency, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above PARTS_FROM_ROWS the CSV is written by worker processes, one per part: the rows,
    the header and the count must be those of the one-process export."""
    alone = _csv(await _export(runtime, period="day"))
    monkeypatch.setattr(export, "PARTS_FROM_ROWS", 1)
    monkeypatch.setattr(export, "export_workers", lambda: 3)
    out = io.BytesIO()
    spec = ExportSpec(period="day")
    count = await export.write_export(runtime.sessions, spec, Thresholds(), out)
    in_parts = _csv(out.getvalue())
    assert count == len(in_parts) == len(alone) == 36
    assert out.getvalue().count("\ufeff".encode()) == 1

    def without_pseudonym(rows: list[dict[str, str]]) -> list[tuple[str, ...]]:
        return sorted(tuple(v for k, v in row.items() if k != "response") for row in rows)

    assert without_pseudonym(in_parts) == without_pseudonym(alone)
    assert len({r["response"] for r in in_parts}) == 36
    streamed = b"".join(
        [chunk async for chunk in export.stream_export(runtime.sessions, spec, Thresholds())]
    )
    assert without_pseudonym(_csv(streamed)) == without_pseudonym(alone)
    viewer = _csv(await _export(runtime, agency_id=seeded.id))
    assert len(viewer) == 30 and {r["agency"] for r in viewer} == {"ubnd-test"}


def test_parts_cover_every_id_once_and_are_drawn_afresh() -> None:
    ids = [uuid.uuid4().hex for _ in range(2000)] + ["short", ""]
    draws = [export.draw_parts(count) for count in (2, 3, 4, 2)]
    for parts in draws:
        for rid in ids:
            digit = rid[parts[0].position - 1 : parts[0].position]
            holders = [p for p in parts if (digit not in p.digits) == p.rest]
            assert len(holders) == 1, (rid, parts)
        assert parts[0].position not in (13, 17)  # a uuid4's fixed digits would not split
    assert len({(p[0].position, p[0].digits) for p in draws}) > 1
