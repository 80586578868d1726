"""Bot interface strings from gettext catalogs (Babel), Vietnamese by default.

Survey texts live in the survey definitions; this catalog holds only what the bot itself says
(help, errors, commands). Message ids are English, so English needs no catalog.
"""

from __future__ import annotations

import functools
from pathlib import Path

from babel.messages.pofile import read_po

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "surveybot"
SUPPORTED = ("vi", "en")
DEFAULT_LANGUAGE = "vi"


@functools.cache
def _catalog(language: str) -> dict[str, str]:
    path = LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not path.exists():
        return {}
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=language)
    return {str(m.id): str(m.string) for m in catalog if m.id and m.string and not m.fuzzy}


def gettext(language: str, message: str, **values: object) -> str:
    """The translation of ``message`` (falling back to English), formatted with ``values``."""
    text = _catalog(language).get(message, message) if language != "en" else message
    return text.format(**values) if values else text


def normalise_language(value: str | None) -> str:
    """Map what a client says ("vi-VN", "EN") onto a supported language, Vietnamese by default."""
    base = (value or "").split("-")[0].split("_")[0].lower()
    return base if base in SUPPORTED else DEFAULT_LANGUAGE
