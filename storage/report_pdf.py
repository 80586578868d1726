"""A periodic report as a PDF (fpdf2) in the shape a People's Committee office files: the
national heading, the title and period, then scope and sources, the overall result, the sub-units
ranked within their kind (a unit with sub-units), the ranking,
satisfaction bands, the trend, survey coverage and the Circular 01/2018 criteria.

Vietnamese needs a font that has its every letter: the TrueType font given (DejaVu Sans by
default, Debian's ``fonts-dejavu-core``, Bitstream Vera licence, 100% Vietnamese coverage) is
embedded, subset to the glyphs used, so the file reads the same on any machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from fpdf.fonts import FontFace

from storage import report_text as text
from storage.report_xlsx import unit_row
from storage.reports import Report, Row

#: Debian's fonts-dejavu-core (scripts/test and the Dockerfile install it).
DEFAULT_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
FAMILY = "report"


class FontMissing(RuntimeError):
    """The report font is not installed: say which file and which package brings it."""


def _bold_of(regular: Path) -> Path:
    """DejaVuSans.ttf → DejaVuSans-Bold.ttf beside it (the regular one when there is none)."""
    bold = regular.with_name(f"{regular.stem}-Bold{regular.suffix}")
    return bold if bold.exists() else regular


class _Document(FPDF):
    def __init__(self, font: Path, footer_text: str) -> None:
        super().__init__(orientation="landscape", format="A4")
        if not font.exists():
            raise FontMissing(
                f"report font {font} not found: install Debian's fonts-dejavu-core, or set "
                "SURVEYBOT_REPORT_FONT to a TrueType font with Vietnamese"
            )
        self.add_font(FAMILY, "", str(font))
        self.add_font(FAMILY, "B", str(_bold_of(font)))
        self.footer_text = footer_text
        self.set_auto_page_break(auto=True, margin=14)
        self.set_margins(14, 12, 14)

    def footer(self) -> None:
        self.set_y(-10)
        self.set_font(FAMILY, "", 7)
        self.cell(0, 5, f"{self.footer_text} · Trang {self.page_no()}/{{nb}}", align="C")


def _line(pdf: FPDF, words: str, size: float = 10, style: str = "", align: str = "L") -> None:
    pdf.set_font(FAMILY, style, size)
    pdf.multi_cell(0, size * 0.5, words, align=align, new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _heading(pdf: FPDF, words: str) -> None:
    pdf.ln(3)
    _line(pdf, words, 11, "B")
    pdf.ln(1)


def _cells(values: Sequence[object]) -> list[str]:
    out = []
    for v in values:
        if v is None:
            out.append("–")
        elif isinstance(v, float):
            out.append(text.number(v, 1))
        elif isinstance(v, int):
            out.append(text.number(v, 0))
        else:
            out.append(str(v))
    return out


def _table(
    pdf: FPDF, header: Sequence[str], rows: Sequence[Sequence[object]], widths: Sequence[float]
) -> None:
    if not rows:
        _line(pdf, "Không có số liệu công bố trong kỳ.", 9)
        return
    pdf.set_font(FAMILY, "", 8)
    with pdf.table(
        col_widths=tuple(widths),
        width=min(sum(widths), pdf.epw),
        align="LEFT",
        text_align="LEFT",
        headings_style=FontFace(family=FAMILY, emphasis="BOLD", fill_color=(230, 230, 230)),
        line_height=4.2,
        first_row_as_headings=True,
    ) as table:
        head = table.row()
        for h in header:
            head.cell(h)
        for values in rows:
            row = table.row()
            for value in _cells(values):
                row.cell(value)
    pdf.set_font(FAMILY, "", 8)


def _units(pdf: FPDF, rows: list[Row], with_unit: bool = False) -> None:
    """A ranked table; ``with_unit``: each row also names its unit (a subtree's officials)."""
    header = [*text.UNIT_HEADER[:7], "Khoảng tin cậy 95% (%)", *text.UNIT_HEADER[9:]]
    body = []
    for row in rows:
        values = unit_row(row)
        low, high = values[7], values[8]
        interval = "–" if low is None else f"{text.number(low)} – {text.number(high)}"
        body.append([*values[:7], interval, *values[9:]])
    if not with_unit:
        _table(pdf, header, body, (12, 20, 46, 14, 16, 14, 18, 26, 18, 18, 51))
        return
    header = [*header[:3], text.UNIT_COLUMN, *header[3:]]
    body = [[*values[:3], row.unit, *values[3:]] for row, values in zip(rows, body, strict=True)]
    _table(pdf, header, body, (12, 20, 36, 36, 13, 15, 13, 16, 24, 16, 20, 32))


def _by_kind(pdf: FPDF, rows: list[Row]) -> None:
    """Units ranked within their kind: one table per kind, top down, under the kind's name."""
    kinds = list(dict.fromkeys(r.kind for r in rows))
    if not kinds:
        _units(pdf, rows)
    for kind in kinds:
        if len(kinds) > 1:
            _line(pdf, text.kind_name(kind), 10, "B")
            pdf.ln(1)
        _units(pdf, [r for r in rows if r.kind == kind])
        pdf.ln(2)


class _Numbering:
    """The sections' Roman numerals: a report with sub-units has one section more."""

    NUMERALS = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X")

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, title: str) -> str:
        self.count += 1
        return f"{self.NUMERALS[self.count - 1]}. {title}"


def write(report: Report, font: Path = DEFAULT_FONT) -> bytes:
    """The PDF's bytes."""
    unit = report.name or text.PROVINCE_NAME
    period = text.period_name(report.period)
    pdf = _Document(font, f"{text.TITLE.capitalize()} · {unit} · {period}")
    pdf.alias_nb_pages()
    pdf.add_page()
    top = pdf.get_y()
    pdf.set_font(FAMILY, "B", 10)
    pdf.multi_cell(110, 5, unit.upper(), align="C")
    pdf.set_xy(150, top)
    pdf.multi_cell(130, 5, f"{text.NATION}\n{text.MOTTO}", align="C")
    pdf.ln(6)
    _line(pdf, text.TITLE, 14, "B", "C")
    _line(pdf, text.SUBTITLE, 11, "", "C")
    _line(pdf, period, 11, "B", "C")
    pdf.ln(2)

    section = _Numbering()
    _heading(pdf, section("Phạm vi và nguồn số liệu"))
    rule = report.rule
    _line(
        pdf,
        f"Kỳ báo cáo từ {report.period.starts_on:%d/%m/%Y} đến {report.period.ends_on:%d/%m/%Y}. "
        f"Số liệu là tổng các kỳ đã công bố: {', '.join(report.releases)} "
        f"({report.days_covered}/{report.period.days} ngày"
        f"{'' if report.complete else ', kỳ chưa khép lại: số liệu tạm'}). "
        "Mỗi kỳ công bố được tính một lần sau khi kỳ kết thúc và không tính lại; số liệu của một "
        f"nhóm dưới {rule.get('k_group', report.k_group)} đánh giá (dưới "
        f"{rule.get('k_official', report.k_official)} với một cán bộ) không được công bố, và một "
        "đơn vị không được công bố trong một kỳ thì cũng không được công bố trong báo cáo này.",
        9,
    )

    _heading(pdf, section("Kết quả chung"))
    total = report.total.cell
    if total.shown and total.rated:
        _line(
            pdf,
            f"Số phiếu: {text.number(total.responses, 0)}; số đánh giá: "
            f"{text.number(total.rated, 0)}; hài lòng: {text.number(total.satisfied, 0)}. "
            f"Tỷ lệ hài lòng {text.number(total.rate)}% (khoảng tin cậy 95%: "
            f"{text.number(total.low)}% – {text.number(total.high)}%), xếp loại {total.band}."
            + (
                f" Điểm trung bình theo Thông tư 01/2018: {text.number(total.avg_score)}"
                f"/{text.number(total.avg_maximum)}."
                if total.avg_score is not None
                else ""
            ),
            9,
        )
    else:
        _line(pdf, text.withheld_note(report.total.withheld_in) or "Chưa có đánh giá.", 9)

    if report.units:
        _heading(pdf, section(text.SUBUNITS))
        _line(pdf, text.SUBUNITS_NOTE, 8)
        pdf.ln(1)
        _by_kind(pdf, report.units)

    _heading(pdf, section(f"Xếp hạng {text.LEVELS[report.ranking_level].lower()}"))
    if report.ranking_level == "agency":
        _by_kind(pdf, report.ranking)
    else:
        _units(pdf, report.ranking, with_unit=bool(report.units))
    if report.procedures:
        _heading(pdf, "Xếp hạng thủ tục hành chính")
        _units(pdf, report.procedures, with_unit=bool(report.units))

    _heading(pdf, section("Mức độ hài lòng và xếp loại"))
    levels = report.levels
    _table(
        pdf,
        ["Mức độ", "Số đánh giá"],
        [
            [name, None if levels is None else levels.get(level, 0)]
            for level, name in text.LEVEL_NAMES.items()
        ],
        (60, 30),
    )
    if levels is None:
        _line(pdf, text.withheld_note(report.levels_withheld_in), 8)
    pdf.ln(2)
    _table(
        pdf,
        ["Xếp loại (Quyết định 766)", text.COUNTED[report.ranking_level]],
        list(report.bands.items()),
        (60, 30),
    )
    if report.classes is not None:
        pdf.ln(2)
        _table(
            pdf, ["Xếp loại (Thông tư 01/2018)", "Số phiếu"], list(report.classes.items()), (60, 30)
        )

    _heading(pdf, section("Diễn biến qua các kỳ"))
    trend = []
    for row in report.trend:
        values = unit_row(row)
        low, high = values[7], values[8]
        interval = "–" if low is None else f"{text.number(low)} – {text.number(high)}"
        trend.append([values[2], *values[3:7], interval, values[9], values[10], values[11]])
    _table(
        pdf,
        ["Kỳ", *text.UNIT_HEADER[3:7], "Khoảng tin cậy 95% (%)", *text.UNIT_HEADER[9:]],
        trend,
        (24, 18, 20, 18, 22, 30, 20, 22, 80),
    )

    _heading(pdf, section("Độ phủ khảo sát"))
    _table(
        pdf,
        text.COVERAGE_HEADER,
        [
            [
                text.channel_name(c.channel, bool(report.units)),
                *(
                    [c.counts[n] for n in ("reported", "sent", "delivered", "answered", "capped")]
                    if c.counts
                    else [None] * 5
                ),
                c.response_rate,
                text.withheld_note(c.withheld_in),
            ]
            for c in report.coverage
        ],
        (30, 22, 22, 22, 22, 26, 22, 80),
    )

    _heading(pdf, section("Các chỉ số theo Thông tư 01/2018"))
    _table(
        pdf,
        text.CRITERIA_HEADER,
        [
            [
                f"Chỉ số {c.criterion}",
                c.scored,
                "–" if c.mean_points is None else text.number(c.mean_points, 2),
                c.zero_share,
                c.zero_share_dissatisfied,
                c.dissatisfied,
                text.withheld_note(c.withheld_in),
            ]
            for c in report.criteria
        ],
        (22, 24, 22, 24, 40, 24, 90),
    )
    return bytes(pdf.output())
