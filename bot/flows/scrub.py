"""Scrubbing of free-text comments before anything is written anywhere (brief, invariant 4).

A citizen writing "gọi em 0912 345 678" or "tôi là Nguyễn Văn An, nhà số 12 ngõ 34" must not
put their number, name or address into the confidential store, an export, the outbox or a log.
Each identifier found is replaced by a marker ("[số]", "[tên]", "[địa chỉ]" …); everything else
in the comment is returned exactly as the citizen typed it, so a comment with no identifier is
never altered.

The detectors (``bot/flows/scrubbing/``) all read one normalised view of the comment (NFKC,
invisible characters removed, full-width digits and symbols folded) and report spans of it, which
are mapped back to the original text. ``tests/test_scrub_corpus.py`` measures them on a labelled
corpus of citizens' comments: the recall and the share of clean comments altered it prints are the
figures to quote, and what each detector deliberately keeps (a street named alone, a given name
after "chị") is written in the corpus files and in each detector's docstring.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from bot.flows.scrubbing.addresses import find_addresses
from bot.flows.scrubbing.emails import find_emails
from bot.flows.scrubbing.found import Found
from bot.flows.scrubbing.links import find_links
from bot.flows.scrubbing.names import find_names
from bot.flows.scrubbing.numbers import find_numbers
from bot.flows.scrubbing.text import View

REDACTED = {
    "email": "[email]",
    "handle": "[tài khoản]",
    "link": "[liên kết]",
    "dossier": "[mã hồ sơ]",
    "number": "[số]",
    "passport": "[số]",
    "plate": "[biển số]",
    "name": "[tên]",
    "address": "[địa chỉ]",
}
#: When spans overlap, the longer wins; on a tie, the kind that comes first here.
_PRECEDENCE = (
    "link",
    "email",
    "dossier",
    "plate",
    "passport",
    "number",
    "address",
    "name",
    "handle",
)
_MARKERS = re.compile("|".join(re.escape(m) for m in sorted(set(REDACTED.values()))))


@dataclass(frozen=True, slots=True)
class Redaction:
    """One identifier found: ``text[start:end]`` of the original text, and its kind."""

    start: int
    end: int
    kind: str

    @property
    def marker(self) -> str:
        return REDACTED[self.kind]


def find_identifiers(text: str, *, people: bool = True) -> list[Redaction]:
    """Every identifier in ``text``, as non-overlapping spans of it in order; without
    ``people``, only numbers, codes, e-mails, handles and profile links (no names or addresses:
    for machine text such as log lines, whose capitalised words are not citizens' names)."""
    view = View(text)
    found = find_links(view) + find_emails(view) + find_numbers(view)
    if people:
        found += find_addresses(view) + find_names(view)
    return [
        Redaction(*view.original_span(f.start, f.end), f.kind)
        for f in _merge(_outside_markers(view, found))
    ]


def redact(text: str, redactions: list[Redaction]) -> str:
    """``text`` with each span replaced by its marker."""
    parts = []
    position = 0
    for redaction in redactions:
        parts.append(text[position : redaction.start])
        parts.append(redaction.marker)
        position = redaction.end
    parts.append(text[position:])
    return "".join(parts)


def scrub(text: str) -> str:
    """Return ``text`` with phones, ID numbers, e-mails, dossier codes, plates, bank accounts,
    names and addresses replaced by markers; idempotent."""
    return redact(text, find_identifiers(text))


def scrub_contacts(text: str) -> str:
    """Return ``text`` with phones and other identifying numbers, codes, e-mails, handles and
    profile links replaced by markers, names and addresses left (``find_identifiers``'s
    ``people=False``); idempotent. The log redaction filter (``bot/logs.py``) uses it."""
    return redact(text, find_identifiers(text, people=False))


def scrub_exact(text: str, identifiers: list[str]) -> str:
    """Also redact identifiers we know verbatim (the dossier's own code), whatever their shape,
    case or separators ("HS123" also as "hs 123" or "h.s-123")."""
    for identifier in identifiers:
        skeleton = "".join(ch for ch in View(identifier).flat if ch.isalnum())
        if len(skeleton) >= 3:
            text = redact(text, _known(text, skeleton))
    return scrub(text)


def _known(text: str, skeleton: str) -> list[Redaction]:
    """Where the letters and digits of ``skeleton`` occur in ``text`` in order, with at most a few
    separators between them, starting and ending on word boundaries."""
    view = View(text)
    flat = view.flat
    positions = [i for i, ch in enumerate(flat) if ch.isalnum()]
    letters = "".join(flat[i] for i in positions)
    found = []
    start = letters.find(skeleton)
    while start != -1:
        span = positions[start : start + len(skeleton)]
        first, last = span[0], span[-1]
        compact = all(b - a <= 3 for a, b in itertools.pairwise(span))
        bounded = (first == 0 or not flat[first - 1].isalnum()) and (
            last + 1 >= len(flat) or not flat[last + 1].isalnum()
        )
        if compact and bounded:
            found.append(Found(first, last + 1, "dossier"))
        start = letters.find(skeleton, start + 1)
    return [Redaction(*view.original_span(f.start, f.end), f.kind) for f in _merge(found)]


def _outside_markers(view: View, found: list[Found]) -> list[Found]:
    """Spans that do not touch a marker left by an earlier scrub, so scrubbing twice changes
    nothing ("[mã hồ sơ]" holds "hồ sơ", "[địa chỉ]" an address cue)."""
    markers = [(m.start(), m.end()) for m in _MARKERS.finditer(view.norm)]
    if not markers:
        return found
    return [f for f in found if not any(f.start < e and f.end > s for s, e in markers)]


def _merge(found: list[Found]) -> list[Found]:
    """Overlapping spans become one, of the kind of the longest."""
    merged: list[tuple[int, int, Found]] = []
    for item in sorted(found, key=lambda f: (f.start, -(f.end - f.start))):
        if merged and item.start < merged[-1][1]:
            start, end, best = merged[-1]
            if _rank(item) < _rank(best):
                best = item
            merged[-1] = (start, max(end, item.end), best)
        else:
            merged.append((item.start, item.end, item))
    return [Found(start, end, best.kind) for start, end, best in merged]


def _rank(found: Found) -> tuple[int, int]:
    return -(found.end - found.start), _PRECEDENCE.index(found.kind)
