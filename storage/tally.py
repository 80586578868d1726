"""Running counts of responses per unit (the dashboard's and aggregate exports' only source).

Every figure an admin sees is a sum over responses grouped by one dimension: official,
procedure, day, classification or criteria points, always within an agency and split by the
satisfaction level. ``response_tally`` keeps those sums up to date, written by database
triggers on every insert, update and delete of a response: no code path (the service, the CLI,
an erasure, a cascade, a hand-run SQL statement) can change a response without its tally
following, and a dashboard page reads a few hundred tally rows instead of scanning every
response. ``backfill_statements`` rebuilds the counts from the responses (migration 0006).

Keys hold no NULLs, so one unique key serves the upsert on SQLite and PostgreSQL alike: a
missing unit is ``''`` and a missing satisfaction ``0``. Scores are summed in tenths, as
integers, so adding and taking away a score leaves no rounding residue.

The writers take their row locks in one global order (dimension, then key), so two
transactions moving responses between the same cells wait for each other instead of
deadlocking.
"""

from __future__ import annotations

TABLE = "response_tally"
KEY = ("dimension", "agency_id", "unit", "satisfaction")
#: The response columns a tally depends on: an update touching none of them costs nothing.
WATCHED = (
    "agency_id",
    "official_id",
    "procedure_id",
    "answered_on",
    "satisfaction",
    "classification",
    "criteria",
    "score18",
)


def unit_expressions(dialect: str, row: str) -> dict[str, str]:
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
        "class": f"COALESCE({row}.classification, '')",
        "criteria": f"COALESCE({criteria}, '')",
    }


DIMENSIONS: tuple[str, ...] = tuple(unit_expressions("sqlite", "r"))


def _source(dialect: str, row: str, sign: int, dimension: str) -> str:
    unit = unit_expressions(dialect, row)[dimension]
    return (
        f"SELECT '{dimension}' AS dimension, {row}.agency_id AS agency_id, {unit} AS unit, "
        f"COALESCE({row}.satisfaction, 0) AS satisfaction, {sign} AS responses, "
        f"CASE WHEN {row}.score18 IS NULL THEN 0 ELSE {sign} END AS scored, "
        f"{sign} * COALESCE(CAST(ROUND({row}.score18 * 10) AS BIGINT), 0) AS score_tenths"
    )


def _upsert(dialect: str, rows: list[tuple[str, int]], dimension: str) -> str:
    """One statement per dimension: the changes of OLD and NEW netted per key, applied in key
    order (a response that keeps its cell nets to zero and locks nothing)."""
    sources = " UNION ALL ".join(_source(dialect, row, sign, dimension) for row, sign in rows)
    key = ", ".join(KEY)
    return (
        f"INSERT INTO {TABLE} ({key}, responses, scored, score_tenths) "  # noqa: S608 (constants)
        f"SELECT {key}, SUM(responses), SUM(scored), SUM(score_tenths) FROM ({sources}) AS c "
        f"WHERE true GROUP BY {key} "
        "HAVING SUM(responses) <> 0 OR SUM(scored) <> 0 OR SUM(score_tenths) <> 0 "
        f"ORDER BY {key} "
        f"ON CONFLICT ({key}) DO UPDATE SET "
        f"responses = {TABLE}.responses + excluded.responses, "
        f"scored = {TABLE}.scored + excluded.scored, "
        f"score_tenths = {TABLE}.score_tenths + excluded.score_tenths"
    )


def _changes(dialect: str, rows: list[tuple[str, int]]) -> list[str]:
    return [_upsert(dialect, rows, dimension) for dimension in DIMENSIONS]


EVENTS: dict[str, list[tuple[str, int]]] = {
    "insert": [("NEW", 1)],
    "update": [("OLD", -1), ("NEW", 1)],
    "delete": [("OLD", -1)],
}


def trigger_statements(dialect: str) -> list[str]:
    """DDL that keeps the tally in step with the response table."""
    watched = ", ".join(WATCHED)
    if dialect == "postgresql":
        branches = "\n".join(
            f"  IF TG_OP = '{event.upper()}' THEN\n"
            + "".join(f"    {sql};\n" for sql in _changes(dialect, rows))
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
        "FOR EACH ROW BEGIN\n" + "".join(f"  {sql};\n" for sql in _changes(dialect, rows)) + "END"
        for event, rows in EVENTS.items()
    ]


def drop_trigger_statements(dialect: str) -> list[str]:
    if dialect == "postgresql":
        return ["DROP FUNCTION IF EXISTS response_tally_apply() CASCADE"]
    return [f"DROP TRIGGER IF EXISTS response_tally_{event}" for event in EVENTS]


def backfill_statements(dialect: str) -> list[str]:
    """Recount every tally from the responses (the table is emptied first)."""
    key = ", ".join(KEY)
    statements = [f"DELETE FROM {TABLE}"]  # noqa: S608 (constants, no input)
    for dimension in DIMENSIONS:
        source = _source(dialect, "r", 1, dimension)
        statements.append(
            f"INSERT INTO {TABLE} ({key}, responses, scored, score_tenths) "  # noqa: S608
            f"SELECT {key}, SUM(responses), SUM(scored), SUM(score_tenths) "
            f"FROM ({source} FROM response AS r) AS c GROUP BY {key}"
        )
    return statements
