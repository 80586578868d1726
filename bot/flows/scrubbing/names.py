"""Personal names: a Vietnamese family name followed by given-name syllables.

Precision is the hard part: most family names are also ordinary words ("hồ sơ", "lê la", "thái
độ", "phản ánh" typed without accents is "phan anh"). So a family name starts a name only with
one of these signals:

1. capitals, in a comment where capitals mean something (not all in capitals, not Every Word
   Capitalised): "Nguyễn Văn An", "Trần Hưng", "NGUYEN VAN BINH" (an accent-less or all-capitals
   name also needs a known given or middle name);
2. the middle name "Văn" or "Thị", in any case: "nguyen van hung", "bùi văn toàn";
3. in an all-capitals or title-case comment, a frequent middle name: "NGUYỄN ĐỨC ANH";
4. an honorific before it and a known given name after it: "chị huỳnh như";
5. a self-introduction before it: "tôi là trần minh", "I am Tran Van Nam"; after "tên tôi là",
   "họ tên:", "my name is" whatever name-like words follow are taken, family name or not.

It is not a name when the two words make a common word ("Hồ Sơ", listed in ``COMPOUNDS``), a place
("Hà Nội", "Phan Thiết", in ``PLACES``), or follow a place word ("đường Lê Lợi", "xã Nguyễn Huệ").
A given name alone ("chị Lan ở quầy 3") is kept: it names an official and singles out no citizen.
"""

from __future__ import annotations

from bot.flows.scrubbing.found import Found
from bot.flows.scrubbing.lexicon import (
    COMPOUNDS,
    FAMILY,
    GIVEN,
    HONORIFICS,
    MIDDLE,
    MIDDLE_STRONG,
    NAME_STOP,
    PLACE_BEFORE,
    PLACES,
    PRONOUNS,
    STRONG_CUES,
    WEAK_CUES,
)
from bot.flows.scrubbing.text import Token, View

_MAX_SYLLABLE = 7
_CAPITALISED = ("title", "upper")


def find_names(view: View) -> list[Found]:
    found = []
    for index, token in enumerate(view.tokens):
        if not token.is_alpha:
            continue
        if (
            FAMILY.has(token, view.lenient)
            or _plain_with_middle(view, index)
            or _plain_capitalised(view, index)
        ):
            name = _from_family(view, index)
            if name is not None:
                found.append(name)
        cued = _after_cue(view, index)
        if cued is not None:
            found.append(cued)
    return found


def _plain_with_middle(view: View, index: int) -> bool:
    """A name typed without accents in a comment otherwise typed with them ("tran thi thu
    trang"): an accent-less "thi" / "van" after an accent-less family name shows a name."""
    token = view.tokens[index]
    if token.has_diacritics or not FAMILY.has(token, True):
        return False
    following = view.next_word(index, limit=1)
    if following is None:
        return False
    middle = view.tokens[following]
    return not middle.has_diacritics and MIDDLE_STRONG.has(middle, True)


def _plain_capitalised(view: View, index: int) -> bool:
    """A capitalised accent-less family name in a comment typed with accents ("anh Tran Minh
    Tuan"); ``_from_family`` then also wants a known given or middle name after it."""
    token = view.tokens[index]
    return (
        view.casing_mode == "normal"
        and token.casing in _CAPITALISED
        and token.text.isascii()
        and FAMILY.has(token, True)
    )


def _syllables(view: View, index: int, limit: int) -> list[int]:
    """Up to ``limit`` word tokens after ``index`` that could be syllables of a name."""
    result: list[int] = []
    current = index
    while len(result) < limit:
        following = view.next_word(current, limit=1)
        if following is None:
            break
        token = view.tokens[following]
        if not token.is_alpha or len(token.text) > _MAX_SYLLABLE:
            break
        result.append(following)
        current = following
    return result


def _common_word(view: View, index: int) -> bool:
    """A common word or a place ("Hồ Sơ", "Hà Nội"); an accent-less word is compared folded here
    even in an accented comment ("Ho Chi Minh"): excluding more costs no citizen anything."""
    phrase = view.phrase(index, 4)
    return bool(COMPOUNDS.longest_match(phrase, True) or PLACES.longest_match(phrase, True))


def _place_word_before(view: View, index: int) -> bool:
    previous = view.prev_word(index, allow=".", limit=2)
    return previous is not None and PLACE_BEFORE.has(view.tokens[previous], view.lenient)


def _known(token: Token, lenient: bool) -> bool:
    return GIVEN.has(token, lenient) or MIDDLE.has(token, lenient) or FAMILY.has(token, lenient)


def _from_family(view: View, index: int) -> Found | None:
    tokens = view.tokens
    family = tokens[index]
    lenient = view.lenient
    if _common_word(view, index) or _place_word_before(view, index):
        return None
    following = _syllables(view, index, 3)
    if not following:
        return None
    first = tokens[following[0]]
    # 2. "Văn" / "Thị" after a family name, in any case.
    plain = lenient or not (family.has_diacritics or first.has_diacritics)
    if MIDDLE_STRONG.has(first, plain) and len(following) >= 2:
        return Found(family.start, tokens[_last_given(view, family, following, plain)].end, "name")
    mode = view.casing_mode
    # 1. Capitals, where they mean something.
    if mode == "normal" and family.casing in _CAPITALISED:
        capitalised = []
        for position in following:
            if tokens[position].casing not in _CAPITALISED:
                break
            capitalised.append(position)
        if capitalised and not _number_before(view, index):
            words = [family, *(tokens[p] for p in capitalised)]
            plain = all(not t.has_diacritics for t in words)
            if (family.casing == "upper" or plain) and not any(
                GIVEN.has(t, True) or MIDDLE.has(t, True) for t in words[1:]
            ):
                return None
            return Found(family.start, tokens[capitalised[-1]].end, "name")
    # 3. A frequent middle name, in a comment written in capitals.
    if mode != "normal" and MIDDLE.has(first, lenient) and len(following) >= 2:
        return Found(
            family.start, tokens[_last_given(view, family, following, lenient)].end, "name"
        )
    # 4. An honorific before, a known given name after: "chị huỳnh như".
    previous = view.prev_word(index, limit=1)
    if previous is not None and HONORIFICS.has(tokens[previous], lenient):
        known = []
        for position in following:
            if not _known(tokens[position], lenient) or NAME_STOP.has(tokens[position], lenient):
                break
            known.append(position)
        if known and GIVEN.has(first, lenient):
            return Found(family.start, tokens[known[-1]].end, "name")
    return None


def _last_given(view: View, family: Token, following: list[int], lenient: bool) -> int:
    """After a family and a middle name, the last given name: the next syllable always, then
    any known or (where capitals mean something) capitalised one ("Nguyễn Thị Minh Khai")."""
    end = following[1]
    for position in following[2:]:
        token = view.tokens[position]
        capitalised = (
            view.casing_mode == "normal"
            and family.casing in _CAPITALISED
            and token.casing in _CAPITALISED
        )
        if NAME_STOP.has(token, lenient) or not (capitalised or _known(token, lenient)):
            break
        end = position
    return end


def _number_before(view: View, index: int) -> bool:
    """A number just before: a price ("2 Triệu Đồng"), or a street the address detector reads
    ("123 Nguyễn Trãi")."""
    previous = view.prev_word(index, limit=1)
    return previous is not None and view.tokens[previous].has_digit


# -- after a self-introduction ---------------------------------------------------------------------
def _after_cue(view: View, index: int) -> Found | None:
    tokens = view.tokens
    lenient = view.lenient
    first = tokens[index]
    if not (STRONG_CUES.may_start(first) or WEAK_CUES.may_start(first) or first.flat == "name"):
        return None
    phrase = view.phrase(index, 3)
    strong = STRONG_CUES.longest_match(phrase, lenient)
    weak = 0 if strong else WEAK_CUES.longest_match(phrase, lenient)
    if not strong and not weak and phrase[0].flat == "ten" and len(phrase) > 1:
        if PRONOUNS.has(phrase[1], lenient):
            strong = 2
    if not strong and not weak:
        if phrase[0].flat not in ("ten", "name") or not _colon_after(view, index):
            return None
        strong = 1
    last = _nth_word(view, index, (strong or weak) - 1)
    if last is None:
        return None
    start = _skip_to_name(view, last)
    if start is None:
        return None
    if weak and (not FAMILY.has(tokens[start], lenient) or _common_word(view, start)):
        return None
    names = [start]
    for position in _syllables(view, start, 3):
        token = tokens[position]
        if NAME_STOP.has(token, lenient) or not _name_like(view, token):
            break
        names.append(position)
    if weak and len(names) < 2:
        return None
    if not _name_like(view, tokens[start]) or _common_word(view, start):
        return None
    return Found(tokens[start].start, tokens[names[-1]].end, "name")


def _name_like(view: View, token: Token) -> bool:
    if not token.is_alpha or len(token.text) > _MAX_SYLLABLE:
        return False
    if view.casing_mode == "normal" and token.casing in _CAPITALISED:
        return True
    return _known(token, view.lenient)


def _nth_word(view: View, index: int, n: int) -> int | None:
    current: int | None = index
    for _ in range(n):
        current = view.next_word(current, limit=1) if current is not None else None
    return current


def _colon_after(view: View, index: int) -> bool:
    position = index + 1
    tokens = view.tokens
    if position < len(tokens) and tokens[position].kind == "space":
        position += 1
    return position < len(tokens) and tokens[position].text == ":"


def _skip_to_name(view: View, last_cue_word: int) -> int | None:
    """The first word after a cue, past ":", "," and one "là" / "is"."""
    following = view.next_word(last_cue_word, allow=":,-", limit=3)
    if following is None:
        return None
    if view.tokens[following].flat in ("la", "is"):
        following = view.next_word(following, allow=":", limit=2)
    if following is None or NAME_STOP.has(view.tokens[following], view.lenient):
        return None
    return following
