"""Street addresses: "số 12 ngõ 34 phố Huế", "123 Nguyễn Trãi, phường 2, quận 5", "thôn Đông, xã
Yên Sở", "ngách 5/12", "hẻm 45", "tổ 7 khu phố 3", "kiệt 12 Hùng Vương", "nhà 5B đường Lê Lợi".

An address is read as a chain of parts joined by spaces, commas or dashes:

* house-level parts, which locate a household by themselves: ngõ/ngách/hẻm/kiệt + number,
  khu phố, tổ dân phố, thôn/xóm/ấp/làng + name, số nhà, căn hộ;
* parts that need another one: số, nhà, tổ, lô, tòa + number ("số 12" alone is "quầy số 12");
* a bare house number and a capitalised street, after "ở", "tại", "địa chỉ" or before a ward;
* streets and administrative units (đường, phố, phường, xã, quận, huyện, tỉnh, P., Q., TP.).

A chain is removed whole when it holds a house-level part, or a number part with another part. A
street or unit on its own ("đường Lê Lợi", "UBND phường 2 quận 5") is kept: thousands of people
share it, and it is usually where the desk is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.flows.scrubbing.found import Found
from bot.flows.scrubbing.lexicon import (
    ADDRESS_AREA,
    ADDRESS_CUES,
    ADDRESS_STRONG,
    ADDRESS_WEAK,
    NAME_STOP,
    UNITS,
    Phrases,
)
from bot.flows.scrubbing.text import Token, View

_NUMBER = re.compile(r"\d{1,5}[A-Za-z]?|[A-Za-z]\d{1,4}")
#: House-level keys that take a number only ("ngõ 34"), never a name ("hẻm nhỏ" is a small alley).
_NUMBER_ONLY = Phrases("ngõ ngách hẻm kiệt số_nhà nhà_số căn_hộ kp tdp tổ_dân_phố")
_MAX_STREET = 4
_CAPITALISED = ("title", "upper")


@dataclass(frozen=True, slots=True)
class _Part:
    first: int
    last: int
    kind: str  # "house-level", "numbered", "house", "area"


def find_addresses(view: View) -> list[Found]:
    found = []
    index = 0
    tokens = view.tokens
    while index < len(tokens):
        part = _part(view, index, chained=False) if tokens[index].is_word else None
        if part is None:
            index += 1
            continue
        parts = [part]
        while True:
            following = _after_join(view, parts[-1].last)
            nxt = _part(view, following, chained=True) if following is not None else None
            if nxt is None:
                break
            parts.append(nxt)
        if _identifying(view, parts):
            found.append(Found(tokens[parts[0].first].start, tokens[parts[-1].last].end, "address"))
        # A later start inside a chain that does not identify cannot identify either.
        index = parts[-1].last + 1
    return found


def _identifying(view: View, parts: list[_Part]) -> bool:
    kinds = [p.kind for p in parts]
    if "house-level" in kinds:
        return True
    if kinds[0] == "house":
        return len(parts) > 1 or _cue_before(view, parts[0].first)
    return "numbered" in kinds and len(parts) > 1


def _part(view: View, index: int, chained: bool) -> _Part | None:
    tokens = view.tokens
    lenient = view.lenient
    keyed = [
        (keys, kind)
        for keys, kind in (
            (ADDRESS_STRONG, "house-level"),
            (ADDRESS_WEAK, "numbered"),
            (ADDRESS_AREA, "area"),
        )
        if keys.may_start(tokens[index])
    ]
    phrase = view.phrase(index, 3) if keyed else []
    for keys, kind in keyed:
        size = keys.longest_match(phrase, lenient)
        if not size:
            continue
        key_last = index + 2 * (size - 1)
        argument = view.next_word(key_last, allow=".:", limit=2)
        if argument is None:
            return None
        number_end = _number(view, argument)
        if number_end is not None:
            end = _street(view, number_end)
            # "số 12 Nguyễn Trãi": a number and its street locate a house by themselves.
            if kind == "numbered" and end != number_end:
                kind = "house-level"
            return _Part(index, end, kind)
        if kind == "numbered" or _NUMBER_ONLY.matches(phrase[:size], lenient):
            if kind == "numbered" and _single_letter(view, argument):
                return _Part(index, argument, kind)
            return None
        name_end = _name(view, argument, lowercase=lenient and (chained or kind == "house-level"))
        if name_end is None:
            return None
        return _Part(index, name_end, kind)
    number_end = _number(view, index)
    if number_end is None or view.casing_mode != "normal":
        return None
    street = view.next_word(number_end, limit=1)
    if (
        street is None
        or tokens[street].casing not in _CAPITALISED
        or UNITS.has(tokens[street], lenient)
    ):
        return None
    end = _street(view, number_end)
    return _Part(index, end, "house") if end != number_end else None


def _number(view: View, index: int) -> int | None:
    """A house number: "12", "5B", "A12", "45/6", "34/7/2"; the index of its last token."""
    tokens = view.tokens
    if not _NUMBER.fullmatch(tokens[index].text):
        return None
    end = index
    while (
        end + 2 < len(tokens)
        and end - index < 6
        and tokens[end + 1].text == "/"
        and _NUMBER.fullmatch(tokens[end + 2].text)
    ):
        end += 2
    return end


def _single_letter(view: View, index: int) -> bool:
    """One capital letter, as in "tòa B" or "lô A"."""
    text = view.tokens[index].text
    return len(text) == 1 and text.isupper()


def _street(view: View, number_end: int) -> int:
    """The last of the capitalised street words after ``number_end``: "kiệt 12 Hùng Vương"; not
    a measure word ("Số 5 Quầy 3" is a desk)."""
    end = number_end
    count = 0
    while count < _MAX_STREET:
        following = view.next_word(end, limit=1)
        if following is None or not _street_word(view, following):
            break
        if count == 0 and UNITS.has(view.tokens[following], view.lenient):
            break
        end = following
        count += 1
    return end


def _street_word(view: View, index: int) -> bool:
    token = view.tokens[index]
    if view.casing_mode != "normal" or token.casing not in _CAPITALISED or not token.is_alpha:
        return False
    return not _starts_part(view, index)


def _starts_part(view: View, index: int) -> bool:
    """Whether a key starts here: a lower-case key ("ngõ"), or a capitalised one followed by a
    number ("Ngõ 34"); "Kiệt" ending "Lý Thường Kiệt" is a street's last word."""
    keyed = [
        k for k in (ADDRESS_STRONG, ADDRESS_WEAK, ADDRESS_AREA) if k.may_start(view.tokens[index])
    ]
    phrase = view.phrase(index, 3) if keyed else []
    for keys in keyed:
        size = keys.longest_match(phrase, view.lenient)
        if not size:
            continue
        if phrase[0].casing == "lower":
            return True
        key_last = index + 2 * (size - 1)
        argument = view.next_word(key_last, allow=".:", limit=2)
        return argument is not None and _number(view, argument) is not None
    return False


def _name(view: View, index: int, lowercase: bool) -> int | None:
    """A place name after a key: capitalised words ("Yên Sở", "Phạm Ngũ Lão"), or, in a comment
    typed without accents, up to three lower-case words ("pho hue", "duong lang")."""
    tokens = view.tokens
    if _street_word(view, index):
        return _street(view, index)
    if not lowercase:
        return None
    last: int | None = None
    current = index
    for count in range(3):
        token = tokens[current]
        if not token.is_alpha or NAME_STOP.has(token, True):
            break
        if count and _starts_part(view, current):
            break
        last = current
        following = view.next_word(current, limit=1)
        if following is None:
            break
        current = following
    return last


def _after_join(view: View, last: int) -> int | None:
    """The first word after a part, across one space or one of ", ; -" with spaces around."""
    tokens = view.tokens
    position = last + 1
    gap = ""
    while position < len(tokens) and not tokens[position].is_word and len(gap) <= 3:
        gap += tokens[position].text
        position += 1
    if position >= len(tokens) or len(gap) > 3:
        return None
    stripped = gap.strip(" ")
    if stripped in ("", ",", ";", "-") and gap:
        return position
    return None


def _cue_before(view: View, index: int) -> bool:
    """A word before a bare house number saying an address follows: "ở 78 Trần Hưng Đạo",
    "địa chỉ: 123 …", "dc: 12 …", "address: 56 …"."""
    words: list[Token] = []
    previous = view.prev_word(index, allow=":", limit=2)
    while previous is not None and len(words) < ADDRESS_CUES.longest:
        words.insert(0, view.tokens[previous])
        if ADDRESS_CUES.matches(words, view.lenient):
            return True
        previous = view.prev_word(previous, limit=1)
    return False
