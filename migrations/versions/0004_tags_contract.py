"""tasks.tags NOT NULL, once 0003's backfill left no NULL.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from alembic import op

from migrations.ops import online

revision = "0004"
down_revision = "0003"
branch_labels = depends_on = None


@online
def upgrade() -> None:
    op.set_not_null_online("tasks", "tags")


downgrade = upgrade.downgrade
