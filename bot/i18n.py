"""One gettext catalog (Babel) for everything the project says: bot, dashboard and web pages.

Message ids are the English texts, so English needs no catalog (its plural rule is gettext's
default: one form for 1, another for the rest); Vietnamese is ``locale/vi/LC_MESSAGES``, whose
``.po`` is the source and whose compiled ``.mo`` is what runs (a test fails when the two differ,
another when a message used in code or templates has no Vietnamese translation). Survey texts
live in the survey definitions, not here.

Python code formats with ``str.format`` placeholders (``{n}``); templates go through Jinja2's
i18n extension, whose new-style gettext formats with ``%(n)s``. Numbers placed in a message are
written the reader's way: ``format_decimal``/``format_percent``/``babel.dates`` with the message's
locale ("1.234,5" in Vietnamese, "1,234.5" in English). Exports are machine-readable and never
come through here.

Extract and compile (see ``babel.cfg``)::

    pybabel extract -F babel.cfg -o var/surveybot.pot .
    pybabel update -i var/surveybot.pot -d bot/locale -D surveybot -l vi -w 100 --no-fuzzy-matching
    pybabel compile -d bot/locale -D surveybot
"""

from __future__ import annotations

import datetime as dt
import functools
from decimal import Decimal
from gettext import NullTranslations
from pathlib import Path
from typing import Any

import jinja2
from babel import dates, numbers
from babel.support import Translations

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "surveybot"
SUPPORTED = ("vi", "en")
DEFAULT_LANGUAGE = "vi"
SOURCE_LANGUAGE = "en"
#: What a withheld or missing figure reads as, in every language.
MISSING = "–"


def N_(message: str) -> str:
    """Mark ``message`` for extraction where it is defined; it is translated where it is said."""
    return message


@functools.cache
def translations(language: str) -> NullTranslations:
    """The compiled catalog of ``language``; English (the message ids) is the null catalog."""
    if language == SOURCE_LANGUAGE:
        return NullTranslations()
    return Translations.load(LOCALE_DIR, [language], DOMAIN)


def gettext(language: str, message: str, **values: object) -> str:
    """The translation of ``message`` (falling back to English), formatted with ``values``."""
    text = translations(language).gettext(message)
    return text.format(**_localised(language, values)) if values else text


def ngettext(language: str, singular: str, plural: str, n: int, **values: object) -> str:
    """The form of a counted message for ``n`` under the catalog's Plural-Forms.

    ``{n}`` in the text is the count, written with the locale's digit grouping.
    """
    text = translations(language).ngettext(singular, plural, n)
    return text.format(**_localised(language, {"n": n, **values}))


def _localised(language: str, values: dict[str, object]) -> dict[str, object]:
    """Numbers among ``values`` written the locale's way; everything else as given."""
    return {
        k: format_number(v, language)
        if isinstance(v, int | float) and not isinstance(v, bool)
        else v
        for k, v in values.items()
    }


def normalise_language(value: str | None) -> str:
    """Map what a client says ("vi-VN", "EN") onto a supported language, Vietnamese by default."""
    base = (value or "").split("-")[0].split("_")[0].lower()
    return base if base in SUPPORTED else DEFAULT_LANGUAGE


# ------------------------------------------------------------------------------ numbers, dates
def format_number(value: float | int | None, language: str, digits: int = 1) -> str:
    """1234.5 → "1.234,5" in Vietnamese, "1,234.5" in English; an int has no decimals.

    The float goes to Babel as its exact binary value, so it rounds where ``f"{x:.1f}"`` does.
    """
    if value is None:
        return MISSING
    if isinstance(value, int):
        return numbers.format_decimal(value, format="#,##0", locale=language)
    pattern = "#,##0" + ("." + "0" * digits if digits > 0 else "")
    return numbers.format_decimal(Decimal(value), format=pattern, locale=language)


def format_percent(points: float | None, language: str, digits: int = 1) -> str:
    """A share given in percentage points (87.5) as the locale writes it: "87,5%" / "87.5%"."""
    if points is None:
        return MISSING
    pattern = "#,##0" + ("." + "0" * digits if digits > 0 else "") + "%"
    return numbers.format_percent(Decimal(points) / 100, format=pattern, locale=language)


def format_date(value: dt.date | None, language: str) -> str:
    """A calendar day: "2 thg 12, 2026" / "Dec 2, 2026"."""
    return MISSING if value is None else dates.format_date(value, "medium", locale=language)


def format_datetime(value: dt.datetime | None, language: str) -> str:
    """A moment in UTC (naive values are UTC): "08:05:00 2 thg 12, 2026" / "Dec 2, 2026, …"."""
    if value is None:
        return MISSING
    return dates.format_datetime(value, "medium", tzinfo=dt.UTC, locale=language)


# ------------------------------------------------------------------------------ Jinja2
@jinja2.pass_context
def _template_gettext(context: jinja2.runtime.Context, message: str) -> str:
    return translations(context["lang"]).gettext(message)


@jinja2.pass_context
def _template_ngettext(context: jinja2.runtime.Context, singular: str, plural: str, n: int) -> str:
    return translations(context["lang"]).ngettext(singular, plural, n)


def install(env: jinja2.Environment) -> jinja2.Environment:
    """Give ``env`` the i18n extension over this catalog, in the language of each render.

    A template renders with ``lang`` in its context; ``_()``, ``gettext``, ``ngettext`` and
    ``{% trans %}`` read the catalog of that language, and ``num``/``pct``/``date``/``when``
    write numbers and dates its way.
    """
    env.add_extension("jinja2.ext.i18n")
    env.install_gettext_callables(  # type: ignore[attr-defined]
        _template_gettext, _template_ngettext, newstyle=True
    )
    env.globals.update(
        num=_template_number, pct=_template_percent, date=_template_date, when=_template_when
    )
    return env


@jinja2.pass_context
def _template_number(context: jinja2.runtime.Context, value: Any, digits: int = 1) -> str:
    return format_number(value, context["lang"], digits)


@jinja2.pass_context
def _template_percent(context: jinja2.runtime.Context, value: Any) -> str:
    return format_percent(None if value is None else float(value), context["lang"])


@jinja2.pass_context
def _template_date(context: jinja2.runtime.Context, value: dt.date | None) -> str:
    return format_date(value, context["lang"])


@jinja2.pass_context
def _template_when(context: jinja2.runtime.Context, value: dt.datetime | None) -> str:
    return format_datetime(value, context["lang"])
