"""sync: officials' lifecycle, procedures' field, procedures assigned to units.

Every existing official is active (nobody could be retired before); existing procedures have
no field until an admin or the unit's sync sets one, and no assignment, so every unit may go on
reporting them as before.

Revision ID: 0019_sync
Revises: 0018_units
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import storage.models

revision = "0019_sync"
down_revision = "0018_units"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("official", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(length=16), nullable=False, server_default="active")
        )
        batch_op.add_column(sa.Column("ended_on", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("moved_to_id", sa.String(length=32), nullable=True))
        batch_op.create_foreign_key(
            "fk_official_moved_to_id_official", "official", ["moved_to_id"], ["id"]
        )
    with op.batch_alter_table("procedure", schema=None) as batch_op:
        batch_op.add_column(sa.Column("field", sa.String(length=32), nullable=True))
    op.create_table(
        "procedure_assignment",
        sa.Column("agency_id", sa.String(length=32), nullable=False),
        sa.Column("procedure_id", sa.String(length=32), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("updated_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["agency_id"], ["agency.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["procedure_id"], ["procedure.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("agency_id", "procedure_id"),
    )


def downgrade() -> None:
    op.drop_table("procedure_assignment")
    with op.batch_alter_table("procedure", schema=None) as batch_op:
        batch_op.drop_column("field")
    with op.batch_alter_table("official", schema=None) as batch_op:
        batch_op.drop_constraint("fk_official_moved_to_id_official", type_="foreignkey")
        batch_op.drop_column("moved_to_id")
        batch_op.drop_column("ended_on")
        batch_op.drop_column("status")
