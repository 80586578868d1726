"""The fields (lĩnh vực) that group administrative procedures, a closed vocabulary.

A field is how the province reads its results beyond one unit (Hà Đông rates per official and
per field): health, education, justice, labour, land and environment... The codes follow the
sector (ngành) that owns the procedure group on the national public service portal; the
vocabulary is closed so that two units cannot spell one field two ways and split its figures.
"""

from __future__ import annotations

from typing import NamedTuple


class Field(NamedTuple):
    code: str
    vi: str
    en: str


FIELDS: tuple[Field, ...] = (
    Field("tu-phap", "Tư pháp (hộ tịch, chứng thực)", "Justice (civil status, certification)"),
    Field("tnmt", "Tài nguyên và Môi trường (đất đai)", "Natural resources and environment (land)"),
    Field("ldtbxh", "Lao động, Thương binh và Xã hội", "Labour, invalids and social affairs"),
    Field("y-te", "Y tế", "Health"),
    Field("giao-duc", "Giáo dục và Đào tạo", "Education and training"),
    Field("xay-dung", "Xây dựng", "Construction"),
    Field("ke-hoach-dau-tu", "Kế hoạch và Đầu tư (đăng ký kinh doanh)", "Planning and investment (business registration)"),
    Field("tai-chinh", "Tài chính", "Finance"),
    Field("cong-thuong", "Công thương", "Industry and trade"),
    Field("nong-nghiep", "Nông nghiệp và Phát triển nông thôn", "Agriculture and rural development"),
    Field("giao-thong", "Giao thông vận tải", "Transport"),
    Field("noi-vu", "Nội vụ", "Home affairs"),
    Field("van-hoa", "Văn hóa, Thể thao và Du lịch", "Culture, sports and tourism"),
    Field("thong-tin", "Thông tin và Truyền thông", "Information and communications"),
    Field("cong-an", "Công an (cư trú)", "Public security (residence)"),
    Field("khac", "Lĩnh vực khác", "Other fields"),
)  # fmt: skip
BY_CODE: dict[str, Field] = {f.code: f for f in FIELDS}
CODES: tuple[str, ...] = tuple(BY_CODE)


def label(code: str | None, language: str = "vi") -> str:
    """The field's name in ``language`` ('' for none or an unknown code)."""
    field = BY_CODE.get(code or "")
    if field is None:
        return ""
    return field.en if language == "en" else field.vi
