"""Breaking: tasks.completed (boolean) becomes tasks.status (todo | in_progress | done).

While both versions run, a task the previous version marks completed is 'done' for the new one,
and one the new version moves to 'done' is completed for the previous one ('in_progress' reads as
not completed there). The "my open tasks" index moves to (user_id, status).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from migrations.ops import online

revision = "0009"
down_revision = "0008"
branch_labels = depends_on = None


@online
def upgrade() -> None:
    op.drop_index_online("ix_tasks_user_id_completed", "tasks", ("user_id", "completed"))
    op.alter_column_online(
        "tasks",
        sa.Column("completed", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'todo'")),
        up="CASE WHEN completed THEN 'done' ELSE 'todo' END",
        down="status = 'done'",
    )
    op.add_check_online("tasks", "ck_tasks_status", "status IN ('todo', 'in_progress', 'done')")
    op.create_index_online("ix_tasks_user_id_status", "tasks", ("user_id", "status"))


downgrade = upgrade.downgrade
