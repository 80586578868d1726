"""A periodic report as an XLSX workbook (openpyxl): one sheet per table of the report.

Figures are written as numbers (a withheld one as an empty cell with its note), so an office can
re-total them; every text cell goes through ``storage.cells.clean`` like every export, so a unit
named "=HYPERLINK(…)" stays text.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font
from openpyxl.worksheet.worksheet import Worksheet

from storage import report_text as text
from storage.cells import clean
from storage.reports import NOT_ENOUGH, Report, Row

BOLD = Font(bold=True)


def _pct(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def unit_row(row: Row) -> list[Any]:
    """The numbers of one ranked unit, in ``report_text.UNIT_HEADER``'s order."""
    c = row.cell
    shown = c.shown
    return [
        c.rank,
        c.key,
        c.label,
        c.responses if shown else None,
        c.rated if shown else None,
        c.satisfied if shown else None,
        _pct(c.rate),
        _pct(c.low),
        _pct(c.high),
        c.band if shown else NOT_ENOUGH,
        c.avg_score,
        text.withheld_note(row.withheld_in),
    ]


def unit_header(report: Report) -> list[str]:
    """The officials' and procedures' header: with their unit's name when the report spans
    sub-units."""
    if not report.units:
        return list(text.UNIT_HEADER)
    return [*text.UNIT_HEADER[:3], text.UNIT_COLUMN, *text.UNIT_HEADER[3:]]


def member_row(report: Report, row: Row) -> list[Any]:
    """An official's or a procedure's row in ``unit_header``'s order."""
    values = unit_row(row)
    return [*values[:3], row.unit, *values[3:]] if report.units else values


def kind_rows(rows: Sequence[Row]) -> list[list[Any]]:
    """Units ranked within their kind, each row led by the kind's name."""
    return [[text.kind_name(r.kind), *unit_row(r)] for r in rows]


def _sheet(
    wb: Workbook, title: str, header: Sequence[str] | None, rows: Sequence[Sequence[Any]]
) -> Worksheet:
    ws = wb.create_sheet(title)
    if header is not None:
        ws.append([clean(h) for h in header])
        for cell in ws[1]:
            cell.font = BOLD
            cell.alignment = Alignment(wrap_text=True, vertical="top")
    for row in rows:
        ws.append([clean(v) for v in row])
    _widths(ws)
    return ws


def _widths(ws: Worksheet) -> None:
    for column in ws.columns:
        longest = max((len(str(c.value)) for c in column if c.value is not None), default=4)
        ws.column_dimensions[column[0].column_letter].width = min(max(longest + 2, 8), 48)


def summary_rows(report: Report) -> list[list[Any]]:
    """The first sheet: what the report covers, the unit's total, its bands and levels."""
    total = report.total.cell
    rule = report.rule
    rows: list[list[Any]] = [
        [text.TITLE],
        [text.SUBTITLE],
        ["Đơn vị", report.name or text.PROVINCE_NAME],
        ["Mã đơn vị", report.code or "-"],
        ["Kỳ báo cáo", text.period_name(report.period)],
        ["Từ ngày", report.period.starts_on.isoformat()],
        ["Đến ngày", report.period.ends_on.isoformat()],
        ["Các kỳ công bố đã cộng", ", ".join(report.releases)],
        ["Số ngày có số liệu công bố", report.days_covered],
        ["Số ngày của kỳ", report.period.days],
        ["Kỳ đã khép lại", "Có" if report.complete else "Chưa (số liệu tạm)"],
        [
            "Ngưỡng công bố (k nhóm / k cán bộ)",
            f"{rule.get('k_group', '?')} / {rule.get('k_official', '?')}",
        ],
        [],
        ["Kết quả chung"],
        ["Số phiếu", total.responses if total.shown else None],
        ["Số đánh giá", total.rated if total.shown else None],
        ["Số hài lòng", total.satisfied if total.shown else None],
        ["Tỷ lệ hài lòng (%)", _pct(total.rate)],
        ["Khoảng tin cậy 95% từ (%)", _pct(total.low)],
        ["Khoảng tin cậy 95% đến (%)", _pct(total.high)],
        ["Xếp loại", total.band],
        ["Điểm trung bình (Thông tư 01/2018)", total.avg_score],
        ["Trên tổng điểm", total.avg_maximum],
        ["Ghi chú", text.withheld_note(report.total.withheld_in)],
        [],
        ["Mức độ hài lòng", "Số đánh giá"],
    ]
    for level, name in text.LEVEL_NAMES.items():
        rows.append([name, None if report.levels is None else report.levels.get(level, 0)])
    if report.levels is None:
        rows.append(["Ghi chú", text.withheld_note(report.levels_withheld_in)])
    rows += [[], ["Xếp loại theo Thông tư 01/2018", "Số phiếu"]]
    for name, count in (report.classes or {}).items():
        rows.append([name, count])
    if report.classes is None:
        rows.append(["Ghi chú", text.withheld_note(report.classes_withheld_in)])
    ranked_level = report.ranking_level
    rows += [[], [f"Xếp loại {text.LEVELS[ranked_level].lower()}", text.COUNTED[ranked_level]]]
    rows += [[band, count] for band, count in report.bands.items()]
    return rows


def write(report: Report) -> bytes:
    """The workbook's bytes."""
    wb = Workbook()
    first = wb.active
    assert first is not None
    wb.remove(first)
    for cell in _sheet(wb, "Tổng hợp", None, summary_rows(report))["A"]:
        cell.font = BOLD
    if report.ranking_level == "agency":
        _sheet(wb, "Xếp hạng", [text.KIND_COLUMN, *text.UNIT_HEADER], kind_rows(report.ranking))
    else:
        ranking = [member_row(report, r) for r in report.ranking]
        _sheet(wb, "Xếp hạng", unit_header(report), ranking)
    if report.units:
        _sheet(
            wb, "Đơn vị trực thuộc", [text.KIND_COLUMN, *text.UNIT_HEADER], kind_rows(report.units)
        )
    if report.procedures:
        procedures = [member_row(report, r) for r in report.procedures]
        _sheet(wb, "Thủ tục", unit_header(report), procedures)
    _sheet(wb, "Xu hướng", ["Kỳ", *text.UNIT_HEADER[3:]], [unit_row(r)[2:] for r in report.trend])
    _sheet(
        wb,
        "Độ phủ",
        text.COVERAGE_HEADER,
        [
            [
                text.channel_name(c.channel, bool(report.units)),
                *(
                    [c.counts[n] for n in ("reported", "sent", "delivered", "answered", "capped")]
                    if c.counts
                    else [None] * 5
                ),
                _pct(c.response_rate),
                text.withheld_note(c.withheld_in),
            ]
            for c in report.coverage
        ],
    )
    _sheet(
        wb,
        "Tiêu chí",
        text.CRITERIA_HEADER,
        [
            [
                f"Chỉ số {c.criterion}",
                c.scored,
                c.mean_points,
                _pct(c.zero_share),
                _pct(c.zero_share_dissatisfied),
                c.dissatisfied,
                text.withheld_note(c.withheld_in),
            ]
            for c in report.criteria
        ],
    )
    buffer = io.BytesIO()
    wb.save(buffer)
    return buffer.getvalue()
