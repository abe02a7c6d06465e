"""Index tasks (user_id, completed): the application's "my open tasks" query.

Built CONCURRENTLY, outside any transaction: writes go on while it builds.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from tasks.ddl import create_index_concurrently, drop_index_concurrently

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

phase = "expand"
backfills: tuple[str, ...] = ()
downgrade_loses = None


def upgrade() -> None:
    create_index_concurrently("ix_tasks_user_id_completed", "tasks", ["user_id", "completed"])


def downgrade() -> None:
    drop_index_concurrently("ix_tasks_user_id_completed")
