"""periodic_report: quarterly and yearly reports as filed (XLSX and PDF), built from releases.

One row per scope, period and last release summed (unique, so processes generating one at once
keep one). Nothing to carry over: there were no reports before.

Revision ID: 0016_reports
Revises: 0011_invite_cap
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import storage.models

revision = "0016_reports"
down_revision = "0011_invite_cap"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "periodic_report",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("label", sa.String(length=16), nullable=False),
        sa.Column("through", sa.Date(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("releases", sa.JSON(), nullable=False),
        sa.Column("generated_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("xlsx", sa.LargeBinary(), nullable=False),
        sa.Column("pdf", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("scope", "kind", "label", "through"),
    )
    with op.batch_alter_table("periodic_report", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_periodic_report_scope"), ["scope"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("periodic_report", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_periodic_report_scope"))
    op.drop_table("periodic_report")
