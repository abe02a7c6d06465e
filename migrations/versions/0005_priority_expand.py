"""Expand: tasks.priority (low|medium|high), nullable, default 'medium' for new rows.

The CHECK on its values is added NOT VALID: it holds for every row written from now on, without a
scan now; 0006 validates it once the backfill filled the old rows.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tasks.ddl import add_check_not_valid, add_column_with_default

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

phase = "expand"
backfills: tuple[str, ...] = ()
downgrade_loses = "drops tasks.priority and every priority set since"


def upgrade() -> None:
    add_column_with_default("tasks", sa.Column("priority", sa.Text, nullable=True), "'medium'")
    add_check_not_valid("tasks", "ck_tasks_priority", "priority IN ('low', 'medium', 'high')")


def downgrade() -> None:
    op.drop_constraint("ck_tasks_priority", "tasks", type_="check")
    op.drop_column("tasks", "priority")
