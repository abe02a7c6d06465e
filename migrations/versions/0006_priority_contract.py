"""tasks.priority NOT NULL, once 0005's backfill left no NULL.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from alembic import op

from migrations.ops import online

revision = "0006"
down_revision = "0005"
branch_labels = depends_on = None


@online
def upgrade() -> None:
    op.set_not_null_online("tasks", "priority")


downgrade = upgrade.downgrade
