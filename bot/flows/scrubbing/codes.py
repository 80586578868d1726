"""Codes that mix letters and digits: licence plates (29A-123.45, 51F1-234.56, 30E 12345),
dossier codes as one-stop systems print them (000.00.12.H29-250101-0001, H29.22 - 241120 - 0007),
passports (C1234567, C 765 4321) and other letter-digit identifiers with five digits or more.

They are read before the digit runs (``numbers.py``), and the tokens they take are left out of the
runs. A number with a unit glued on ("50k", "3tr5", "8h30", "4G") is never part of a code, and nor
is a cue glued to a number ("sđt0912…", "CCCD0012…"), whose digits the runs read.
"""

from __future__ import annotations

import re

from bot.flows.scrubbing.found import Found
from bot.flows.scrubbing.lexicon import GLUED_CUES, fold
from bot.flows.scrubbing.text import Token, View

#: Vietnamese plates: province (2 digits), series (1-2 letters, maybe a digit), then 4-5 digits,
#: the last five often as 123.45: 29A-123.45, 51F1-234.56, 30E 12345, 29LD-123.45.
_PLATE = re.compile(
    r"(?<![\w.])\d{2}[ -]?([A-Za-z]{1,2})\d?(?:[ -]?(?:\d{3}\.\d{2}|\d{5})|-\d{4})(?!\w)(?!\.\d)"
)
_PLATE_NOT_SERIES = frozenset("km kg cm mm ml tr k h p m".split())
#: A number with a unit glued on ("50k", "3tr5", "8h30", "4G"): never part of a code.
_WITH_UNIT = re.compile(
    r"\d{1,12}(?:[.,]\d{1,3})?"
    r"(?:đ|d|k|vnd|vnđ|tr|h|g|p|ph|m|km|cm|mm|kg|ml|s|x|t|pm|am|th|st|nd|rd)\d{0,2}",
    re.IGNORECASE,
)
_GLUED = re.compile(r"([^\W\d_]+)(\d+)")
_CODE_JOINS = frozenset(".-/_")


def find_plates(view: View, consumed: set[int]) -> list[Found]:
    found = []
    for match in _PLATE.finditer(view.norm):
        series = match.group(1)
        if series.islower() and series in _PLATE_NOT_SERIES:
            continue
        found.append(Found(match.start(), match.end(), "plate"))
        consumed.update(view.covered(match.start(), match.end()))
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


def find_codes(view: View, protected: set[int], consumed: set[int]) -> list[Found]:
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
