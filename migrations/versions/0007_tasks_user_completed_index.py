"""Index tasks (user_id, completed): the application's "my open tasks" query.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from alembic import op

from migrations.ops import online

revision = "0007"
down_revision = "0006"
branch_labels = depends_on = None


@online
def upgrade() -> None:
    op.create_index_online("ix_tasks_user_id_completed", "tasks", ("user_id", "completed"))


downgrade = upgrade.downgrade
