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
    # storage.units.UnitError reasons and the management forms' own
    "bad_code": N_("A unit's code is 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-'."),
    "bad_name": N_("A unit's name must have 1 to 255 characters."),
    "bad_kind": N_("Choose the kind of unit from the list."),
    "no_parent": N_("The parent unit does not exist."),
    "no_unit": N_("Not found."),
    "code_taken": N_("A unit with this code exists already."),
    "cycle": N_("A unit cannot move under itself or under a unit below it."),
    "bad_label": N_("Give the key a label (printable text, up to 128 characters)."),
    "bad_official": N_("Give the official a code and a name (printable text)."),
    "bad_move_official": N_(
        "That official cannot be moved there: they are no longer active, or the unit already "
        "has an active official with that code."
    ),
    "bad_role": N_("Choose a role from the list."),
    "bad_procedure": N_(
        "Give the procedure its national code (letters, digits, '.', '_', '-') and a name."
    ),
    "bad_field": N_("Choose the field from the list."),
    "bad_survey": N_("Choose a survey from the list."),
    "bad_quarter": N_("Choose a quarter from the list (written like 2026-Q3)."),
    "bad_criterion": N_("Each criterion is scored 2, 1 or 0 points, or left not assessed."),
    # bot.dashboard.accounts' AuthError messages
    "password must have at least 8 characters": N_("The password must have at least 8 characters."),
    "username must have 1 to 64 printable characters": N_(
        "The username must have 1 to 64 printable characters."
    ),
    "role must be admin, manager or viewer": N_("Choose a role from the list."),
    "a province admin has no unit; a manager or viewer needs one": N_(
        "A province admin has no unit; a manager or a viewer needs one."
    ),
    "this username is taken": N_("This username is taken."),
    "no such login": N_("Not found."),
    "the new password must differ from the current one": N_(
        "The new password must differ from the current one."
    ),
    "the current password is wrong": N_("The current password is wrong."),
    "the two new passwords differ": N_("The two new passwords differ."),
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
