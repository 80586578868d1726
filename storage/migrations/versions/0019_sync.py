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
    # Never a batch copy of ``official`` on SQLite: dropping the old table would fail on (or,
    # with a cascade, delete) every response and dossier that references it. SQLite adds the
    # columns in place, the self-reference inline (its default is NULL).
    op.add_column(
        "official",
        sa.Column("status", sa.String(length=16), nullable=False, server_default="active"),
    )
    op.add_column("official", sa.Column("ended_on", sa.Date(), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "ALTER TABLE official ADD COLUMN moved_to_id VARCHAR(32) REFERENCES official (id)"
        )
    else:
        op.add_column("official", sa.Column("moved_to_id", sa.String(length=32), nullable=True))
        op.create_foreign_key(
            "fk_official_moved_to_id_official", "official", "official", ["moved_to_id"], ["id"]
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
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("fk_official_moved_to_id_official", "official", type_="foreignkey")
    # SQLite (3.35+) drops these columns in place; no batch copy of ``official`` (see upgrade).
    op.drop_column("official", "moved_to_id")
    op.drop_column("official", "ended_on")
    op.drop_column("official", "status")
