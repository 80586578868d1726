"""Scrubbing of free-text comments before storage (brief, confidentiality invariant 4).

A citizen writing "call me on 0912 345 678" must not put their number into the confidential
store. Patterns are deliberately broad: a false positive costs one redacted word, a miss costs
a citizen's identity.
"""

from __future__ import annotations

import re

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
#: Dossier codes as one-stop systems print them: letters/digits groups joined by - . / _,
#: containing at least 4 digits (e.g. 000.00.12.H29-250101-0001, H29.22-241120-0007).
DOSSIER_CODE = re.compile(
    r"\b(?=[\w.\-/]*\d[\w.\-/]*\d[\w.\-/]*\d[\w.\-/]*\d)[A-Za-z0-9]+(?:[.\-/_][A-Za-z0-9]+){1,}\b"
)
#: Any run of digits (allowing spaces, dots, dashes) long enough to be a phone or an ID number:
#: phones have 9–12 digits, CCCD 12, CMND 9, tax codes 10 or 13.
LONG_NUMBER = re.compile(r"(?<!\w)\+?\d(?:[\s.\-]?\d){7,}(?!\w)")

REDACTED = {
    "email": "[email]",
    "dossier": "[mã hồ sơ]",
    "number": "[số]",
}


def scrub(text: str) -> str:
    """Return ``text`` with emails, dossier codes, phone and ID numbers replaced by markers."""
    text = EMAIL.sub(REDACTED["email"], text)
    text = DOSSIER_CODE.sub(REDACTED["dossier"], text)
    text = LONG_NUMBER.sub(REDACTED["number"], text)
    return text


def scrub_exact(text: str, identifiers: list[str]) -> str:
    """Also redact identifiers we know verbatim (the dossier's own code), whatever their shape."""
    for identifier in identifiers:
        if identifier and len(identifier) >= 3:
            text = re.sub(re.escape(identifier), REDACTED["dossier"], text, flags=re.IGNORECASE)
    return scrub(text)
