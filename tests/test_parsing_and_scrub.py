"""Tolerant typed replies and free-text scrubbing."""

from __future__ import annotations

import pytest

from bot.flows.parsing import fold, match_many, match_option
from bot.flows.scrub import scrub, scrub_exact

LEVELS = [
    ["Rất hài lòng", "Very satisfied"],
    ["Hài lòng", "Satisfied"],
    ["Không hài lòng", "Not satisfied"],
]
SENTIMENTS = ["positive", None, "negative"]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("1", 0), (" 2 ", 1), ("3.", 2), ("một", 0), ("hai", 1), ("Ba", 2), ("số 2", 1),
        ("hài lòng", 1), ("hai long", 1), ("HAI LONG", 1), ("rat hai long", 0),
        ("Rất hài lòng!", 0), ("khong hai long", 2), ("tôi không hài lòng lắm", 2),
        ("satisfied", 1), ("👍", 0), ("👎", 2), ("4", None), ("0", None), ("xin chào", None), ("", None),
    ],
)  # fmt: skip
def test_match_option(reply: str, expected: int | None) -> None:
    assert match_option(reply, LEVELS, SENTIMENTS) == expected


def test_fold_removes_accents_and_d_stroke() -> None:
    assert fold("Đúng hẹn, ĐƯỢC!") == "dung hen, duoc"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [("1, 3", [0, 2]), ("1 va 3", [0, 2]), ("2;1", [1, 0]), ("1 2 2", [0, 1]), ("1, 9", None)],
)
def test_match_many(reply: str, expected: list[int] | None) -> None:
    assert match_many(reply, [["A"], ["B"], ["C"]]) == expected


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("Gọi tôi: 0912 345 678", "345 678"),
        ("sđt +84912345678", "912345678"),
        ("số 0912.345.678 nhé", "345.678"),
        ("CCCD 001203004567 của tôi", "001203004567"),
        ("CMND 123456789", "123456789"),
        ("email nguyen.van.a@gmail.com", "gmail"),
        ("hồ sơ 000.00.12.H29-261120-0001 bị chậm", "H29-261120"),
        ("mã H29.22-241120-0007", "241120"),
        ("mã số thuế 0101234567-001", "0101234567"),
    ],
)
def test_scrub_removes_identifiers(text: str, leaked: str) -> None:
    assert leaked not in scrub(text)


def test_scrub_keeps_ordinary_numbers_and_words() -> None:
    text = "Tôi chờ 2 giờ, mất 50.000 đồng, ngày 20/11/2026 được trả kết quả."
    assert scrub(text) == text


def test_scrub_exact_removes_known_codes_of_any_shape() -> None:
    assert "HS123" not in scrub_exact("hồ sơ hs123 của tôi", ["HS123"])
