"""Scrubbing of free-text comments before storage (brief, confidentiality invariant 4).

A citizen writing "call me on 0912 345 678" must not put their number into the confidential
store. Patterns are deliberately broad: a false positive costs one redacted word, a miss costs
a citizen's identity.
"""

from __future__ import annotations

import re

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
#: Candidate dossier codes as one-stop systems print them: letter/digit groups joined by
#: - . / _ (e.g. 000.00.12.H29-250101-0001, H29.22-241120-0007); ``_looks_like_code`` decides.
CODE_CANDIDATE = re.compile(r"\b[A-Za-z0-9]+(?:[.\-/_][A-Za-z0-9]+)+\b")
#: Any run of digits (allowing spaces, dots, dashes) long enough to be a phone or an ID number:
#: phones have 9–12 digits, CCCD 12, CMND 9, tax codes 10 or 13.
LONG_NUMBER = re.compile(r"(?<!\w)\+?\d(?:[\s.\-]?\d){7,}(?!\w)")

REDACTED = {
    "email": "[email]",
    "dossier": "[mã hồ sơ]",
    "number": "[số]",
}


def _looks_like_code(candidate: str) -> bool:
    """Letters mixed with 4+ digits, or 10+ digits: not a price (50.000) nor a date (20/11/2026)."""
    digits = sum(ch.isdigit() for ch in candidate)
    letters = sum(ch.isalpha() for ch in candidate)
    return (letters > 0 and digits >= 4) or digits >= 10


def _redact_code(match: re.Match[str]) -> str:
    return REDACTED["dossier"] if _looks_like_code(match.group(0)) else match.group(0)


def scrub(text: str) -> str:
    """Return ``text`` with emails, dossier codes, phone and ID numbers replaced by markers."""
    text = EMAIL.sub(REDACTED["email"], text)
    text = CODE_CANDIDATE.sub(_redact_code, text)
    text = LONG_NUMBER.sub(REDACTED["number"], text)
    return text


def scrub_exact(text: str, identifiers: list[str]) -> str:
    """Also redact identifiers we know verbatim (the dossier's own code), whatever their shape."""
    for identifier in identifiers:
        if identifier and len(identifier) >= 3:
            text = re.sub(re.escape(identifier), REDACTED["dossier"], text, flags=re.IGNORECASE)
    return scrub(text)
