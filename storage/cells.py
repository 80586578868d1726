"""The last step of every exported cell: legal characters, then no formula.

A spreadsheet runs a cell as a formula when its text starts with ``=``, ``+``, ``-`` or ``@``
(and some read a leading tab or carriage return the same way). The order matters: a comment
"\\x01=HYPERLINK(...)" has a harmless first character until the control character is removed,
so neutralising before stripping (as the exports once did) leaves a live formula in the XLSX.
Hence ``clean``: strip what no format may carry, *then* neutralise, and judge the first
*visible* character: leading white space, control and format characters (zero-width spaces,
BOMs) are skipped, and the character is folded by NFKC so the full-width ``＝＋－＠`` and the
small forms ``﹦﹢﹣﹫`` count as what they look like. A neutralised cell starts with an
apostrophe, so cleaning twice changes nothing.

Every writer (CSV, XLSX, JSON Lines) gets cells that went through ``clean``, so the three
formats carry the same text.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

#: Characters no export carries: C0 controls but tab and line breaks (XML 1.0 forbids them,
#: openpyxl refuses them), DEL and the C1 controls, U+FFFE/U+FFFF, and lone surrogates (not
#: encodable as UTF-8).
ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff\ud800-\udfff]")
FORMULA_STARTS = frozenset("=+-@")
#: Starting a cell with one of these is read as the start of a formula by some spreadsheets.
RISKY_FIRST = frozenset("\t\r")
#: Unicode categories skipped when looking for the first visible character.
INVISIBLE = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me"})
QUOTE = "'"


def clean(value: Any) -> Any:
    """A cell as every export writes it: text stripped of illegal characters, then neutralised;
    anything else unchanged."""
    if not isinstance(value, str):
        return value
    return neutralise(ILLEGAL.sub("", value))


def neutralise(text: str) -> str:
    """Prefix an apostrophe to text a spreadsheet would evaluate (formula injection).

    Call it on text that is already stripped (``clean`` does both, in that order)."""
    for ch in text:
        if ch in FORMULA_STARTS or ch in RISKY_FIRST:
            return QUOTE + text
        if ch.isalnum() or ch == QUOTE:
            return text
        if ch.isspace() or unicodedata.category(ch) in INVISIBLE:
            continue
        return QUOTE + text if unicodedata.normalize("NFKC", ch)[:1] in FORMULA_STARTS else text
    return text
