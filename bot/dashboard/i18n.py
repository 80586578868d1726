"""Dashboard strings in Vietnamese (default) and English, and locale-aware number formatting.

The dashboard is read by provincial staff, so Vietnamese is the default and numbers use the
Vietnamese decimal comma; ``?lang=en`` (kept in a cookie) switches to English.
"""

from __future__ import annotations

from bot.i18n import normalise_language

STRINGS: dict[str, tuple[str, str]] = {
    "title": ("Bảng điều khiển đánh giá hài lòng", "Satisfaction dashboard"),
    "login": ("Đăng nhập", "Sign in"),
    "logout": ("Đăng xuất", "Sign out"),
    "username": ("Tên đăng nhập", "Username"),
    "password": ("Mật khẩu", "Password"),
    "bad_login": ("Sai tên đăng nhập hoặc mật khẩu.", "Wrong username or password."),
    "overview": ("Tổng quan", "Overview"),
    "ranking": ("Xếp hạng cơ quan", "Agency ranking"),
    "officials": ("Cán bộ", "Officials"),
    "procedures": ("Thủ tục", "Procedures"),
    "criteria": ("Tiêu chí", "Criteria"),
    "coverage": ("Độ phủ khảo sát", "Survey coverage"),
    "exports": ("Xuất dữ liệu", "Exports"),
    "audit": ("Nhật ký kiểm toán", "Audit log"),
    "all_agencies": ("Tất cả cơ quan", "All agencies"),
    "agency": ("Cơ quan", "Agency"),
    "responses": ("Số phiếu", "Responses"),
    "rated": ("Số đánh giá", "Ratings"),
    "rate": ("Tỷ lệ hài lòng", "Satisfaction rate"),
    "interval": ("Khoảng tin cậy 95%", "95% interval"),
    "band": ("Xếp loại", "Band"),
    "rank": ("Hạng", "Rank"),
    "avg18": ("Điểm TB /18", "Mean /18"),
    "code": ("Mã", "Code"),
    "name": ("Tên", "Name"),
    "trend": ("Xu hướng tỷ lệ hài lòng theo kỳ công bố", "Satisfaction trend by release"),
    "distribution": ("Phân bố theo 5 mức xếp loại", "Distribution over the five bands"),
    "levels": ("Mức hài lòng (1–5)", "Satisfaction level (1–5)"),
    "not_enough": ("Chưa đủ đánh giá", "Not enough ratings"),
    "suppressed_note": (
        "Nhóm dưới {k} phiếu được ẩn (kể cả ô bổ sung để không suy ra được từ tổng).",
        "Groups under {k} responses are hidden (with complementary cells, so totals cannot reveal them).",
    ),
    "criterion": ("Tiêu chí", "Criterion"),
    "scored": ("Số phiếu chấm", "Scored"),
    "mean_points": ("Điểm TB (0–2)", "Mean points (0–2)"),
    "zero_share": ("Tỷ lệ 0 điểm", "Share at 0 points"),
    "zero_dis": ("Tỷ lệ 0 điểm ở phiếu không hài lòng", "Share at 0 among dissatisfied"),
    "lift": ("Mức tác động", "Lift"),
    "channel": ("Kênh", "Channel"),
    "reported": ("Kết quả đã báo", "Results reported"),
    "sent": ("Đã gửi khảo sát", "Surveys sent"),
    "delivered": ("Đã nhận", "Delivered"),
    "answered": ("Đã trả lời", "Answered"),
    "response_rate": ("Tỷ lệ trả lời / kết quả", "Answered / reported"),
    "all_channels": ("Mọi kênh", "All channels"),
    "no_channel": ("Chưa liên kết kênh", "No channel bound"),
    "download": ("Tải xuống", "Download"),
    "level": ("Mức dữ liệu", "Level"),
    "format": ("Định dạng", "Format"),
    "period": ("Kỳ", "Period"),
    "level_responses": ("Từng phiếu (ẩn danh)", "Response rows (anonymised)"),
    "level_agency": ("Theo cơ quan", "By agency"),
    "level_official": ("Theo cán bộ", "By official"),
    "level_procedure": ("Theo thủ tục", "By procedure"),
    "level_criterion": ("Theo tiêu chí", "By criterion"),
    "level_period": ("Theo kỳ", "By period"),
    "audit_ok": ("Chuỗi băm nguyên vẹn: {n} mục.", "Hash chain intact: {n} entries."),
    "audit_bad_edited": ("Chuỗi băm bị phá vỡ tại mục {seq}!", "Hash chain broken at entry {seq}!"),
    "audit_bad_rewritten": (
        "Mục {seq} khác với bản neo bên ngoài cơ sở dữ liệu: nhật ký đã bị viết lại!",
        "Entry {seq} differs from the anchor kept outside the database: the log was rewritten!",
    ),
    "audit_bad_missing": (
        "Mục {seq} và các mục sau đã được neo nhưng không còn trong cơ sở dữ liệu: nhật ký đã bị cắt!",
        "Entry {seq} onwards were anchored but are missing from the database: the log was cut!",
    ),
    "when": ("Thời điểm (UTC)", "When (UTC)"),
    "actor": ("Người thực hiện", "Actor"),
    "action": ("Hành động", "Action"),
    "detail": ("Chi tiết", "Detail"),
    "forbidden": ("Bạn không có quyền xem nội dung này.", "You may not see this."),
    "not_found": ("Không tìm thấy.", "Not found."),
    "bad_request": ("Yêu cầu không hợp lệ.", "Bad request."),
    "no_data": ("Chưa có dữ liệu.", "No data yet."),
    "role_admin": ("Quản trị", "Admin"),
    "role_viewer": ("Xem cơ quan", "Agency viewer"),
    "filter": ("Xem", "Show"),
    "total": ("Tổng", "Total"),
    "release": ("Kỳ công bố", "Release"),
    "release_of": (
        "Số liệu kỳ {label} ({start} – {end}), công bố lúc {published} (UTC); số liệu đã công bố không thay đổi.",
        "Figures of period {label} ({start} – {end}), released {published} (UTC); released figures never change.",
    ),
    "release_next": (
        "Kỳ tiếp theo ({label}) được công bố lúc {due} (UTC).",
        "The next period ({label}) is released at {due} (UTC).",
    ),
    "release_none": (
        "Chưa có kỳ nào được công bố. Kỳ đầu tiên ({label}) được công bố lúc {due} (UTC).",
        "Nothing has been released yet. The first period ({label}) is released at {due} (UTC).",
    ),
    "rows_admin_only": (
        "Dữ liệu từng phiếu chỉ dành cho quản trị cấp tỉnh; cơ quan xem số liệu tổng hợp đã công bố.",
        "Row-level data is for province admins only; agencies see the released aggregates.",
    ),
    "exports_note_admin": (
        "Tệp từng phiếu được khái quát hoá để mỗi tổ hợp cán bộ, thủ tục, kênh và kỳ có ít nhất k phiếu; góp ý được tách riêng.",
        "Row-level files are generalised so that every combination of official, procedure, channel and period holds at least k rows; comments come apart.",
    ),
    "exports_note_viewer": (
        "Các tệp tổng hợp lấy từ kỳ công bố, giống hệt số liệu trên bảng điều khiển.",
        "Aggregate files come from the releases, exactly as the dashboard shows them.",
    ),
}


def t(lang: str, key: str, **values: object) -> str:
    vi, en = STRINGS.get(key, (key, key))
    text = en if lang == "en" else vi
    return text.format(**values) if values else text


def language(value: str | None) -> str:
    return normalise_language(value)


def number(value: float | int | None, lang: str, digits: int = 1) -> str:
    """1234.5 → "1.234,5" in Vietnamese, "1,234.5" in English; "–" when hidden."""
    if value is None:
        return "–"
    text = f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,d}"
    if lang == "en":
        return text
    return text.replace(",", "\x00").replace(".", ",").replace("\x00", ".")


def percent(value: float | None, lang: str) -> str:
    return "–" if value is None else number(float(value), lang) + " %"
