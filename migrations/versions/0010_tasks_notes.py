"""Breaking: tasks.description is called tasks.notes.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from alembic import op

from migrations.ops import online

revision = "0010"
down_revision = "0009"
branch_labels = depends_on = None


@online
def upgrade() -> None:
    op.rename_column_online("tasks", "description", "notes")


downgrade = upgrade.downgrade
