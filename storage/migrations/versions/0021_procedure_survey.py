"""procedure survey: the survey a dossier of a procedure gets when it names none.

Existing procedures have none, so every dossier goes on getting its unit's survey (or the
default) as before.

Revision ID: 0021_procedure_survey
Revises: 0020_unit_criteria
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021_procedure_survey"
down_revision = "0020_unit_criteria"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # In place, never a batch copy: dossiers, responses and assignments reference procedure.
    op.add_column("procedure", sa.Column("survey_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    # SQLite (3.35+) drops the column in place; no batch copy of ``procedure`` (see upgrade).
    op.drop_column("procedure", "survey_id")
