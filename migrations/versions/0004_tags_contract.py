"""Contract: tasks.tags NOT NULL, once the `tasks.tags` backfill left no NULL.

NOT NULL goes through a validated CHECK, statement by statement (tasks/ddl.py), so no lock that
blocks writes is held while the table is scanned.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from tasks.ddl import enforce_not_null, relax_not_null, require_no_nulls

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

phase = "contract"
backfills: tuple[str, ...] = ("tasks.tags",)
downgrade_loses = None


def upgrade() -> None:
    require_no_nulls("tasks", "tags", "tasks.tags")
    enforce_not_null("tasks", "tags")


def downgrade() -> None:
    relax_not_null("tasks", "tags")
