"""One normalised view of a comment that every detector reads, mapped back to the original text.

Detectors must see "０９１２\u200b３４５" as "0912345" (full-width digits folded, invisible characters
gone), yet the scrubber must hand back the citizen's own text with only the identifiers replaced:
an emoji joined by zero-width joiners, or a full-width character in an ordinary word, is not
altered. So the view keeps, for every character of the normalised text, the span of the original
text it came from, and the scrubber replaces original spans.

Everything here is a single pass over the text (no regular expressions), so its cost is linear.
"""

from __future__ import annotations

import bisect
import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

#: Dashes, slashes and dots people type or paste between digit groups, folded to ASCII.
_FOLD_PUNCT = {
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2043\ufe58\ufe63", "-"),
    **dict.fromkeys("\u2044\u2215\u29f8", "/"),
    **dict.fromkeys("\u00b7\u2022\u2219\u22c5\u30fb\u3002\uff61", "."),
    **dict.fromkeys("\u3001\uff64", ","),
}
#: Characters that render as nothing but are not in category Cf (fillers, blank braille).
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f\u17b4\u17b5")

Casing = Literal["title", "upper", "lower", "other"]
#: Words (letters, digits and the combining marks NFKC leaves), runs of spaces, and single
#: characters; a repeat of single-character classes, so matching is linear.
_MARKS = "\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
_TOKENS = re.compile(rf"(?P<word>(?:[^\W_]|[{_MARKS}])+)|(?P<space> +)|.", re.DOTALL)
#: Words that are never part of a name or a place: capitalised, they show a comment in which
#: every word is capitalised.
_FUNCTION_WORDS = frozenset(
    """của tôi bị là và không được rất đã có cho với thì mà nên vì đến đi làm ở tại này một các
    những chưa cũng lại quá lắm ạ nhé em anh chị hồ sơ ngày lần giờ phải mới trả nộp chờ""".split()
)


@functools.lru_cache(maxsize=4096)
def _invisible(ch: str) -> bool:
    """Format characters (zero-width spaces and joiners, bidi marks, BOM, soft hyphen), variation
    selectors, enclosing marks (the keycap of 0️⃣), non-whitespace controls, and fillers."""
    category = unicodedata.category(ch)
    if category in ("Cf", "Me", "Cc", "Cs", "Co", "Cn"):
        return not ch.isspace() or category == "Cf"
    return ch in _INVISIBLE or "\ufe00" <= ch <= "\ufe0f" or "\U000e0100" <= ch <= "\U000e01ef"


def _function_words(tokens: list[Token]) -> int:
    return sum(t.text.lower() in _FUNCTION_WORDS for t in tokens)


@functools.lru_cache(maxsize=4096)
def _fold_for_view(ch: str) -> str:
    """What one (already NFKC) character becomes in ``View.norm``: "" when invisible, " " for any
    whitespace, ASCII for any decimal digit, "-", "/", "." or "," for their look-alikes."""
    if _invisible(ch):
        return ""
    if ch.isspace():
        return " "
    if ch.isdigit() and not ch.isascii():
        decimal = unicodedata.decimal(ch, None)
        if decimal is not None:
            return str(decimal)
    return _FOLD_PUNCT.get(ch, ch)


@functools.lru_cache(maxsize=4096)
def fold_char(ch: str) -> str:
    """One character in, one character out: lower case, no diacritics, đ → d."""
    lower = ch.lower()
    if len(lower) != 1:
        return ch
    if lower == "đ":
        return "d"
    base = unicodedata.normalize("NFD", lower)[0]
    return base if base.isascii() or not base.isalpha() else lower


@dataclass(frozen=True, slots=True)
class Token:
    """A word (letters and digits), one space run, or one punctuation character of ``View.norm``,
    with what the detectors ask of it computed once."""

    start: int
    end: int
    text: str
    #: Lower case without diacritics: how a citizen types without an input method.
    flat: str
    kind: Literal["word", "space", "punct"]
    is_word: bool
    has_digit: bool
    is_alpha: bool
    #: True for "phản", False for "phan": the spelling then tells which word was meant.
    has_diacritics: bool
    casing: Casing

    @classmethod
    def make(
        cls, start: int, end: int, text: str, flat: str, kind: Literal["word", "space", "punct"]
    ) -> Token:
        word = kind == "word"
        return cls(
            start,
            end,
            text,
            flat,
            kind,
            is_word=word,
            has_digit=word and any(ch.isdigit() for ch in text),
            is_alpha=word and text.isalpha(),
            has_diacritics=flat != text.lower(),
            casing=_casing(text) if word else "other",
        )


def _casing(text: str) -> Casing:
    if text.isupper():
        return "upper"
    if text.istitle():
        return "title"
    if text.islower():
        return "lower"
    return "other"


class View:
    """``norm``: NFKC, invisible characters removed, any decimal digit as ASCII, dashes, slashes and
    dots folded, every whitespace as one space character each. ``flat``: ``norm`` folded character
    by character (same length). ``tokens``: words, spaces and punctuation of ``norm``."""

    def __init__(self, original: str) -> None:
        self.original = original
        chars: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        if unicodedata.is_normalized("NFKC", original):
            # The usual case: each character stands for itself, no normalisation call needed.
            for index, ch in enumerate(original):
                folded = _fold_for_view(ch)
                if folded:
                    chars.append(folded)
                    starts.append(index)
                    ends.append(index + 1)
        else:
            self._normalise_clusters(original, chars, starts, ends)
        self.norm = "".join(chars)
        self.flat = "".join(fold_char(ch) for ch in chars)
        self._starts = starts
        self._ends = ends
        self.tokens = self._tokenise()
        self._token_starts = [t.start for t in self.tokens]
        self.has_diacritics = self.flat != self.norm.lower()
        #: A comment typed without any diacritics: only then may "lo" stand for "Lò".
        self.lenient = not self.has_diacritics
        self.casing_mode = self._casing_mode()

    @staticmethod
    def _normalise_clusters(
        original: str, chars: list[str], starts: list[int], ends: list[int]
    ) -> None:
        """NFKC one base character and its marks at a time, so each output character knows the
        original span it came from."""
        index = 0
        length = len(original)
        while index < length:
            end = index + 1
            while end < length and unicodedata.category(original[end]).startswith("M"):
                if _invisible(original[end]):
                    break
                end += 1
            for ch in unicodedata.normalize("NFKC", original[index:end]):
                folded = _fold_for_view(ch)
                if folded:
                    chars.append(folded)
                    starts.append(index)
                    ends.append(end)
            index = end

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The span of the original text that ``norm[start:end]`` came from."""
        return self._starts[start], self._ends[end - 1]

    def covered(self, start: int, end: int) -> range:
        """Indexes of the tokens that overlap ``norm[start:end]``."""
        first = max(0, bisect.bisect_right(self._token_starts, start) - 1)
        last = bisect.bisect_left(self._token_starts, end)
        return range(first, last)

    def _tokenise(self) -> list[Token]:
        norm, flat = self.norm, self.flat
        tokens = []
        for match in _TOKENS.finditer(norm):
            start, end = match.span()
            kind: Literal["word", "space", "punct"] = (
                "word" if match.lastgroup == "word" else "space" if norm[start] == " " else "punct"
            )
            tokens.append(Token.make(start, end, norm[start:end], flat[start:end], kind))
        return tokens

    def _casing_mode(self) -> Literal["normal", "upper", "title"]:
        """Whether capitals carry information: not when the whole comment is in capitals, nor when
        every word is capitalised ("Hồ Sơ Của Tôi Bị Chậm"): a name is then told by other cues.
        Capitalised function words ("Của", "Bị") are what tell such a comment from one that is
        mostly proper names ("ở 78 Trần Hưng Đạo, P. Phạm Ngũ Lão")."""
        words = [t for t in self.tokens if t.is_alpha and len(t.text) > 1]
        if len(words) < 3:
            return "normal"
        upper = [t for t in words if t.casing == "upper"]
        capitalised = [t for t in words[1:] if t.casing in ("upper", "title")]
        if len(upper) >= 0.6 * len(words) and _function_words(upper) >= 1:
            return "upper"
        if len(capitalised) >= 0.6 * (len(words) - 1) and _function_words(capitalised) >= 2:
            return "title"
        return "normal"

    # -- navigation --------------------------------------------------------------------------------
    def next_word(self, index: int, allow: str = "", limit: int = 3) -> int | None:
        """The word after token ``index`` when only spaces (and punctuation in ``allow``) lie
        between, at most ``limit`` tokens of them; None otherwise."""
        return self._walk(index, 1, allow, limit)

    def prev_word(self, index: int, allow: str = "", limit: int = 3) -> int | None:
        """The word before token ``index``, on the same terms as ``next_word``."""
        return self._walk(index, -1, allow, limit)

    def phrase(self, index: int, size: int) -> list[Token]:
        """Up to ``size`` words from word token ``index`` on, separated by spaces only."""
        words = [self.tokens[index]]
        current: int | None = index
        while len(words) < size:
            current = self.next_word(current, limit=1) if current is not None else None
            if current is None:
                break
            words.append(self.tokens[current])
        return words

    def _walk(self, index: int, step: int, allow: str, limit: int) -> int | None:
        position = index + step
        skipped = 0
        while 0 <= position < len(self.tokens) and skipped <= limit:
            token = self.tokens[position]
            if token.kind == "word":
                return position
            if token.kind == "punct" and token.text not in allow:
                return None
            position += step
            skipped += 1
        return None
