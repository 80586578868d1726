"""Drop webhook_seen: the durable inbox's rows are the de-duplication marks now.

Every webhook and poller stores its event in ``inbox_event`` (unique per channel and event key),
whose processed rows are the replay marks; ``webhook_seen`` is no longer written. Its rows held
only hashes of event ids, so nothing is carried over: a redelivery of an event marked only there
is past every channel's window by the time this runs in production, or is a duplicate at the
domain level (a spent rating token, an answered question).

Revision ID: 0010_drop_webhook_seen
Revises: 0009_one_head
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import storage.models

revision = "0010_drop_webhook_seen"
down_revision = "0009_one_head"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_seen", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_seen_seen_at"))
    op.drop_table("webhook_seen")


def downgrade() -> None:
    op.create_table(
        "webhook_seen",
        sa.Column("event_hash", sa.String(length=64), nullable=False),
        sa.Column("seen_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_hash"),
    )
    with op.batch_alter_table("webhook_seen", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_webhook_seen_seen_at"), ["seen_at"], unique=False)
