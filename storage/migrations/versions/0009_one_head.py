"""One head again: the three branches (Zalo, the inbox, neutral scores) joined.

0002_zalo and 0003_admin both followed 0001, and 0008_inbox and 0008_neutral_scores both followed
0007, so `alembic_version` held three rows. Nothing changes in the schema; from here on every
migration follows exactly one (tests/test_schema.py checks there is one head).

Revision ID: 0009_one_head
Revises: 0002_zalo, 0008_inbox, 0008_neutral_scores
"""

from __future__ import annotations

revision = "0009_one_head"
down_revision = ("0002_zalo", "0008_inbox", "0008_neutral_scores")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
