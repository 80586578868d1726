"""Zalo channels: bound contacts per dossier, the sealed OAuth pair, ZNS tracking, webhook dedup.

Revision ID: 0002_zalo
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import storage.models

revision = "0002_zalo"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dossier_contact",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("dossier_id", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=24), nullable=False),
        sa.Column("address_sealed", sa.Text(), nullable=False),
        sa.Column("contact_hash", sa.String(length=64), nullable=False),
        sa.Column("failed", sa.Boolean(), nullable=False),
        sa.Column("created_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["dossier_id"], ["dossier.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dossier_id", "channel"),
    )
    op.create_table(
        "zalo_token",
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("access_sealed", sa.Text(), nullable=True),
        sa.Column("refresh_sealed", sa.Text(), nullable=True),
        sa.Column("access_expires_at", storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("updated_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("app_id"),
    )
    op.create_table(
        "zns_tracking",
        sa.Column("tracking_id", sa.String(length=48), nullable=False),
        sa.Column("invitation_id", sa.String(length=32), nullable=True),
        sa.Column("msg_hash", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tracking_id"),
    )
    with op.batch_alter_table("zns_tracking", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_zns_tracking_invitation_id"), ["invitation_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_zns_tracking_msg_hash"), ["msg_hash"], unique=False)
    op.create_table(
        "webhook_seen",
        sa.Column("event_hash", sa.String(length=64), nullable=False),
        sa.Column("seen_at", storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_hash"),
    )
    with op.batch_alter_table("webhook_seen", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_webhook_seen_seen_at"), ["seen_at"], unique=False)


def downgrade() -> None:
    op.drop_table("webhook_seen")
    op.drop_table("zns_tracking")
    op.drop_table("zalo_token")
    op.drop_table("dossier_contact")
