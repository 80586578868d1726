"""The durable inbox of verified channel events (``storage/inbox.py``).

Revision ID: 0008_inbox
Revises: 0007_releases
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import storage.models

revision = "0008_inbox"
down_revision = "0007_releases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox_event",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=24), nullable=False),
        sa.Column("event_key", sa.String(length=64), nullable=False),
        sa.Column("conversation", sa.String(length=64), nullable=False),
        sa.Column("body_sealed", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("received_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("available_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("leased_until", storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("channel", "event_key", name="uq_inbox_event"),
    )
    op.create_index("ix_inbox_ready", "inbox_event", ["status", "available_at"])
    op.create_index("ix_inbox_event_conversation", "inbox_event", ["conversation"])


def downgrade() -> None:
    op.drop_index("ix_inbox_event_conversation", table_name="inbox_event")
    op.drop_index("ix_inbox_ready", table_name="inbox_event")
    op.drop_table("inbox_event")
