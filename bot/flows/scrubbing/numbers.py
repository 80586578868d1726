"""Numbers that identify a citizen: phones, CCCD/CMND, tax codes, bank accounts (and, through
``codes.py``, plates, passports and dossier codes), however their digits are grouped or spelled.

How: the digits of a comment are read as *runs*: digit groups (or digits spelled as words, "không
chín một", or typed with "o" for 0 and "l" for 1) joined by the separators people put between
groups (spaces, dots, dashes, " - ", slashes, commas, parentheses, "+"). A run of 9 digits or more
is an identifier (a Vietnamese phone has 9 or 10 national digits, CMND 9, CCCD 12, a tax code 10 or
13, a bank account 8 to 19), unless it is a price ("150.000.000 đồng") or a run of years; a run of
8 is one unless it is a price or a date; 6 or 7 digits are one after a cue ("STK", "CMND", "+").
Dates, times and prices never join a run, so "20/11/2026 - 25/11/2026" or "7:30 - 11:30" stay.
Codes that mix letters and digits (000.00.12.H29-250101-0001, C1234567, 29A-123.45) are read
first (``codes.py``), dates and times are found by ``dates.py``. ``phonenumbers``' matcher
(region VN) runs over the same text as a second opinion.

Every loop here walks the tokens once with a bounded look-around, and every regular expression has
bounded quantifiers only, so the cost grows linearly with the comment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

from bot.flows.scrubbing.codes import find_codes, find_plates
from bot.flows.scrubbing.dates import protected_tokens
from bot.flows.scrubbing.found import Found
from bot.flows.scrubbing.lexicon import (
    CURRENCY,
    DIGIT_WORDS,
    DIGIT_WORDS_FOLDED,
    GLUED_CUES,
    NUMBER_CUES,
    fold,
)
from bot.flows.scrubbing.text import Token, View

_LETTERS = re.compile(r"[^\W\d_]+")
_SUBSTITUTES = str.maketrans("oOlI", "0011")
#: Separators allowed between the digit groups of one number.
_SEPARATORS = frozenset(".,-/()+*_")
_MAX_GAP = 5
#: The fewest digits of a valid Vietnamese number (a mobile has 9 national digits).
_PHONE_MIN_DIGITS = 8


@dataclass(slots=True)
class _Piece:
    """Digits from one token: a group, a spelled digit, or the digits at one end of a word."""

    start: int
    end: int
    digits: str
    token: int
    left: bool
    right: bool
    spelled: bool = False
    suffix: str = ""
    prefix: str = ""


def find_numbers(view: View) -> list[Found]:
    protected = protected_tokens(view)
    consumed: set[int] = set()
    found = find_plates(view, consumed)
    found += find_codes(view, protected, consumed)
    found += _runs(view, protected, consumed)
    found += _phonenumbers(view, protected)
    return found


# -- digit runs ----------------------------------------------------------------------------------
def _pieces(view: View, protected: set[int], consumed: set[int]) -> list[_Piece]:
    pieces: list[_Piece] = []
    for index, token in enumerate(view.tokens):
        if not token.is_word or index in protected or index in consumed:
            continue
        text = token.text
        spelled = _spelled_digit(token, view.lenient)
        if spelled is not None:
            pieces.append(_Piece(token.start, token.end, spelled, index, True, True, spelled=True))
        elif text.isdigit():
            pieces.append(_Piece(token.start, token.end, text, index, True, True))
        elif _substituted(text):
            digits = text.translate(_SUBSTITUTES)
            pieces.append(_Piece(token.start, token.end, digits, index, True, True))
        elif token.has_digit:
            pieces.extend(_glued_pieces(token, index))
    return pieces


def _spelled_digit(token: Token, lenient: bool) -> str | None:
    if lenient and not token.has_diacritics:
        return DIGIT_WORDS_FOLDED.get(token.flat)
    return DIGIT_WORDS.get(token.text.lower())


def _substituted(text: str) -> bool:
    """Digits typed with o/O for 0 and l/I for 1 ("O912", "o9l2", "09l2345678"), among at least
    two real digits."""
    digits = sum(ch.isdigit() for ch in text)
    return (
        digits >= 2
        and all(ch.isdigit() or ch in "oOlI" for ch in text)
        and digits >= len(text) - digits
    )


def _glued_pieces(token: Token, index: int) -> list[_Piece]:
    """The digits at either end of a word with letters: "0912345678nhé", "zalo0912345678"."""
    text = token.text
    pieces = []
    lead = len(text) - len(text.lstrip("0123456789"))
    if lead:
        letters = _LETTERS.match(text, lead)
        suffix = letters.group(0) if letters else ""
        pieces.append(
            _Piece(
                token.start,
                token.start + lead,
                text[:lead],
                index,
                True,
                False,
                suffix=fold(suffix),
            )
        )
    trail = len(text) - len(text.rstrip("0123456789"))
    if trail and trail < len(text):
        prefix = text[: len(text) - trail]
        start = token.end - trail
        if not lead or start > token.start + lead:
            pieces.append(
                _Piece(start, token.end, text[-trail:], index, False, True, prefix=fold(prefix))
            )
    return pieces


def _gap(
    view: View, left: _Piece, right: _Piece, protected: set[int], consumed: set[int]
) -> str | None:
    """The separators between two pieces, or None when they cannot belong to one number."""
    if left.token == right.token or not (left.right and right.left):
        return None
    gap = view.norm[left.end : right.start]
    if len(gap) > _MAX_GAP or sum(ch != " " for ch in gap) > 3:
        return None
    if any(ch != " " and ch not in _SEPARATORS for ch in gap):
        return None
    if any(i in protected or i in consumed for i in range(left.token + 1, right.token)):
        return None
    return gap


def _weak(gap: str) -> bool:
    """A comma and a space, or a full stop and a space, usually separate numbers ("phòng 201,
    202, 203"), not the groups of one."""
    return (("," in gap or ";" in gap) and " " in gap) or gap.startswith(". ")


def _runs(view: View, protected: set[int], consumed: set[int]) -> list[Found]:
    pieces = _pieces(view, protected, consumed)
    gaps = [
        _gap(view, pieces[i], pieces[i + 1], protected, consumed) for i in range(len(pieces) - 1)
    ]
    # A digit word joins a run only beside another digit word: "năm 2025" is a year, "hai ba lần"
    # a count, while "không chín một hai ..." is a number.
    usable = [
        not piece.spelled
        or (i > 0 and pieces[i - 1].spelled and gaps[i - 1] is not None)
        or (i + 1 < len(pieces) and pieces[i + 1].spelled and gaps[i] is not None)
        for i, piece in enumerate(pieces)
    ]
    found = []
    run: list[int] = []
    run_gaps: list[str] = []
    for i in range(len(pieces)):
        if not usable[i]:
            found += _judge(view, pieces, run, run_gaps)
            run, run_gaps = [], []
            continue
        gap = gaps[i - 1] if i > 0 and run and run[-1] == i - 1 else None
        if run and gap is not None and (not _weak(gap) or _phone_like_start(view, pieces[run[0]])):
            run.append(i)
            run_gaps.append(gap)
            continue
        found += _judge(view, pieces, run, run_gaps)
        run, run_gaps = [i], []
    found += _judge(view, pieces, run, run_gaps)
    return found


def _phone_like_start(view: View, first: _Piece) -> bool:
    return first.digits.startswith("0") or view.norm[max(0, first.start - 1) : first.start] == "+"


def _judge(view: View, pieces: list[_Piece], run: list[int], gaps: list[str]) -> list[Found]:
    if not run:
        return []
    members = [pieces[i] for i in run]
    digits = "".join(p.digits for p in members)
    count = len(digits)
    if count < 6:
        return []
    numbers = _split_numbers(members, gaps)
    thousands = all(_thousands(groups, joins) for groups, joins in numbers)
    priced = _currency_after(view, members[-1]) or _currency_before(view, members[0])
    single = len(members) == 1
    if priced and (thousands or single):
        return []
    if all(len(groups) == 1 and _year(groups[0]) for groups, _ in numbers):
        return []
    if count == 8 and (thousands or (single and _ddmmyyyy(digits))):
        return []
    if count < 8 and not _cue_before(view, members[0]):
        return []
    start, end = _widen(view, members[0].start, members[-1].end)
    return [Found(start, end, "number")]


def _split_numbers(members: list[_Piece], gaps: list[str]) -> list[tuple[list[str], list[str]]]:
    """The run cut where a space or a dash separates groups: each part with its joining characters
    (so "800.000 - 1.000.000" is two prices, each grouped by thousands)."""
    numbers: list[tuple[list[str], list[str]]] = [([members[0].digits], [])]
    for piece, gap in zip(members[1:], gaps, strict=True):
        if " " in gap or "-" in gap:
            numbers.append(([piece.digits], []))
        else:
            numbers[-1][0].append(piece.digits)
            numbers[-1][1].append(gap)
    return numbers


def _thousands(groups: list[str], joins: list[str]) -> bool:
    """1.500.000 or 200,000: a first group of 1 to 3 digits, then groups of exactly 3."""
    if len(groups) < 2 or len(set(joins)) != 1 or joins[0] not in (".", ","):
        return False
    first = groups[0]
    return (
        1 <= len(first) <= 3
        and (first[0] != "0" or first == "0")
        and all(len(g) == 3 for g in groups[1:])
    )


def _year(group: str) -> bool:
    return len(group) == 4 and group[:2] in ("19", "20")


def _ddmmyyyy(digits: str) -> bool:
    day, month, year = int(digits[:2]), int(digits[2:4]), digits[4:]
    return 1 <= day <= 31 and 1 <= month <= 12 and _year(year)


def _currency_after(view: View, last: _Piece) -> bool:
    if last.suffix and last.suffix in CURRENCY.folded:
        return True
    token = view.tokens[last.token]
    if last.end != token.end:
        return False
    following = view.next_word(last.token, limit=1)
    return following is not None and CURRENCY.has(view.tokens[following], lenient=True)


def _currency_before(view: View, first: _Piece) -> bool:
    before = view.norm[max(0, first.start - 2) : first.start].strip()
    if before.endswith("$"):
        return True
    previous = view.prev_word(first.token, limit=1)
    return previous is not None and view.tokens[previous].flat in ("vnd", "vnđ", "usd")


def _cue_before(view: View, first: _Piece) -> bool:
    """A cue that makes a shorter number an identifier: "STK 12345678", "CMND: 123456",
    "sđt0912…", "+84 …"."""
    if first.prefix and first.prefix in GLUED_CUES.folded:
        return True
    if view.norm[max(0, first.start - 2) : first.start].strip(" (") == "+":
        return True
    if first.start != view.tokens[first.token].start:
        return False
    previous = view.prev_word(first.token, allow=":.-#", limit=3)
    words: list[Token] = []
    while previous is not None and len(words) < NUMBER_CUES.longest:
        words.insert(0, view.tokens[previous])
        if NUMBER_CUES.matches(words, view.lenient):
            return True
        previous = view.prev_word(previous, limit=1)
    return False


def _widen(view: View, start: int, end: int) -> tuple[int, int]:
    """Take in a leading "+" or "(" and a closing ")" so that "(+84) 912…" leaves no stray signs."""
    norm = view.norm
    while start > 0 and norm[start - 1] in "+(":
        start -= 1
    if norm.count("(", start, end) > norm.count(")", start, end) and norm[end : end + 1] == ")":
        end += 1
    return start, end


def _covered(view: View, start: int, end: int) -> list[int]:
    return list(view.covered(start, end))


# -- second opinion ------------------------------------------------------------------------------
def _phonenumbers(view: View, protected: set[int]) -> list[Found]:
    """Valid Vietnamese (or international "+…") numbers that ``phonenumbers`` finds, except where
    they overlap a date or time or are followed by a currency unit."""
    if sum(ch.isdigit() for ch in view.norm) < _PHONE_MIN_DIGITS:
        return []
    found = []
    matcher = phonenumbers.PhoneNumberMatcher(
        view.norm, "VN", leniency=phonenumbers.Leniency.POSSIBLE
    )
    for match in matcher:
        if not phonenumbers.is_valid_number(match.number):
            continue
        covered = _covered(view, match.start, match.end)
        if any(i in protected for i in covered):
            continue
        following = view.next_word(covered[-1], limit=1) if covered else None
        if following is not None and CURRENCY.has(view.tokens[following], lenient=True):
            continue
        found.append(Found(match.start, match.end, "number"))
    return found
