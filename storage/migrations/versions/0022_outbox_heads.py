"""outbox: a partial index of the unsent rows in each lane's claim order.

A lane's claim (``storage.outbox.claim`` with ``lane=``) takes the oldest conversation heads of
one priority. Without an index in that order PostgreSQL anti-joined every unsent row ("the
oldest of its conversation") by hash and sorted them before the limit: 45-210 ms per claim over
20,000 unsent rows. With it, the claim walks the lane in ``created_at`` order, probes each row's
conversation by ``ix_outbox_unsent_conversation`` and stops after its limit (docs/benchmarks.md,
Dispatch). Partial: retired rows, which are most of the table, are not in it.

Revision ID: 0022_outbox_heads
Revises: 0021_procedure_survey
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022_outbox_heads"
down_revision = "0021_procedure_survey"
branch_labels = None
depends_on = None

UNSENT_IN_FLIGHT = "status IN ('pending', 'sending')"
UNSENT = "status IN ('pending', 'sending', 'stalled')"


def upgrade() -> None:
    op.create_index(
        "ix_outbox_lane_order",
        "outbox",
        ["priority", "created_at"],
        postgresql_where=sa.text(UNSENT_IN_FLIGHT),
        sqlite_where=sa.text(UNSENT_IN_FLIGHT),
    )
    # The probe of each walked row: an older unsent message of its conversation. Without it,
    # on statistics taken before a bulk load, PostgreSQL combined the conversation index with
    # a bitmap of every unsent row per probe (1.1 s per claim over 20,000 rows).
    op.create_index(
        "ix_outbox_unsent_conversation",
        "outbox",
        ["conversation", "created_at"],
        postgresql_where=sa.text(UNSENT),
        sqlite_where=sa.text(UNSENT),
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_unsent_conversation", table_name="outbox")
    op.drop_index("ix_outbox_lane_order", table_name="outbox")
