"""The words of a periodic report, in Vietnamese: the language the People's Committee office
files in. Shared by the XLSX and the PDF so both say the same thing.
"""

from __future__ import annotations

from storage.reports import ReportPeriod

ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV"}
TITLE = "BÁO CÁO KẾT QUẢ ĐÁNH GIÁ SỰ HÀI LÒNG"
SUBTITLE = "của người dân, tổ chức đối với việc giải quyết thủ tục hành chính"
NATION = "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM"
MOTTO = "Độc lập - Tự do - Hạnh phúc"
PROVINCE_NAME = "Toàn tỉnh"
WITHHELD = "Không công bố"
LEVEL_NAMES = {
    5: "Rất hài lòng",
    4: "Hài lòng",
    3: "Bình thường",
    2: "Không hài lòng",
    1: "Rất không hài lòng",
}
CHANNELS = {
    "*": "Tất cả kênh",
    "": "Chưa gửi được",
    "subtree": "Toàn đơn vị, gồm đơn vị trực thuộc",
}
#: The unit's own all-channel row, beside its whole subtree's (a report with sub-units).
OWN_CHANNELS = "Tất cả kênh (riêng đơn vị)"
LEVELS = {"agency": "Cơ quan, đơn vị", "official": "Cán bộ, công chức", "procedure": "Thủ tục"}
#: The kinds of unit (``storage.units.KINDS``), as the dashboard and the public page word them.
KIND_NAMES = {
    "province": "Tỉnh",
    "department": "Sở, ban, ngành",
    "district": "Quận, huyện",
    "commune": "Xã, phường",
    "desk": "Bộ phận một cửa",
}
SUBUNITS = "Xếp hạng đơn vị trực thuộc"
SUBUNITS_NOTE = (
    "Mỗi đơn vị trực thuộc gồm cả các đơn vị dưới nó; đơn vị được xếp hạng trong cùng loại."
)
#: The column naming an official's or a procedure's unit in a report of a unit with sub-units.
UNIT_COLUMN = "Đơn vị"
KIND_COLUMN = "Loại đơn vị"
#: What the bands table counts, by the ranking's level.
COUNTED = {"agency": "Số đơn vị", "official": "Số cán bộ", "procedure": "Số thủ tục"}
UNIT_HEADER = [
    "Hạng",
    "Mã",
    "Tên",
    "Số phiếu",
    "Số đánh giá",
    "Hài lòng",
    "Tỷ lệ hài lòng (%)",
    "Khoảng tin cậy 95% từ (%)",
    "Khoảng tin cậy 95% đến (%)",
    "Xếp loại",
    "Điểm TB (TT 01/2018)",
    "Ghi chú",
]
COVERAGE_HEADER = [
    "Kênh",
    "Hồ sơ đã báo",
    "Đã gửi mời",
    "Đã đến",
    "Đã trả lời",
    "Không mời (giới hạn)",
    "Tỷ lệ trả lời (%)",
    "Ghi chú",
]
CRITERIA_HEADER = [
    "Chỉ số",
    "Số phiếu chấm",
    "Điểm TB (0-2)",
    "Tỷ lệ 0 điểm (%)",
    "Tỷ lệ 0 điểm trong nhóm không hài lòng (%)",
    "Số không hài lòng",
    "Ghi chú",
]


def period_name(period: ReportPeriod) -> str:
    """ "Quý IV năm 2026" or "Năm 2026"."""
    if period.kind == "year":
        return f"Năm {period.starts_on.year}"
    quarter = (period.starts_on.month - 1) // 3 + 1
    return f"Quý {ROMAN[quarter]} năm {period.starts_on.year}"


def channel_name(channel: str, subtree: bool) -> str:
    """A coverage row's label; in a report with sub-units the unit's own rows say so."""
    if subtree and channel == "*":
        return OWN_CHANNELS
    return CHANNELS.get(channel, channel)


def kind_name(kind: str) -> str:
    return KIND_NAMES.get(kind, kind)


def withheld_note(labels: list[str]) -> str:
    """Why a figure is not shown: the releases that withheld it."""
    return f"{WITHHELD}: chưa đủ số đánh giá trong kỳ {', '.join(labels)}" if labels else ""


def number(value: float | None, digits: int = 1) -> str:
    """A figure as the report prints it: the Vietnamese decimal comma; "–" when withheld."""
    if value is None:
        return "–"
    if isinstance(value, int) or digits == 0:
        return f"{round(value):,}".replace(",", ".")
    text = f"{value:,.{digits}f}"
    return text.replace(",", " ").replace(".", ",").replace(" ", ".")
