"""Tolerant typed replies, free-text scrubbing, and phone numbers parsed with ``phonenumbers``.

The scrubber's figures come from the labelled corpus (``tests/test_scrub_corpus.py``); here are
the behaviours a citizen or an agency would notice one by one, and the properties that must hold
for any text: idempotent, never raises, bounded work on 10 kB inputs.
"""

from __future__ import annotations

import importlib
import random
import re
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from pydantic import ValidationError

from bot.flows import scrub as scrub_module
from bot.flows.parsing import fold, match_many, match_option
from bot.flows.scrub import find_identifiers, scrub, scrub_exact
from bot.flows.scrubbing import addresses, codes, dates, emails, links, names, numbers, text
from bot.schemas import DossierRegistration, ResultReport
from storage.pseudonym import normalise_phone

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


@pytest.mark.parametrize(
    ("comment", "expected"),
    [
        ("Gọi em 0912 - 345 - 678 nhé", "Gọi em [số] nhé"),
        ("sđt +84 (0) 912 345 678", "sđt [số]"),
        ("số tôi không chín một hai ba bốn năm sáu bảy tám", "số tôi [số]"),
        ("email nguyenvana at gmail dot com", "email [email]"),
        ("Hộ chiếu C1234567", "Hộ chiếu [số]"),
        ("xe 29A-123.45", "xe [biển số]"),
        ("mã 000.00.12.H29 - 250101 - 0001 chậm", "mã [mã hồ sơ] chậm"),
        ("Tôi là Nguyễn Văn An, hài lòng", "Tôi là [tên], hài lòng"),
        ("Nhà 5B đường Lê Lợi, gửi về nhà", "[địa chỉ], gửi về nhà"),
        ("telegram @ngocanh_99", "telegram [tài khoản]"),
        ("fb: facebook.com/nguyen.van.an.123", "fb: [liên kết]"),
        ("gửi về số 12 Nguyễn Trãi", "gửi về [địa chỉ]"),
    ],
)
def test_scrub_replaces_each_identifier_by_the_marker_of_its_kind(
    comment: str, expected: str
) -> None:
    assert scrub(comment) == expected


def test_scrub_returns_the_rest_of_the_comment_exactly_as_typed() -> None:
    """Normalisation is only for finding identifiers: emoji joined by zero-width joiners,
    full-width letters and odd spacing outside an identifier are handed back untouched."""
    comment = "👨‍👩‍👧 ｃảm ơn  chị\u200b, số em 0912\u200b345\u200b678 🙏🏻"
    assert scrub(comment) == "👨‍👩‍👧 ｃảm ơn  chị\u200b, số em [số] 🙏🏻"


def test_scrub_exact_removes_a_known_code_across_case_and_separators() -> None:
    assert scrub_exact("hồ sơ h.s-123 của tôi", ["HS123"]) == "hồ sơ [mã hồ sơ] của tôi"
    assert scrub_exact("mã HS 123", ["hs123"]) == "mã [mã hồ sơ]"
    assert scrub_exact("ths1234 khác", ["HS123"]) == "ths1234 khác"  # not inside another code


# -- properties ------------------------------------------------------------------------------------
_ALPHABET = (
    "0123456789 .,-/()+@:#oOlI\t\nđĐăâêôơư áàảãạ\u0301\u0303\u200b\u200d\ufeff\u00a0\u3000"
    "０１２９＠．－（）ＡａNguyễnTrầnLêsốngõhẻmthônxãphườngkhôngchínmộtattdotgmail😀👍🏻\ufe0f\u20e3"
)


def _random_texts(count: int, seed: int) -> Iterator[str]:
    """Bounded random generator (``hypothesis`` is not a dependency): characters the detectors
    care about mixed with any code point at all, lone surrogates and unassigned ones included."""
    rng = random.Random(seed)
    for _ in range(count):
        length = rng.randrange(0, 80)
        yield "".join(
            rng.choice(_ALPHABET) if rng.random() < 0.8 else chr(rng.randrange(0x110000))
            for _ in range(length)
        )


def test_scrub_never_raises_and_is_idempotent_on_arbitrary_unicode() -> None:
    for comment in _random_texts(3000, seed=20261120):
        once = scrub(comment)
        assert isinstance(once, str)
        assert scrub(once) == once, repr(comment)
        if not find_identifiers(comment):
            assert once == comment, repr(comment)


_REPEATS = {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}


def _nested_repeats(parsed: Any, inside: bool = False) -> list[str]:
    """Quantifiers inside a quantifier that may repeat more than once: the shape that makes a
    backtracking regex engine take exponential time on a crafted input."""
    found: list[str] = []
    for op, av in parsed:
        name = str(op)
        if name in _REPEATS:
            low, high, sub = av
            if inside:
                found.append(f"{name}{{{low},{high}}}")
            found += _nested_repeats(sub, inside or high > 1)
        elif name == "SUBPATTERN":
            found += _nested_repeats(av[-1], inside)
        elif name == "BRANCH":
            for branch in av[1]:
                found += _nested_repeats(branch, inside)
        elif name in ("ASSERT", "ASSERT_NOT"):
            found += _nested_repeats(av[1], inside)
    return found


def test_no_scrubber_pattern_can_backtrack_catastrophically() -> None:
    """By construction: no regular expression of the scrubber nests a repeatable quantifier (the
    token walkers have bounded look-around), so the work grows linearly with the comment."""
    parser = importlib.import_module("re._parser")
    modules: list[ModuleType] = [
        scrub_module, text, dates, codes, numbers, emails, links, names, addresses,
    ]  # fmt: skip
    patterns = [
        value
        for module in modules
        for value in vars(module).values()
        if isinstance(value, re.Pattern)
    ]
    assert len(patterns) >= 8
    for pattern in patterns:
        assert _nested_repeats(parser.parse(pattern.pattern, pattern.flags)) == [], pattern.pattern


@pytest.mark.parametrize(
    ("comment", "vanishes"),
    [
        ("1 " * 5000, "1"), ("0912-" * 2000, "0912"), ("1." * 5000, "1"),
        ("không " * 1400, "không"), ("H29.22-" * 1400, "29"), ("Nguyễn Văn " * 900, "Văn"),
        ("((((+84 " * 1250, None),
        ("tôi là " * 1400, None), ("ngõ 1 " * 1700, None), ("số 1, " * 2000, None),
        ("a @ " * 2500, None), ("a b c d " * 1250, None), (".-" * 5000, None),
        ("\u200b" * 10000, None), ("x" * 10000, None),
    ],
)  # fmt: skip
def test_pathological_10kb_comments_complete(comment: str, vanishes: str | None) -> None:
    """Inputs built to provoke backtracking or quadratic walks finish (no timing assertion: the
    bound is by construction, see the test above), and a 10 kB identifier is still removed whole."""
    scrubbed = scrub(comment)
    assert scrub(scrubbed) == scrubbed
    if vanishes is not None:
        assert vanishes not in scrubbed


# -- phone numbers ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spelling",
    [
        "0912 345 678", "0912-345-678", "84912345678", "+84912345678", "+84 (0) 912 345 678",
        "(+84) 912.345.678", "０９１２３４５６７８", "+84 912-345-678", " 0912.345.678 ",
    ],
)  # fmt: skip
def test_every_spelling_of_one_mobile_normalises_alike(spelling: str) -> None:
    """One phone, one pseudonym: "+84 (0) 912 345 678" used to give 840912345678."""
    assert normalise_phone(spelling) == "84912345678"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("12345", "not a valid Vietnamese phone number"),
        ("024 3823 4567", "mobile"),  # a Hanoi landline: ZNS reaches mobiles only
        ("+1 650 253 0000", "country code"),
        ("0912 ABC 678", "letters"),
        ("0123456789", "not a valid"),
        ("", "not a phone number"),
    ],
)
def test_phones_that_zns_cannot_reach_are_refused_with_the_reason(raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        normalise_phone(raw)


def test_the_api_stores_the_canonical_phone_and_refuses_a_landline_without_echoing_it() -> None:
    registration = DossierRegistration(dossier_code="H29-1", phone="(+84) 912.345.678")
    assert registration.phone == "84912345678"
    report = ResultReport(
        dossier_code="H29-1", returned_at="2026-11-20", phone="+84 (0) 912 345 678"
    )
    assert report.phone == "84912345678"
    with pytest.raises(ValidationError) as refused:
        ResultReport(dossier_code="H29-1", returned_at="2026-11-20", phone="024 3823 4567")
    message = refused.value.errors()[0]["msg"]
    assert "mobile" in message and "3823" not in message
