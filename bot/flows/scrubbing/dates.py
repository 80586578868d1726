"""Dates and times in a comment: they never join a run of digits, so "20/11/2026 - 25/11/2026",
"ngày 3/12" or "7:30 - 11:30" are never read as one long number.

Every pattern is anchored on a word boundary on the left and has bounded quantifiers only.
"""

from __future__ import annotations

import re

from bot.flows.scrubbing.text import View

_DATE3 = re.compile(
    r"(?<!\w)(?<!\d[/.\-])(\d{1,2})([/.\-])(\d{1,2})\2(?:\d{4}|\d{2})(?!\d)(?![/.\-]\d)"
)
_DATE2 = re.compile(r"(?<!\w)(?<!\d[/.\-])(\d{1,2})[/.\-](\d{1,2})(?!\d)(?![/.\-]\d)")
_ISO_DATE = re.compile(r"(?<!\w)(?:19|20)\d{2}-[01]\d-[0-3]\d(?!\d)")
_MONTH_YEAR = re.compile(
    r"(?<!\w)(?<!\d[/.\-])(?:0?[1-9]|1[0-2])[/.\-](?:19|20)\d{2}(?!\d)(?![/.\-]\d)"
)
_TIME = re.compile(r"(?<!\w)\d{1,2}(?:[hHgG]\d{0,2}|:\d{2})(?!\d)")


def protected_tokens(view: View) -> set[int]:
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
