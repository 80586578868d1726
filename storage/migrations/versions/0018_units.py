"""units: the agency table becomes a tree of units; API keys remember their last use; logins
can be made to change their password.

Every existing agency becomes a root unit of kind "commune" (the flat list it was): its figures
stay where they were, and an admin moves it under a parent when the tree is drawn.

Revision ID: 0018_units
Revises: 0017_survey_drafts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import storage.models

revision = "0018_units"
down_revision = "0017_survey_drafts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Never a batch copy of ``agency`` on SQLite: dropping the old table would cascade to every
    # response, ledger row and key that references it. SQLite can add a referencing column in
    # place (its default is NULL); PostgreSQL adds the column and its constraint.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE agency ADD COLUMN parent_id VARCHAR(32) REFERENCES agency (id)")
    else:
        op.add_column("agency", sa.Column("parent_id", sa.String(length=32), nullable=True))
        op.create_foreign_key(
            "fk_agency_parent_id_agency", "agency", "agency", ["parent_id"], ["id"],
        )  # fmt: skip
    op.add_column(
        "agency",
        sa.Column("kind", sa.String(length=16), server_default="commune", nullable=False),
    )
    op.create_index("ix_agency_parent_id", "agency", ["parent_id"], unique=False)
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("last_used_at", storage.models.UTCDateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("admin_user", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "must_change_password", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("admin_user", schema=None) as batch_op:
        batch_op.drop_column("must_change_password")
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
    op.drop_index("ix_agency_parent_id", table_name="agency")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("fk_agency_parent_id_agency", "agency", type_="foreignkey")
    # SQLite (3.35+) drops a plain column in place; no batch copy of ``agency`` (see upgrade).
    op.drop_column("agency", "kind")
    op.drop_column("agency", "parent_id")
