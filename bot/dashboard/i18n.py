"""The dashboard's language and number formatting, on the one catalog of ``bot.i18n``.

The dashboard is read by provincial staff, so Vietnamese is the default and numbers use the
Vietnamese decimal comma; ``?lang=en`` (kept in a cookie) switches to English. Its texts are in
the templates (``_()``) and in ``bot/locale``; this module keeps the few said from Python.
"""

from __future__ import annotations

from bot.i18n import N_, format_number, format_percent, gettext, normalise_language

#: Error pages, by the reason the views give (the message ids are the English texts).
ERRORS: dict[str, str] = {
    "forbidden": N_("You may not see this."),
    "not_found": N_("Not found."),
    "bad_request": N_("Bad request."),
    "dead_letter_gone": N_(
        "That dead letter is no longer waiting: it was already retried, or its survey closed."
    ),
    "rows_admin_only": N_(
        "Row-level data is for province admins only; agencies see the released aggregates."
    ),
}


def t(lang: str, key: str, **values: object) -> str:
    """The error text for ``key`` (see ``ERRORS``), or the message ``key`` itself, in ``lang``."""
    return gettext(lang, ERRORS.get(key, key), **values)


def language(value: str | None) -> str:
    return normalise_language(value)


def number(value: float | int | None, lang: str, digits: int = 1) -> str:
    """1234.5 → "1.234,5" in Vietnamese, "1,234.5" in English; "–" when hidden."""
    return format_number(value, lang, digits)


def percent(value: float | None, lang: str) -> str:
    """Percentage points as the locale writes them ("87,5%"); "–" when hidden."""
    return format_percent(None if value is None else float(value), lang)
