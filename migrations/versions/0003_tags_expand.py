"""tasks.tags (text[]), nullable, '{}' for new rows and, by the backfill, for the old ones.

0004 makes it NOT NULL.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from migrations.ops import online

revision = "0003"
down_revision = "0002"
branch_labels = depends_on = None


@online
def upgrade() -> None:
    op.add_column_online(
        "tasks", sa.Column("tags", pg.ARRAY(sa.Text)), default="'{}'::text[]", backfill="'{}'::text[]"
    )


downgrade = upgrade.downgrade
