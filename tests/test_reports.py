"""Periodic reports: a quarter's XLSX and PDF summed from its released months, nothing else."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import subprocess
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook
from pypdf import PdfReader
from sqlalchemy import delete, func, select

from bot.runtime import Runtime
from storage import releases, report_pdf, report_store, reports, units
from storage.models import (
    Agency,
    AuditEntry,
    Official,
    PeriodicReport,
    Procedure,
    Response,
    SurveyLedger,
)
from storage.stats import Thresholds, wilson
from tests.adminseed import Batch, release, seed
from tests.children import child_env
from tests.processes import SURVEYBOT

Q4 = reports.parse_period("2026-Q4")
AFTER_Q4 = dt.datetime(2027, 1, 20, tzinfo=dt.UTC)
EVERY_REPORT = [("", "2026"), ("", "2026-Q4"), ("ubnd-test", "2026"), ("ubnd-test", "2026-Q4")]
OCT, NOV, DEC = dt.date(2026, 10, 15), dt.date(2026, 11, 12), dt.date(2026, 12, 9)


async def seed_quarter(runtime: Runtime) -> None:
    """Three months of ratings; CB02 has only 3 in November, so that month withholds it (and
    the 8 ratings of no official beside it, so the withheld pair holds k)."""
    await seed(
        runtime,
        "ubnd-test",
        [
            Batch(14, "CB01", satisfaction=5, day=OCT),
            Batch(2, "CB01", satisfaction=1, day=OCT),
            Batch(11, "CB02", satisfaction=4, day=OCT),
            Batch(12, "CB01", satisfaction=5, day=NOV),
            Batch(3, "CB02", satisfaction=1, day=NOV),
            Batch(8, None, satisfaction=4, day=NOV),
            Batch(10, "CB01", satisfaction=2, day=DEC),
            Batch(12, "CB02", satisfaction=5, day=DEC),
        ],
    )
    assert await release(runtime, AFTER_Q4) == ["2026-10", "2026-11", "2026-12"]


async def released_cells(runtime: Runtime, scope: str, level: str) -> dict[str, list[dict]]:
    """Each unit's released cells over the quarter, read straight from the releases."""
    infos = reports.inside(await releases.list_releases(runtime.sessions), Q4)
    docs = await releases.documents(runtime.sessions, [r.id for r in infos], [scope])
    cells: dict[str, list[dict]] = {}
    for doc in (docs[(r.id, scope)] for r in infos if (r.id, scope) in docs):
        for cell in doc[level] if level != "total" else [doc["total"]]:
            cells.setdefault(cell["key"], []).append(cell)
    return cells


def sheet_rows(data: bytes, sheet: str) -> list[tuple[Any, ...]]:
    workbook = load_workbook(io.BytesIO(data), read_only=True)
    return list(workbook[sheet].iter_rows(values_only=True))


async def stored_files(runtime: Runtime, report: report_store.StoredReport) -> tuple[bytes, bytes]:
    xlsx = await report_store.file(runtime.sessions, report.id, "xlsx", None)
    pdf = await report_store.file(runtime.sessions, report.id, "pdf", None)
    assert xlsx and pdf
    return xlsx[1], pdf[1]


async def test_the_quarters_xlsx_sums_the_released_months(runtime: Runtime, agency: Agency) -> None:
    await seed_quarter(runtime)
    report, created = await report_store.generate(
        runtime.sessions, agency.id, Q4, Thresholds(), "request"
    )
    assert created and report.releases == ["2026-10", "2026-11", "2026-12"] and report.complete
    xlsx, _ = await stored_files(runtime, report)

    released = await released_cells(runtime, agency.id, "officials")
    cb01 = released["CB01"]
    assert len(cb01) == 3 and all(c["suppressed"] is None for c in cb01)
    rated = sum(c["rated"] for c in cb01)
    satisfied = sum(c["satisfied"] for c in cb01)
    header, *rows = sheet_rows(xlsx, "Xếp hạng")
    by_code = {row[1]: dict(zip(header, row, strict=True)) for row in rows}
    first = by_code["CB01"]
    assert first["Số phiếu"] == sum(c["responses"] for c in cb01) == 38
    assert (first["Số đánh giá"], first["Hài lòng"]) == (rated, satisfied) == (38, 26)
    assert first["Tỷ lệ hài lòng (%)"] == round(100 * satisfied / rated, 1)
    low, high = wilson(satisfied, rated)
    assert first["Khoảng tin cậy 95% từ (%)"] == round(low, 1)
    assert first["Khoảng tin cậy 95% đến (%)"] == round(high, 1)
    assert first["Hạng"] == 1 and first["Xếp loại"] == "Trung bình"
    # CB02 was withheld in November: the quarter withholds it too, and says where.
    second = by_code["CB02"]
    assert second["Số phiếu"] is None and second["Tỷ lệ hài lòng (%)"] is None
    assert "2026-11" in second["Ghi chú"] and second["Hạng"] is None

    trend = sheet_rows(xlsx, "Xu hướng")[1:]
    totals = await released_cells(runtime, agency.id, "total")
    assert [r[0] for r in trend] == ["2026-10", "2026-11", "2026-12"]
    assert [r[1] for r in trend] == [c["responses"] for c in totals["ubnd-test"]]
    summary = {row[0]: row[1] for row in sheet_rows(xlsx, "Tổng hợp") if row and row[0]}
    assert summary["Số phiếu"] == sum(c["responses"] for c in totals["ubnd-test"]) == 72
    assert summary["Kỳ báo cáo"] == "Quý IV năm 2026"


async def test_the_pdf_reads_in_vietnamese_with_its_diacritics(
    runtime: Runtime, agency: Agency
) -> None:
    await seed_quarter(runtime)
    report, _ = await report_store.generate(
        runtime.sessions, agency.id, Q4, Thresholds(), "request"
    )
    _, pdf = await stored_files(runtime, report)
    reader = PdfReader(io.BytesIO(pdf))
    words = unicodedata.normalize("NFC", "\n".join(p.extract_text() for p in reader.pages))
    for expected in (
        "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
        "Độc lập - Tự do - Hạnh phúc",
        "BÁO CÁO KẾT QUẢ ĐÁNH GIÁ SỰ HÀI LÒNG",
        "của người dân, tổ chức đối với việc giải quyết thủ tục hành chính",
        "Quý IV năm 2026",
        "UBND PHƯỜNG THỬ NGHIỆM",
        "Nguyễn Văn A",
        "Xếp hạng cán bộ, công chức",
        "Đăng ký khai sinh",
        "Độ phủ khảo sát",
    ):
        assert expected in words, expected
    fonts = {
        str(font.get_object()["/BaseFont"])
        for page in reader.pages
        for font in page["/Resources"]["/Font"].values()  # type: ignore[index]
    }
    assert fonts and all("DejaVuSans" in name for name in fonts)  # embedded, not a base font


async def test_a_report_reveals_nothing_the_releases_did_not(
    runtime: Runtime, agency: Agency
) -> None:
    """Built from the releases alone: live rows changed afterwards change nothing, and a unit
    the releases withheld in a month shows no figure even though its live quarter has 35."""
    await seed_quarter(runtime)
    before = reports.build(await reports.source(runtime.sessions, agency.id, Q4), Thresholds())
    # Late answers in the released months, an erasure, and the ledger gone.
    await seed(runtime, "ubnd-test", [Batch(9, "CB02", satisfaction=1, day=NOV)])
    async with runtime.sessions() as session:
        victim = await session.scalar(select(Response.id).limit(1))
        await session.execute(delete(Response).where(Response.id == victim))
        await session.execute(delete(SurveyLedger))
        await session.commit()
    after = reports.build(await reports.source(runtime.sessions, agency.id, Q4), Thresholds())
    assert after == before
    cb02 = next(r for r in after.ranking if r.cell.key == "CB02")
    assert cb02.withheld_in == ["2026-11"] and cb02.cell.rate is None and cb02.cell.rated == 0
    report, _ = await report_store.generate(
        runtime.sessions, agency.id, Q4, Thresholds(), "request"
    )
    xlsx, _ = await stored_files(runtime, report)
    _, *rows = sheet_rows(xlsx, "Xếp hạng")
    (cb02_row,) = [row for row in rows if row[1] == "CB02"]
    assert all(value is None for value in cb02_row[3:9])
    # Every count in the ranking is a sum of counts the releases published.
    released = await released_cells(runtime, agency.id, "officials")
    for row in rows:
        if row[3] is not None:
            assert row[3] == sum(c["responses"] for c in released[row[1]])


async def test_a_period_with_nothing_released_is_refused(runtime: Runtime, agency: Agency) -> None:
    with pytest.raises(reports.ReportError, match="2026-Q4"):
        await report_store.generate(runtime.sessions, agency.id, Q4, Thresholds(), "request")
    for label in ("2026-Q5", "26", "2026-Q", "x" * 40):
        with pytest.raises(reports.ReportError, match="2026-Q4 or a year as 2026"):
            reports.parse_period(label)


async def test_the_schedule_generates_each_closed_period_once(
    runtime: Runtime, agency: Agency
) -> None:
    await seed_quarter(runtime)
    first = await runtime.generate_reports(limit=1)  # a round renders a few, the next the rest
    made = first + await runtime.generate_reports()
    assert len(first) == 1
    # The province and the agency, for the quarter and the year that December's release closed.
    assert sorted((r.code, r.label) for r in made) == EVERY_REPORT
    assert all(r.trigger == "schedule" and r.complete for r in made)
    assert await runtime.generate_reports() == []
    async with runtime.sessions() as session:
        entries = (
            await session.scalars(select(AuditEntry).where(AuditEntry.action == "report.generate"))
        ).all()
    assert sorted((e.detail["scope"], e.detail["period"]) for e in entries) == [
        ("*", "2026"),
        ("*", "2026-Q4"),
        ("ubnd-test", "2026"),
        ("ubnd-test", "2026-Q4"),
    ]


async def test_two_processes_racing_generate_each_report_once(
    runtime: Runtime, agency: Agency, database_url: str, tmp_path: Path
) -> None:
    await seed_quarter(runtime)
    env = child_env(database_url, tmp_path)
    command = (str(SURVEYBOT), "report", "generate")
    racers = [
        await asyncio.create_subprocess_exec(
            *command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for _ in range(2)
    ]
    async with asyncio.timeout(120):
        outputs = [(await racer.communicate())[0].decode() for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], outputs
    async with runtime.sessions() as session:
        rows = (await session.execute(select(PeriodicReport.code, PeriodicReport.label))).all()
        generated = await session.scalar(
            select(func.count()).where(AuditEntry.action == "report.generate")
        )
    assert sorted(rows) == EVERY_REPORT
    assert generated == 4  # one audited generation per report, whichever process stored it


async def test_an_open_quarters_report_is_provisional_until_its_last_release(
    runtime: Runtime, agency: Agency
) -> None:
    await seed(runtime, "ubnd-test", [Batch(12, "CB01", day=OCT), Batch(11, "CB01", day=NOV)])
    assert await release(runtime, dt.datetime(2026, 12, 20, tzinfo=dt.UTC)) == [
        "2026-10",
        "2026-11",
    ]
    early, created = await report_store.generate(
        runtime.sessions, agency.id, Q4, Thresholds(), "request"
    )
    assert created and not early.complete and early.releases == ["2026-10", "2026-11"]
    assert await report_store.generate(
        runtime.sessions, agency.id, Q4, Thresholds(), "request"
    ) == (early, False)  # nothing new released: the stored one
    assert await runtime.generate_reports() == []  # the schedule waits for the quarter to close
    await release(runtime, AFTER_Q4)
    final = {(r.code, r.label): r for r in await runtime.generate_reports()}
    closed = final[("ubnd-test", "2026-Q4")]
    assert closed.complete and closed.releases == ["2026-10", "2026-11", "2026-12"]
    listed = await report_store.listed(runtime.sessions, agency.id)
    # Newest first: the closed quarter and year, then the provisional quarter kept as it was.
    assert [(r.label, r.complete) for r in listed] == [
        ("2026-Q4", True),
        ("2026", True),
        ("2026-Q4", False),
    ]


async def test_a_missing_font_is_named_with_the_package_that_brings_it(
    runtime: Runtime, agency: Agency, tmp_path: Path
) -> None:
    await seed_quarter(runtime)
    with pytest.raises(report_pdf.FontMissing, match="fonts-dejavu-core"):
        await report_store.generate(
            runtime.sessions, agency.id, Q4, Thresholds(), "request", tmp_path / "none.ttf"
        )
    assert await report_store.listed(runtime.sessions, None) == []  # nothing half-stored


async def test_the_province_year_ranks_agencies_and_sums_coverage_and_criteria(
    runtime: Runtime, agency: Agency
) -> None:
    await seed_quarter(runtime)
    year = reports.parse_period("2026")
    report, _ = await report_store.generate(
        runtime.sessions, releases.PROVINCE, year, Thresholds(), "request"
    )
    xlsx, _ = await stored_files(runtime, report)
    infos = reports.inside(await releases.list_releases(runtime.sessions), year)
    docs = await releases.documents(runtime.sessions, [r.id for r in infos], None)
    agency_docs = [docs[(r.id, agency.id)] for r in infos]

    header, *rows = sheet_rows(xlsx, "Xếp hạng")
    (ranked,) = [dict(zip(header, row, strict=True)) for row in rows]
    assert ranked["Mã"] == "ubnd-test" and ranked["Hạng"] == 1
    assert ranked["Số đánh giá"] == sum(d["total"]["rated"] for d in agency_docs) == 72
    # A year's trend is its four quarters, each the sum of its releases (Q1-Q3 had none).
    trend = sheet_rows(xlsx, "Xu hướng")[1:]
    assert [(r[0], r[1]) for r in trend] == [
        ("2026-Q1", 0),
        ("2026-Q2", 0),
        ("2026-Q3", 0),
        ("2026-Q4", 72),
    ]
    # Coverage and criteria are the agency's released rows summed (weighted by their counts).
    agency_report = reports.build(
        await reports.source(runtime.sessions, agency.id, year), Thresholds()
    )
    everything = agency_report.coverage[0]
    assert everything.channel == "*" and everything.counts is not None
    released = [row for d in agency_docs for row in d["coverage"] if row["channel"] == "*"]
    assert everything.counts["reported"] == sum(r["reported"] for r in released) == 72
    assert everything.counts["answered"] == sum(r["answered"] for r in released)
    c3 = next(c for c in agency_report.criteria if c.criterion == "3")
    monthly = [c for d in agency_docs for c in d["criteria"] if c["criterion"] == "3"]
    assert all(not c["suppressed"] for c in monthly)
    assert c3.scored == sum(c["scored"] for c in monthly)
    weighted = sum(c["zero_share"] * c["scored"] for c in monthly) / sum(
        c["scored"] for c in monthly
    )
    assert c3.zero_share == pytest.approx(weighted)


# ------------------------------------------------------------------------------ sub-units
DISTRICT, BEN_NGHE, DA_KAO = "quan-mot", "phuong-ben-nghe", "phuong-da-kao"


async def seed_district(runtime: Runtime, da_kao_in_november: int = 11) -> dict[str, str]:
    """A district (12 ratings of its own a month, CB31) over two wards: Bến Nghé (CB11,
    CB12: 38 ratings, 36 satisfied) and Đa Kao (CB21: 11, ``da_kao_in_november`` and 12, every
    one satisfied). Returns each unit's id by code."""
    district = await units.create_unit(
        runtime.sessions, DISTRICT, "UBND quận Một", "district", None
    )
    ids = {DISTRICT: district.id}
    for code, name in ((BEN_NGHE, "UBND phường Bến Nghé"), (DA_KAO, "UBND phường Đa Kao")):
        ward = await units.create_unit(runtime.sessions, code, name, "commune", district.id)
        ids[code] = ward.id
    async with runtime.sessions() as session:
        for unit, code, name in (
            (BEN_NGHE, "CB11", "Lê Thị Hằng"),
            (BEN_NGHE, "CB12", "Phạm Quốc Dũng"),
            (DA_KAO, "CB21", "Võ Thị Ánh Tuyết"),
            (DISTRICT, "CB31", "Đặng Hữu Phước"),
        ):
            session.add(Official(agency_id=ids[unit], code=code, name=name))
        session.add(Procedure(code="1.001234", name="Đăng ký khai sinh"))
        await session.commit()
    await seed(
        runtime,
        BEN_NGHE,
        [
            Batch(14, "CB11", satisfaction=5, day=OCT),
            Batch(2, "CB11", satisfaction=1, day=OCT),
            Batch(12, "CB11", satisfaction=5, day=NOV),
            Batch(10, "CB12", satisfaction=4, day=DEC),
        ],
    )
    da_kao_november = 5 if da_kao_in_november >= 10 else 1
    await seed(
        runtime,
        DA_KAO,
        [
            Batch(11, "CB21", satisfaction=4, day=OCT),
            Batch(da_kao_in_november, "CB21", satisfaction=da_kao_november, day=NOV),
            Batch(12, "CB21", satisfaction=5, day=DEC),
        ],
    )
    await seed(
        runtime,
        DISTRICT,
        [
            Batch(12, "CB31", satisfaction=5, day=OCT),
            Batch(12, "CB31", satisfaction=4, day=NOV),
            Batch(12, "CB31", satisfaction=4, day=DEC),
        ],
    )
    assert await release(runtime, AFTER_Q4) == ["2026-10", "2026-11", "2026-12"]
    return ids


async def labelled_cells(
    runtime: Runtime, scope: str, level: str
) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Each unit's released cells over the quarter with their release's label."""
    infos = reports.inside(await releases.list_releases(runtime.sessions), Q4)
    docs = await releases.documents(runtime.sessions, [r.id for r in infos], [scope])
    cells: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for info in infos:
        doc = docs.get((info.id, scope))
        for cell in (
            (doc or {}).get(level, []) if level != "total" else [doc["total"]] if doc else []
        ):
            cells.setdefault(cell["key"], []).append((info.label, cell))
    return cells


async def own_totals(runtime: Runtime, unit_id: str) -> list[dict[str, Any]]:
    """A unit's own released totals over the quarter, read straight from its documents."""
    return [
        c for cells in (await labelled_cells(runtime, unit_id, "total")).values() for _, c in cells
    ]


async def test_a_districts_quarter_ranks_its_wards_and_lists_their_officials(
    runtime: Runtime,
) -> None:
    ids = await seed_district(runtime)
    report, _ = await report_store.generate(
        runtime.sessions, ids[DISTRICT], Q4, Thresholds(), "request"
    )
    xlsx, pdf = await stored_files(runtime, report)

    header, *rows = sheet_rows(xlsx, "Đơn vị trực thuộc")
    wards = [dict(zip(header, row, strict=True)) for row in rows]
    # Both wards, each its own subtree's total, ranked by the Wilson lower bound: 34 of 34
    # satisfied before 36 of 38.
    assert [(w["Mã"], w["Hạng"], w["Loại đơn vị"]) for w in wards] == [
        (DA_KAO, 1, "Xã, phường"),
        (BEN_NGHE, 2, "Xã, phường"),
    ]
    assert [(w["Số đánh giá"], w["Hài lòng"]) for w in wards] == [(34, 34), (38, 36)]
    summary = {row[0]: row[1] for row in sheet_rows(xlsx, "Tổng hợp") if row and row[0]}
    assert summary["Số phiếu"] == 34 + 38 + 36  # the district's total is its subtree's

    # The officials of the whole subtree, each under its unit; the district's own too.
    header, *rows = sheet_rows(xlsx, "Xếp hạng")
    officials = {row[1]: dict(zip(header, row, strict=True)) for row in rows}
    assert {code: o["Đơn vị"] for code, o in officials.items() if code != "-"} == {
        "CB11": "UBND phường Bến Nghé",
        "CB12": "UBND phường Bến Nghé",
        "CB21": "UBND phường Đa Kao",
        "CB31": "UBND quận Một",
    }
    assert officials["CB11"]["Số đánh giá"] == 28 and officials["CB21"]["Số đánh giá"] == 34
    header, *rows = sheet_rows(xlsx, "Thủ tục")
    assert sorted(row[header.index("Đơn vị")] for row in rows) == [
        "UBND phường Bến Nghé",
        "UBND phường Đa Kao",
        "UBND quận Một",
    ]

    # Coverage and criteria are the subtree's too, like the total: 108 results reported.
    coverage = {row[0]: row for row in sheet_rows(xlsx, "Độ phủ")[1:]}
    assert coverage["Toàn đơn vị, gồm đơn vị trực thuộc"][1] == 34 + 38 + 36
    assert coverage["Tất cả kênh (riêng đơn vị)"][1] == 36
    criteria = {row[0]: row for row in sheet_rows(xlsx, "Tiêu chí")[1:]}
    assert criteria["Chỉ số 3"][1] == 34 + 38 + 36

    words = unicodedata.normalize(
        "NFC", "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
    )
    for expected in (
        "UBND QUẬN MỘT",
        "III. Xếp hạng đơn vị trực thuộc",
        "UBND phường Bến Nghé",
        "UBND phường Đa Kao",
        "IV. Xếp hạng cán bộ, công chức",
        "Võ Thị Ánh Tuyết",
        "Đặng Hữu Phước",
        "VIII. Các chỉ số theo Thông tư 01/2018",
    ):
        assert expected in words, expected

    # The province ranks its units within their kind too, and counts each rating once in its
    # bands: the wards, not the district that sums them.
    province = reports.build(
        await reports.source(runtime.sessions, releases.PROVINCE, Q4), Thresholds()
    )
    assert [(r.kind, r.cell.key, r.cell.rank) for r in province.ranking] == [
        ("district", DISTRICT, 1),
        ("commune", DA_KAO, 1),
        ("commune", BEN_NGHE, 2),
    ]
    assert sum(province.bands.values()) == 2

    # A ward's own report has no sub-unit section and no unit column: it is what it was.
    ward, _ = await report_store.generate(runtime.sessions, ids[DA_KAO], Q4, Thresholds(), "x")
    ward_xlsx, ward_pdf = await stored_files(runtime, ward)
    assert "Đơn vị trực thuộc" not in load_workbook(io.BytesIO(ward_xlsx)).sheetnames
    assert "Đơn vị" not in sheet_rows(ward_xlsx, "Xếp hạng")[0]
    ward_words = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(ward_pdf)).pages)
    assert "trực thuộc" not in unicodedata.normalize("NFC", ward_words)


async def test_a_ward_withheld_in_a_month_stays_withheld_in_the_districts_quarter(
    runtime: Runtime,
) -> None:
    ids = await seed_district(runtime, da_kao_in_november=3)
    district = reports.build(
        await reports.source(runtime.sessions, ids[DISTRICT], Q4), Thresholds()
    )
    da_kao = next(r for r in district.units if r.cell.key == DA_KAO)
    assert da_kao.withheld_in == ["2026-11"] and da_kao.cell.rated == 0
    assert da_kao.cell.rank is None and da_kao.cell.rate is None
    cb21 = next(r for r in district.ranking if r.cell.key == "CB21")
    assert cb21.withheld_in == ["2026-11"] and cb21.unit == "UBND phường Đa Kao"

    report, _ = await report_store.generate(
        runtime.sessions, ids[DISTRICT], Q4, Thresholds(), "request"
    )
    xlsx, pdf = await stored_files(runtime, report)
    header, *rows = sheet_rows(xlsx, "Đơn vị trực thuộc")
    (row,) = [dict(zip(header, r, strict=True)) for r in rows if r[2] == DA_KAO]
    assert row["Số phiếu"] is None and row["Tỷ lệ hài lòng (%)"] is None and row["Hạng"] is None
    assert row["Ghi chú"] == "Không công bố: chưa đủ số đánh giá trong kỳ 2026-11"
    words = unicodedata.normalize(
        "NFC", "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
    )
    assert "UBND phường Đa Kao" in words and "2026-11" in words


async def test_a_districts_figures_for_a_ward_are_the_wards_own_released_figures(
    runtime: Runtime,
) -> None:
    """The adversary compares the district's report with each ward's releases: every figure
    the district shows of a ward is a sum of that ward's own released figures, a ward the
    releases withheld in a month has none, and live rows added afterwards change nothing."""
    ids = await seed_district(runtime, da_kao_in_november=3)
    before = reports.build(await reports.source(runtime.sessions, ids[DISTRICT], Q4), Thresholds())
    await seed(runtime, DA_KAO, [Batch(9, "CB21", satisfaction=1, day=NOV)])  # late answers
    district = reports.build(
        await reports.source(runtime.sessions, ids[DISTRICT], Q4), Thresholds()
    )
    assert district == before
    assert {r.cell.key for r in district.units} == {BEN_NGHE, DA_KAO}
    for row in district.units:
        released = await own_totals(runtime, ids[row.cell.key])
        withheld = [c for c in released if c["suppressed"]]
        if withheld:
            assert row.withheld_in and not row.cell.shown
            continue
        for name, attribute in (("responses", "responses"), ("rated", "rated")):
            assert getattr(row.cell, attribute) == sum(c[name] for c in released)
        assert row.cell.satisfied == sum(c["satisfied"] for c in released)
        # The ward's own report says the same.
        own = reports.build(
            await reports.source(runtime.sessions, ids[row.cell.key], Q4), Thresholds()
        )
        assert (own.total.cell.rated, own.total.cell.satisfied) == (
            row.cell.rated,
            row.cell.satisfied,
        )
    # Every official the district lists is a sum of that official's released cells in its
    # unit, or withheld in exactly the releases that withheld it there.
    for row in district.ranking:
        cells = (await labelled_cells(runtime, ids[row.cell.parent], "officials"))[row.cell.key]
        assert row.withheld_in == [label for label, c in cells if c["suppressed"]]
        if row.cell.shown:
            assert row.cell.rated == sum(c["rated"] for _, c in cells)
    assert any(row.withheld_in == ["2026-11"] for row in district.ranking)
