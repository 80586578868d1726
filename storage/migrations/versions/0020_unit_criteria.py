"""unit_criteria: the agency-level criteria 5, 8 and 9 per unit and calendar quarter.

A new table only: ``agency.agency_criteria`` stays as it was and is read as the fallback of
every quarter that has no values of its own (``storage.unit_criteria``), so a deployment that
upgrades scores as before until an assessor sets a quarter. No table is copied.

Revision ID: 0020_unit_criteria
Revises: 0019_sync
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import storage.models

revision = "0020_unit_criteria"
down_revision = "0019_sync"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "unit_criteria",
        sa.Column("agency_id", sa.String(length=32), nullable=False),
        sa.Column("quarter_start", sa.Date(), nullable=False),
        sa.Column("c5", sa.Integer(), nullable=True),
        sa.Column("c8", sa.Integer(), nullable=True),
        sa.Column("c9", sa.Integer(), nullable=True),
        sa.Column("updated_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["agency_id"], ["agency.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("agency_id", "quarter_start"),
    )


def downgrade() -> None:
    op.drop_table("unit_criteria")
