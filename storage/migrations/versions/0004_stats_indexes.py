"""Covering indexes for the dashboard aggregates (one grouped index scan per level).

Revision ID: 0004_stats_indexes
Revises: 0003_admin
"""

from __future__ import annotations

from alembic import op

revision = "0004_stats_indexes"
down_revision = "0003_admin"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_response_stats_official": ["agency_id", "official_id", "satisfaction", "score18"],
    "ix_response_stats_procedure": ["agency_id", "procedure_id", "satisfaction", "score18"],
    "ix_response_stats_period": ["agency_id", "answered_on", "satisfaction", "score18"],
    "ix_response_stats_class": ["agency_id", "satisfaction", "classification", "score18"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "response", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="response")
