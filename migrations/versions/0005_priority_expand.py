"""tasks.priority (low|medium|high), nullable, 'medium' for new rows and, by the backfill, old ones.

Its CHECK holds for new rows at once and is validated once the backfill ran; 0006 makes it NOT NULL.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from migrations.ops import online

revision = "0005"
down_revision = "0004"
branch_labels = depends_on = None


@online
def upgrade() -> None:
    op.add_column_online("tasks", sa.Column("priority", sa.Text), default="'medium'", backfill="'medium'")
    op.add_check_online("tasks", "ck_tasks_priority", "priority IN ('low', 'medium', 'high')")


downgrade = upgrade.downgrade
