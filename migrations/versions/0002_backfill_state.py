"""Backfill bookkeeping: one row per named backfill, updated with every batch it commits.

A new, empty table: no lock on anything the application uses. The downgrade drops only this
bookkeeping (a finished backfill's data stays in the tables it filled).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

downgrade_loses = "drops the backfill checkpoints (the data they filled stays)"

NOW = sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "backfill_state",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("table_name", sa.Text, nullable=False),
        sa.Column("column_name", sa.Text, nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("run_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("last_key", pg.ARRAY(sa.Text), nullable=True),
        sa.Column("rows_done", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("batches", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )


def downgrade() -> None:
    op.drop_table("backfill_state")
