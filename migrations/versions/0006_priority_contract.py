"""Contract: validate ck_tasks_priority and make tasks.priority NOT NULL, once the
`tasks.priority` backfill left no NULL. No step holds a write-blocking lock during a scan.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

from tasks.ddl import (
    add_check_not_valid,
    enforce_not_null,
    relax_not_null,
    require_no_nulls,
    validate_constraint,
)

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

phase = "contract"
backfills: tuple[str, ...] = ("tasks.priority",)
downgrade_loses = None


def upgrade() -> None:
    require_no_nulls("tasks", "priority", "tasks.priority")
    validate_constraint("tasks", "ck_tasks_priority")
    enforce_not_null("tasks", "priority")


def downgrade() -> None:
    relax_not_null("tasks", "priority")
    # Back to the NOT VALID check of 0005 (catalog-only), so up → down leaves the schema as it was.
    op.drop_constraint("ck_tasks_priority", "tasks", type_="check")
    add_check_not_valid("tasks", "ck_tasks_priority", "priority IN ('low', 'medium', 'high')")
