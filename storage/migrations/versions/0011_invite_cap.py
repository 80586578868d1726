"""invite_cap: the last day each citizen was invited, for the invitation cap.

One row per way of reaching a citizen (a keyed hash, never the address nor the contact
pseudonym) with only a day; rows go once the cap window (``SURVEYBOT_INVITE_CAP_DAYS``) has
passed. Nothing to carry over: before this revision nobody was capped.

Revision ID: 0011_invite_cap
Revises: 0010_drop_webhook_seen
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_invite_cap"
down_revision = "0010_drop_webhook_seen"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invite_cap",
        sa.Column("cap_hash", sa.String(length=64), nullable=False),
        sa.Column("invited_on", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("cap_hash"),
    )
    with op.batch_alter_table("invite_cap", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_invite_cap_invited_on"), ["invited_on"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("invite_cap", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invite_cap_invited_on"))
    op.drop_table("invite_cap")
