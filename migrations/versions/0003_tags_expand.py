"""Expand: tasks.tags (text[]), nullable, default '{}' for new rows.

Both statements are catalog-only (no rewrite, no scan). The old application's inserts don't name
`tags` and get '{}'; rows that existed before are filled by the `tasks.tags` backfill before 0004.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from tasks.ddl import add_column_with_default

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

phase = "expand"
backfills: tuple[str, ...] = ()
downgrade_loses = "drops tasks.tags and every tag it holds"


def upgrade() -> None:
    add_column_with_default("tasks", sa.Column("tags", pg.ARRAY(sa.Text), nullable=True), "'{}'::text[]")


def downgrade() -> None:
    op.drop_column("tasks", "tags")
