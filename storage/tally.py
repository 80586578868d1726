"""Running counts of responses per unit (the dashboard's and aggregate exports' only source).

Every figure an admin sees is a sum over responses grouped by one dimension: official,
procedure, day, score band or criteria points, always within an agency and split by the
satisfaction level. ``response_tally`` keeps those sums up to date, written by database
triggers on every insert, update and delete of a response: no code path (the service, the CLI,
an erasure, a cascade, a hand-run SQL statement) can change a response without its tally
following, and a dashboard page reads a few hundred tally rows instead of scanning every
response. ``backfill_statements`` rebuilds the counts from the responses (migration 0006).

Keys hold no NULLs, so one unique key serves the upsert on SQLite and PostgreSQL alike: a
missing unit is ``''`` and a missing satisfaction ``0``. Scores are summed in tenths, as
integers, so adding and taking away a score leaves no rounding residue; the maxima are summed
beside them, so a mean reads as a total out of the maximum of the schemes that scored it.

The writers take their row locks in one global order (dimension, then key), so two
transactions moving responses between the same cells wait for each other instead of
deadlocking.
"""

from __future__ import annotations

from dataclasses import dataclass

TABLE = "response_tally"
KEY = ("dimension", "agency_id", "unit", "satisfaction")


@dataclass(frozen=True, slots=True)
class Layout:
    """The response columns a tally is computed from; a migration passes the layout of its day.

    ``maximum`` None is a tally without ``maximum_tenths`` (before migration 0008).
    """

    total: str
    band: str
    maximum: str | None

    @property
    def watched(self) -> tuple[str, ...]:
        """The response columns a tally depends on: an update touching none of them costs nothing."""
        keys = ("agency_id", "official_id", "procedure_id", "answered_on", "satisfaction")
        scores = (self.band, "criteria", self.total, *([self.maximum] if self.maximum else []))
        return keys + scores

    @property
    def sums(self) -> tuple[str, ...]:
        return (
            "responses",
            "scored",
            "score_tenths",
            *(["maximum_tenths"] if self.maximum else []),
        )


#: Neutral score columns (migration 0008): any scheme's total out of its own maximum.
CURRENT = Layout(total="score_total", band="score_band", maximum="score_maximum")
WATCHED = CURRENT.watched


def unit_expressions(dialect: str, row: str, layout: Layout = CURRENT) -> dict[str, str]:
    """Dimension → the SQL of its unit for the response ``row`` (NEW, OLD or a table alias)."""
    if dialect == "postgresql":
        day = f"to_char({row}.answered_on, 'YYYY-MM-DD')"
        criteria = f"CAST({row}.criteria AS TEXT)"
    else:
        day = f"{row}.answered_on"
        criteria = f"{row}.criteria"
    return {
        "official": f"COALESCE({row}.official_id, '')",
        "procedure": f"COALESCE({row}.procedure_id, '')",
        "day": day,
        "class": f"COALESCE({row}.{layout.band}, '')",
        "criteria": f"COALESCE({criteria}, '')",
    }


DIMENSIONS: tuple[str, ...] = tuple(unit_expressions("sqlite", "r"))


def _tenths(sign: int, row: str, column: str) -> str:
    return f"{sign} * COALESCE(CAST(ROUND({row}.{column} * 10) AS BIGINT), 0)"


def _source(dialect: str, row: str, sign: int, dimension: str, layout: Layout) -> str:
    unit = unit_expressions(dialect, row, layout)[dimension]
    maximum = (
        f", CASE WHEN {row}.{layout.total} IS NULL THEN 0 "
        f"ELSE {_tenths(sign, row, layout.maximum)} END AS maximum_tenths"
        if layout.maximum
        else ""
    )
    return (
        f"SELECT '{dimension}' AS dimension, {row}.agency_id AS agency_id, {unit} AS unit, "
        f"COALESCE({row}.satisfaction, 0) AS satisfaction, {sign} AS responses, "
        f"CASE WHEN {row}.{layout.total} IS NULL THEN 0 ELSE {sign} END AS scored, "
        f"{_tenths(sign, row, layout.total)} AS score_tenths{maximum}"
    )


def _upsert(dialect: str, rows: list[tuple[str, int]], dimension: str, layout: Layout) -> str:
    """One statement per dimension: the changes of OLD and NEW netted per key, applied in key
    order (a response that keeps its cell nets to zero and locks nothing)."""
    sources = " UNION ALL ".join(
        _source(dialect, row, sign, dimension, layout) for row, sign in rows
    )
    key = ", ".join(KEY)
    sums = ", ".join(layout.sums)
    summed = ", ".join(f"SUM({c})" for c in layout.sums)
    nonzero = " OR ".join(f"SUM({c}) <> 0" for c in layout.sums)
    added = ", ".join(f"{c} = {TABLE}.{c} + excluded.{c}" for c in layout.sums)
    return (
        f"INSERT INTO {TABLE} ({key}, {sums}) "  # noqa: S608 (constants)
        f"SELECT {key}, {summed} FROM ({sources}) AS c "
        f"WHERE true GROUP BY {key} "
        f"HAVING {nonzero} "
        f"ORDER BY {key} "
        f"ON CONFLICT ({key}) DO UPDATE SET {added}"
    )


def _changes(dialect: str, rows: list[tuple[str, int]], layout: Layout) -> list[str]:
    return [_upsert(dialect, rows, dimension, layout) for dimension in DIMENSIONS]


EVENTS: dict[str, list[tuple[str, int]]] = {
    "insert": [("NEW", 1)],
    "update": [("OLD", -1), ("NEW", 1)],
    "delete": [("OLD", -1)],
}


def trigger_statements(dialect: str, layout: Layout = CURRENT) -> list[str]:
    """DDL that keeps the tally in step with the response table."""
    watched = ", ".join(layout.watched)
    if dialect == "postgresql":
        branches = "\n".join(
            f"  IF TG_OP = '{event.upper()}' THEN\n"
            + "".join(f"    {sql};\n" for sql in _changes(dialect, rows, layout))
            + "  END IF;"
            for event, rows in EVENTS.items()
        )
        return [
            "CREATE FUNCTION response_tally_apply() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN\n{branches}\n  RETURN NULL;\nEND $$",
            "CREATE TRIGGER response_tally_insert AFTER INSERT ON response "
            "FOR EACH ROW EXECUTE FUNCTION response_tally_apply()",
            f"CREATE TRIGGER response_tally_update AFTER UPDATE OF {watched} ON response "
            "FOR EACH ROW EXECUTE FUNCTION response_tally_apply()",
            "CREATE TRIGGER response_tally_delete AFTER DELETE ON response "
            "FOR EACH ROW EXECUTE FUNCTION response_tally_apply()",
        ]
    events = {"insert": "INSERT", "update": f"UPDATE OF {watched}", "delete": "DELETE"}
    return [
        f"CREATE TRIGGER response_tally_{event} AFTER {events[event]} ON response "
        "FOR EACH ROW BEGIN\n"
        + "".join(f"  {sql};\n" for sql in _changes(dialect, rows, layout))
        + "END"
        for event, rows in EVENTS.items()
    ]


def drop_trigger_statements(dialect: str) -> list[str]:
    if dialect == "postgresql":
        return ["DROP FUNCTION IF EXISTS response_tally_apply() CASCADE"]
    return [f"DROP TRIGGER IF EXISTS response_tally_{event}" for event in EVENTS]


def backfill_statements(dialect: str, layout: Layout = CURRENT) -> list[str]:
    """Recount every tally from the responses (the table is emptied first)."""
    key = ", ".join(KEY)
    sums = ", ".join(layout.sums)
    summed = ", ".join(f"SUM({c})" for c in layout.sums)
    statements = [f"DELETE FROM {TABLE}"]  # noqa: S608 (constants, no input)
    for dimension in DIMENSIONS:
        source = _source(dialect, "r", 1, dimension, layout)
        statements.append(
            f"INSERT INTO {TABLE} ({key}, {sums}) "  # noqa: S608
            f"SELECT {key}, {summed} "
            f"FROM ({source} FROM response AS r) AS c GROUP BY {key}"
        )
    return statements
