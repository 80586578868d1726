"""Each response keeps its answers as export cells (``response.answers``), filled from the answer rows.

Revision ID: 0005_response_answers
Revises: 0004_stats_indexes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.models import answer_cell

revision = "0005_response_answers"
down_revision = "0004_stats_indexes"
branch_labels = None
depends_on = None

BATCH = 5000


def upgrade() -> None:
    op.add_column("response", sa.Column("answers", sa.JSON(), nullable=True))
    answer = sa.table(
        "answer",
        sa.column("response_id", sa.String),
        sa.column("question_id", sa.String),
        sa.column("value", sa.JSON),
        sa.column("text", sa.Text),
    )
    response = sa.table("response", sa.column("id", sa.String), sa.column("answers", sa.JSON))
    bind = op.get_bind()
    update = (
        sa.update(response)
        .where(response.c.id == sa.bindparam("rid"))
        .values(answers=sa.bindparam("cells", type_=sa.JSON))
    )
    last = ""
    # Page by key, with no cursor left open across the updates (safe on every driver).
    while ids := list(
        bind.scalars(
            sa.select(response.c.id)
            .where(response.c.id > last)
            .order_by(response.c.id)
            .limit(BATCH)
        )
    ):
        last = ids[-1]
        cells: dict[str, dict[str, str]] = {rid: {} for rid in ids}
        for rid, question, value, text in bind.execute(
            sa.select(
                answer.c.response_id, answer.c.question_id, answer.c.value, answer.c.text
            ).where(answer.c.response_id.in_(ids))
        ):
            cells[rid][question] = answer_cell(value, text)
        bind.execute(update, [{"rid": rid, "cells": c} for rid, c in cells.items() if c])


def downgrade() -> None:
    with op.batch_alter_table("response") as batch:
        batch.drop_column("answers")
