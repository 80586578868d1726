"""Pages of a management list: a province's catalogue or staff is thousands of rows, and the
catalogue's rows are multiplied by its units' columns, each cell a form; a page renders
``SIZE`` of them, with links to the others and a text filter.

The rows are read whole (code, name: a few thousand short rows) and filtered here rather than
by SQL, because the filter should match Vietnamese the way staff type it, with or without
diacritics and in either case ("dang ky" finds "Đăng ký"), on SQLite as on PostgreSQL, whose
``LIKE``/``ILIKE`` fold neither the same way. What is expensive, the rendering, is what a
page bounds.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import urlencode

T = TypeVar("T")

#: Rows of a page (procedures, officials), and unit columns of the catalogue's table.
SIZE = 50
UNIT_COLUMNS = 12
#: The longest filter text kept (a name is at most 255 characters).
QUERY_LIMIT = 100


class BadPage(ValueError):
    """A page number that is not a number (the view answers 400)."""


def fold(text: str) -> str:
    """Lower case without diacritics, đ as d: what the filter compares."""
    decomposed = unicodedata.normalize("NFD", text.casefold().replace("đ", "d"))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def matching(rows: Iterable[T], query: str, *texts: Callable[[T], str]) -> list[T]:
    """The rows whose texts contain the query (folded); every row when it is empty."""
    wanted = fold(query.strip())
    if not wanted:
        return list(rows)
    return [row for row in rows if any(wanted in fold(text(row) or "") for text in texts)]


def number(query: Mapping[str, str], param: str) -> int:
    """The page asked for (1 when absent); ``BadPage`` when it is not a positive number."""
    raw = query.get(param, "") or "1"
    if not raw.isdecimal() or len(raw) > 9 or int(raw) < 1:
        raise BadPage(raw)
    return int(raw)


@dataclass(frozen=True, slots=True)
class Link:
    number: int
    href: str
    current: bool


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list: its rows and what the page links need."""

    items: list[T]
    number: int
    count: int
    total: int
    size: int
    links: list[Link]

    @property
    def first(self) -> int:
        """The row number (from 1) of the page's first row, 0 when the list is empty."""
        return (self.number - 1) * self.size + 1 if self.items else 0

    @property
    def last(self) -> int:
        return self.first + len(self.items) - 1 if self.items else 0


def paginate(
    rows: Sequence[T],
    asked: int,
    param: str,
    query: Mapping[str, str],
    path: str,
    size: int = SIZE,
) -> Page[T]:
    """The ``asked`` page of ``rows`` (past the last: the last), with a link to every page that
    keeps the rest of the query (the unit chosen, the filter, another list's page)."""
    count = max(1, -(-len(rows) // size))
    current = min(asked, count)
    kept = {k: v for k, v in query.items() if k != param and v}

    def href(n: int) -> str:
        params = {**kept, param: str(n)} if n > 1 else kept
        return f"{path}?{urlencode(params)}" if params else path

    links = [Link(n, href(n), n == current) for n in _shown(current, count)]
    start = (current - 1) * size
    return Page(list(rows[start : start + size]), current, count, len(rows), size, links)


def _shown(current: int, count: int) -> list[int]:
    """The page numbers linked: the first, the last and two either side of the current one."""
    return sorted({1, count, *range(max(1, current - 2), min(count, current + 2) + 1)})


def state(values: Mapping[str, str], params: Sequence[str]) -> dict[str, str]:
    """The view's paging state (its page numbers, its filter): what a form carries back from
    the page and what the redirect after the change keeps, so the same page shows again. A
    page number that is not one is dropped, never an error: the change itself was made."""
    kept = {}
    for param in params:
        value = str(values.get(param, "")).strip()[:QUERY_LIMIT]
        if value and (param == "q" or (value.isdecimal() and len(value) <= 9)):
            kept[param] = value
    return kept


def query_string(values: Mapping[str, str]) -> str:
    """``?a=b&…`` for a redirect, or '' when there is nothing to keep."""
    return f"?{urlencode(values)}" if values else ""
