"""Tolerant reading of a typed reply on channels without buttons.

Citizens answer "1", "một", "hài lòng", "hai long" (no accents), "👍" or "1, 3". The reply is
matched against the options in this order: the whole label, the longest label contained in the
reply, an option alias, then option numbers. Exact label first matters: "hai long" must mean
"Hài lòng", not option 2 ("hai").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

NUMBER_WORDS = {
    "khong": 0, "mot": 1, "hai": 2, "ba": 3, "bon": 4, "tu": 4, "nam": 5, "sau": 6,
    "bay": 7, "tam": 8, "chin": 9, "muoi": 10,
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10,
}  # fmt: skip
POSITIVE_EMOJI = ("👍", "❤", "😀", "😊", "🙂", "👌", "✅")
NEGATIVE_EMOJI = ("👎", "😡", "😠", "🙁", "☹", "❌")
_SEPARATORS = re.compile(r"[,;/+&\s]+|\bva\b|\band\b")


def fold(text: str) -> str:
    """Lower-case, accents removed (đ → d), punctuation collapsed: how people type without IME."""
    text = unicodedata.normalize("NFD", text.casefold()).replace("đ", "d")
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
    text = re.sub(r"[^\w\s,;/+&]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def _emoji_sentiment(text: str) -> str | None:
    if any(e in text for e in POSITIVE_EMOJI):
        return "positive"
    if any(e in text for e in NEGATIVE_EMOJI):
        return "negative"
    return None


def _number(token: str) -> int | None:
    if token.isdecimal():  # "²".isdigit() is True, yet int("²") raises
        return int(token)
    return NUMBER_WORDS.get(token)


def match_option(
    reply: str,
    labels: Sequence[Sequence[str]],
    sentiments: Sequence[str | None] = (),
) -> int | None:
    """Index of the option a reply means, or None. ``labels[i]`` holds every spelling of option i."""
    folded = fold(reply)
    folded_labels = [[fold(label) for label in spellings if label] for spellings in labels]
    for index, spellings in enumerate(folded_labels):
        if folded and folded in spellings:
            return index
    best: tuple[int, int] | None = None
    for index, spellings in enumerate(folded_labels):
        for label in spellings:
            if len(label) >= 3 and re.search(rf"\b{re.escape(label)}\b", folded):
                if best is None or len(label) > best[0]:
                    best = (len(label), index)
                elif len(label) == best[0] and index != best[1]:
                    best = (len(label), -1)
    if best is not None and best[1] >= 0:
        return best[1]
    tokens = folded.split()
    if len(tokens) == 1 or (len(tokens) == 2 and tokens[0] in {"so", "chon", "option"}):
        number = _number(tokens[-1])
        if number is not None and 1 <= number <= len(labels):
            return number - 1
    sentiment = _emoji_sentiment(reply)
    if sentiment and not folded and sentiments.count(sentiment) >= 1:
        return sentiments.index(sentiment)
    return None


def match_many(reply: str, labels: Sequence[Sequence[str]]) -> list[int] | None:
    """Indexes for a multiple-choice reply such as "1, 3" or "1 va 3"; None if any part is unknown."""
    single = match_option(reply, labels)
    if single is not None:
        return [single]
    parts = [p for p in _SEPARATORS.split(fold(reply)) if p]
    if not parts:
        return None
    chosen: list[int] = []
    for part in parts:
        index = match_option(part, labels)
        if index is None:
            return None
        if index not in chosen:
            chosen.append(index)
    return chosen
