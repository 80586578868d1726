"""Running tallies of responses per unit, kept by triggers; the stats indexes they replace go.

Revision ID: 0006_response_tally
Revises: 0005_response_answers
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage import tally

revision = "0006_response_tally"
down_revision = "0005_response_answers"
branch_labels = None
depends_on = None

#: Covering indexes of 0004: every aggregate now reads the tally, and each of them cost a write.
STATS_INDEXES = {
    "ix_response_stats_official": ["agency_id", "official_id", "satisfaction", "score18"],
    "ix_response_stats_procedure": ["agency_id", "procedure_id", "satisfaction", "score18"],
    "ix_response_stats_period": ["agency_id", "answered_on", "satisfaction", "score18"],
    "ix_response_stats_class": ["agency_id", "satisfaction", "classification", "score18"],
}
#: The score columns of this revision's day (0008 renamed them and added the maximum).
LAYOUT = tally.Layout(total="score18", band="classification", maximum=None)


def upgrade() -> None:
    op.create_table(
        tally.TABLE,
        sa.Column("dimension", sa.String(16), nullable=False),
        sa.Column("agency_id", sa.String(32), nullable=False),
        sa.Column("unit", sa.Text(), nullable=False),
        sa.Column("satisfaction", sa.Integer(), nullable=False),
        sa.Column("responses", sa.Integer(), nullable=False),
        sa.Column("scored", sa.Integer(), nullable=False),
        sa.Column("score_tenths", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*tally.KEY, name="pk_response_tally"),
    )
    dialect = op.get_bind().dialect.name
    # Counted before the triggers exist, in the same transaction: nothing is counted twice.
    for statement in tally.backfill_statements(dialect, LAYOUT):
        op.execute(statement)
    for statement in tally.trigger_statements(dialect, LAYOUT):
        op.execute(statement)
    for name in STATS_INDEXES:
        op.drop_index(name, table_name="response")


def downgrade() -> None:
    for name, columns in STATS_INDEXES.items():
        op.create_index(name, "response", columns)
    for statement in tally.drop_trigger_statements(op.get_bind().dialect.name):
        op.execute(statement)
    op.drop_table(tally.TABLE)
