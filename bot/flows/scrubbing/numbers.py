"""Numbers that identify a citizen: phones, CCCD/CMND, passports, tax codes, bank accounts,
licence plates and dossier codes, in whatever way their digits are grouped or spelled.

How: the digits of a comment are read as *runs*: digit groups (or digits spelled as words, "không
chín một", or typed with "o" for 0 and "l" for 1) joined by the separators people put between
groups (spaces, dots, dashes, " - ", slashes, commas, parentheses, "+"). A run of 9 digits or more
is an identifier (a Vietnamese phone has 9 or 10 national digits, CMND 9, CCCD 12, a tax code 10 or
13, a bank account 8 to 19), unless it is a price ("150.000.000 đồng") or a run of years; a run of
8 is one unless it is a price or a date; 6 or 7 digits are one after a cue ("STK", "CMND", "+").
Dates, times and prices never join a run, so "20/11/2026 - 25/11/2026" or "7:30 - 11:30" stay.
Codes that mix letters and digits (000.00.12.H29-250101-0001, C1234567, 29A-123.45) are read
first. ``phonenumbers``' matcher (region VN) runs over the same text as a second opinion.

Every loop here walks the tokens once with a bounded look-around, and every regular expression has
bounded quantifiers only, so the cost grows linearly with the comment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

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

_DATE3 = re.compile(
    r"(?<!\w)(?<!\d[/.\-])(\d{1,2})([/.\-])(\d{1,2})\2(?:\d{4}|\d{2})(?!\d)(?![/.\-]\d)"
)
_DATE2 = re.compile(r"(?<!\w)(?<!\d[/.\-])(\d{1,2})[/.\-](\d{1,2})(?!\d)(?![/.\-]\d)")
_ISO_DATE = re.compile(r"(?<!\w)(?:19|20)\d{2}-[01]\d-[0-3]\d(?!\d)")
_MONTH_YEAR = re.compile(
    r"(?<!\w)(?<!\d[/.\-])(?:0?[1-9]|1[0-2])[/.\-](?:19|20)\d{2}(?!\d)(?![/.\-]\d)"
)
_TIME = re.compile(r"(?<!\w)\d{1,2}(?:[hHgG]\d{0,2}|:\d{2})(?!\d)")
#: Vietnamese plates: province (2 digits), series (1-2 letters, maybe a digit), then 4-5 digits,
#: the last five often as 123.45: 29A-123.45, 51F1-234.56, 30E 12345, 29LD-123.45.
_PLATE = re.compile(
    r"(?<![\w.])\d{2}[ -]?([A-Za-z]{1,2})\d?(?:[ -]?(?:\d{3}\.\d{2}|\d{5})|-\d{4})(?!\w)(?!\.\d)"
)
_PLATE_NOT_SERIES = frozenset("km kg cm mm ml tr k h p m".split())
#: A number with a unit glued on ("50k", "3tr5", "8h30", "4G"): never part of a code.
_WITH_UNIT = re.compile(
    r"\d{1,12}(?:[.,]\d{1,3})?(?:đ|d|k|vnd|vnđ|tr|h|g|p|ph|m|km|cm|mm|kg|ml|s|x|t|pm|am|th|st|nd|rd)\d{0,2}",
    re.IGNORECASE,
)
_GLUED = re.compile(r"([^\W\d_]+)(\d+)")
_LETTERS = re.compile(r"[^\W\d_]+")
_SUBSTITUTES = str.maketrans("oOlI", "0011")
#: Separators allowed between the digit groups of one number.
_SEPARATORS = frozenset(".,-/()+*_")
_CODE_JOINS = frozenset(".-/_")
_MAX_GAP = 5


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
    protected = _protected(view)
    consumed: set[int] = set()
    found = _plates(view, consumed)
    found += _codes(view, protected, consumed)
    found += _runs(view, protected, consumed)
    found += _phonenumbers(view, protected)
    return found


# -- what never joins a run ------------------------------------------------------------------------
def _protected(view: View) -> set[int]:
    """Token indexes of dates, times and month/year: they break runs."""
    norm = view.norm
    flags = bytearray(len(norm) + 1)
    for pattern in (_DATE3, _DATE2):
        for match in pattern.finditer(norm):
            day, month = (
                int(match.group(1)),
                int(match.group(2) if pattern is _DATE2 else match.group(3)),
            )
            if 1 <= day <= 31 and 1 <= month <= 12:
                flags[match.start() : match.end()] = b"\x01" * (match.end() - match.start())
    for pattern in (_ISO_DATE, _MONTH_YEAR, _TIME):
        for match in pattern.finditer(norm):
            flags[match.start() : match.end()] = b"\x01" * (match.end() - match.start())
    return {i for i, t in enumerate(view.tokens) if any(flags[t.start : t.end])}


# -- codes with letters ------------------------------------------------------------------------------
def _plates(view: View, consumed: set[int]) -> list[Found]:
    found = []
    for match in _PLATE.finditer(view.norm):
        series = match.group(1)
        if series.islower() and series in _PLATE_NOT_SERIES:
            continue
        found.append(Found(match.start(), match.end(), "plate"))
        consumed.update(_covered(view, match.start(), match.end()))
    return found


def _is_code_token(token: Token) -> bool:
    """Letters and digits mixed, not a number with a unit ("50k") nor a cue glued to digits."""
    text = token.text
    if not (token.has_digit and any(ch.isalpha() for ch in text)):
        return False
    if _WITH_UNIT.fullmatch(text):
        return False
    glued = _GLUED.fullmatch(text)
    return not (glued and fold(glued.group(1)) in GLUED_CUES.folded)


def _codes(view: View, protected: set[int], consumed: set[int]) -> list[Found]:
    """Dossier codes and other letter-digit codes, joined by . - / _ (spaces allowed around), or
    by single spaces ("000 00 12 H29 250101 0001"); and passports ("C1234567", "C 1234567")."""
    tokens = view.tokens
    found = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if not token.is_word or index in consumed or index in protected:
            index += 1
            continue
        passport_end = _passport_split(view, index, consumed, protected)
        if passport_end is not None:
            found.append(Found(token.start, tokens[passport_end].end, "passport"))
            consumed.update(range(index, passport_end + 1))
            index = passport_end + 1
            continue
        if not token.has_digit:
            index += 1
            continue
        chain = [index]
        while True:
            nxt = _code_join(view, chain[-1], protected, consumed)
            if nxt is None:
                break
            chain.append(nxt)
        codes = [i for i in chain if _is_code_token(tokens[i])]
        digits = sum(ch.isdigit() for i in chain for ch in tokens[i].text)
        # A code token with five digits is a code alone ("C1234567"), so also inside any chain.
        alone = any(sum(ch.isdigit() for ch in tokens[i].text) >= 5 for i in codes)
        if codes and (digits >= 7 or alone):
            kind = "dossier" if len(chain) >= 3 else "passport"
            found.append(Found(token.start, tokens[chain[-1]].end, kind))
            consumed.update(range(chain[0], chain[-1] + 1))
        index = chain[-1] + 1
    return found


def _passport_split(view: View, index: int, consumed: set[int], protected: set[int]) -> int | None:
    """A passport written with a space: one Latin letter, then exactly seven digits in up to three
    groups ("C 1234567", "C 765 4321"); the index of the last group."""
    token = view.tokens[index]
    if not (len(token.text) == 1 and token.text.isascii() and token.text.isalpha()):
        return None
    digits = 0
    last: int | None = None
    current = index
    for _ in range(3):
        following = view.next_word(current, allow=".-" if last is not None else "", limit=1)
        if following is None or following in consumed or following in protected:
            break
        text = view.tokens[following].text
        if not text.isdigit():
            break
        digits += len(text)
        last = current = following
        if digits >= 7:
            break
    return last if digits == 7 else None


def _code_join(view: View, index: int, protected: set[int], consumed: set[int]) -> int | None:
    """The next token of a code after token ``index``: a word with a digit after one separator
    (with spaces around it allowed) or after one single space."""
    tokens = view.tokens
    position = index + 1
    gap = ""
    while position < len(tokens) and len(gap) <= 3 and not tokens[position].is_word:
        gap += tokens[position].text
        position += 1
    if position >= len(tokens) or position in protected or position in consumed:
        return None
    if not tokens[position].has_digit:
        return None
    stripped = gap.strip(" ")
    if gap == " " or (len(stripped) == 1 and stripped in _CODE_JOINS and len(gap) <= 3):
        return position
    return None


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
