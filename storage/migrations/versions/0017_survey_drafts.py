"""survey_draft: survey definitions uploaded in the dashboard, previewed before they are published.

Revision ID: 0017_survey_drafts
Revises: 0016_reports
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import storage.models

revision = "0017_survey_drafts"
down_revision = "0016_reports"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "survey_draft",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("token_issued_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("survey_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("uploaded_by", sa.String(length=64), nullable=False),
        sa.Column("uploaded_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("published_at", storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )


def downgrade() -> None:
    op.drop_table("survey_draft")
