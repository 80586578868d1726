"""Scores in neutral columns (total, maximum, band, scheme, inputs) and survey versions kept.

``score18`` and ``classification`` were named after Circular 01/2018; a response now records the
scheme that scored it, its total out of that scheme's maximum, and the inputs the scheme was
given, so it can be scored again when the rules change. Every score written before this is a
Circular 01/2018 total out of 18, and is converted as such: the figures stay what they were
(tally rows recounted to the same sums, release documents given the maxima their totals had).
Inputs of old responses are read back from their stored criteria points: criteria 1-2 points
are exactly the on-time classes the criteria define (the dossier dates were never kept).

Revision ID: 0008_neutral_scores
Revises: 0007_releases
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

import storage.models
from storage import tally

revision = "0008_neutral_scores"
down_revision = "0007_releases"
branch_labels = None
depends_on = None

SCHEME = "circular-01-2018"
MAXIMUM = 18.0
BEFORE = tally.Layout(total="score18", band="classification", maximum=None)
AFTER = tally.Layout(total="score_total", band="score_band", maximum="score_maximum")
CLASSES = {2: "early", 1: "on_time", 0: "late"}
BATCH = 5000


def _json(raw: Any) -> Any:
    return json.loads(raw) if isinstance(raw, str | bytes) else raw


def inputs_from_criteria(criteria: Any, satisfaction: int | None) -> dict[str, Any]:
    """A Circular 01/2018 response's ``ScoreInputs`` JSON rebuilt from its criteria points."""
    points = {str(k): int(v) for k, v in (_json(criteria) or {}).items() if v is not None}
    return {
        "answered": {c: p for c, p in points.items() if c in ("3", "4", "6", "7")},
        "timeliness": {
            c: CLASSES[p] for c, p in points.items() if c in ("1", "2") and p in CLASSES
        },
        "agency": {c: p for c, p in points.items() if c in ("5", "8", "9")},
        "satisfaction": satisfaction,
    }


def with_maxima(document: Any, maximum: float | None) -> Any:
    """A release document with ``score_max_sum`` beside each ``score_sum`` (or without it)."""
    if isinstance(document, list):
        return [with_maxima(d, maximum) for d in document]
    if not isinstance(document, dict):
        return document
    found = {k: with_maxima(v, maximum) for k, v in document.items() if k != "score_max_sum"}
    if "score_sum" in found and maximum is not None:
        scored = found.get("scored")
        found["score_max_sum"] = None if scored is None else round(scored * maximum, 1)
    return found


def _recount(layout: tally.Layout) -> None:
    dialect = op.get_bind().dialect.name
    for statement in tally.drop_trigger_statements(dialect):
        op.execute(statement)
    for statement in tally.backfill_statements(dialect, layout):
        op.execute(statement)
    for statement in tally.trigger_statements(dialect, layout):
        op.execute(statement)


def _rewrite_releases(maximum: float | None) -> None:
    figures = sa.table(
        "release_figures",
        sa.column("release_id", sa.String),
        sa.column("scope", sa.String),
        sa.column("document", sa.JSON),
    )
    bind = op.get_bind()
    rows = bind.execute(sa.select(figures.c.release_id, figures.c.scope, figures.c.document)).all()
    for release_id, scope, document in rows:
        bind.execute(
            sa.update(figures)
            .where(figures.c.release_id == release_id, figures.c.scope == scope)
            .values(document=with_maxima(_json(document), maximum))
        )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in tally.drop_trigger_statements(dialect):
        op.execute(statement)
    op.execute("ALTER TABLE response RENAME COLUMN score18 TO score_total")
    op.execute("ALTER TABLE response RENAME COLUMN classification TO score_band")
    op.add_column("response", sa.Column("score_maximum", sa.Double(), nullable=True))
    op.add_column("response", sa.Column("score_scheme", sa.String(length=32), nullable=True))
    op.add_column("response", sa.Column("score_inputs", sa.JSON(), nullable=True))
    response = sa.table(
        "response",
        sa.column("id", sa.String),
        sa.column("satisfaction", sa.Integer),
        sa.column("criteria", sa.JSON),
        sa.column("score_total", sa.Double),
        sa.column("score_maximum", sa.Double),
        sa.column("score_scheme", sa.String),
        sa.column("score_inputs", sa.JSON),
    )
    bind = op.get_bind()
    update = (
        sa.update(response)
        .where(response.c.id == sa.bindparam("rid"))
        .values(
            score_maximum=MAXIMUM,
            score_scheme=SCHEME,
            score_inputs=sa.bindparam("inputs", type_=sa.JSON),
        )
    )
    last = ""
    # Page by key, with no cursor left open across the updates (safe on every driver).
    while rows := bind.execute(
        sa.select(response.c.id, response.c.criteria, response.c.satisfaction)
        .where(response.c.score_total.is_not(None), response.c.id > last)
        .order_by(response.c.id)
        .limit(BATCH)
    ).all():
        bind.execute(
            update,
            [{"rid": rid, "inputs": inputs_from_criteria(c, s)} for rid, c, s in rows],
        )
        last = rows[-1][0]
    op.add_column(
        tally.TABLE,
        sa.Column("maximum_tenths", sa.BigInteger(), nullable=False, server_default="0"),
    )
    _recount(AFTER)
    _rewrite_releases(MAXIMUM)
    op.create_table(
        "survey_version",
        sa.Column("survey_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("stored_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("survey_id", "version"),
    )


def downgrade() -> None:
    op.drop_table("survey_version")
    dialect = op.get_bind().dialect.name
    for statement in tally.drop_trigger_statements(dialect):
        op.execute(statement)
    op.execute(f"ALTER TABLE {tally.TABLE} DROP COLUMN maximum_tenths")
    for column in ("score_inputs", "score_scheme", "score_maximum"):
        op.execute(f"ALTER TABLE response DROP COLUMN {column}")
    op.execute("ALTER TABLE response RENAME COLUMN score_band TO classification")
    op.execute("ALTER TABLE response RENAME COLUMN score_total TO score18")
    _recount(BEFORE)
    _rewrite_releases(None)
