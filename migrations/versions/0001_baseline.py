"""Baseline: the Phase 2 schema (users, tasks) and the migration's bookkeeping tables.

Written out by hand rather than generated at run time, so the DDL is reviewable and stays fixed
when the models move on (later revisions change them). Works on PostgreSQL 14 and newer.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

downgrade_loses = "drops every table and every row: only an empty or disposable database goes below the baseline"

NOW = sa.text("now()")


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    ]


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("email", sa.Text, nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("email_verified", sa.Boolean, nullable=False, server_default=sa.false()),
        *_timestamps(),
        sa.Column("migration_run_id", pg.UUID(as_uuid=True), nullable=True),
    )
    op.create_table(
        "tasks",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "user_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("users.id", name="fk_tasks_user_id"),
            nullable=False,
        ),
        sa.Column("legacy_source", sa.Text, nullable=True),
        sa.Column("legacy_id", sa.Integer, nullable=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("completed", sa.Boolean, nullable=False, server_default=sa.false()),
        *_timestamps(),
        sa.Column("legacy_extra", sa.JSON, nullable=True),
        sa.Column("migration_run_id", pg.UUID(as_uuid=True), nullable=True),
        sa.UniqueConstraint("legacy_source", "legacy_id", name="uq_tasks_legacy"),
    )
    op.create_table(
        "migration_runs",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("source_path", sa.Text, nullable=True),
        sa.Column("source_name", sa.Text, nullable=True),
        sa.Column("source_sha256", sa.Text, nullable=True),
        sa.Column("chunk_size", sa.Integer, nullable=True),
        sa.Column("parameters", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("stats", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "migration_checkpoints",
        sa.Column(
            "run_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("migration_runs.id", name="fk_migration_checkpoints_run_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("chunk_no", sa.Integer, primary_key=True),
        sa.Column("first_position", sa.Integer, nullable=False),
        sa.Column("last_position", sa.Integer, nullable=False),
        sa.Column("records", sa.Integer, nullable=False),
        sa.Column("migrated", sa.Integer, nullable=False),
        sa.Column("already_present", sa.Integer, nullable=False),
        sa.Column("duplicates", sa.Integer, nullable=False),
        sa.Column("quarantined", sa.Integer, nullable=False),
        sa.Column("checksum", sa.Numeric, nullable=False),
        sa.Column("committed_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_table(
        "quarantine",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "run_id",
            pg.UUID(as_uuid=True),
            sa.ForeignKey("migration_runs.id", name="fk_quarantine_run_id"),
            nullable=False,
        ),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("legacy_id", sa.Text, nullable=True),
        sa.Column("raw", sa.Text, nullable=False),
        sa.Column("reasons", pg.ARRAY(sa.Text), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.UniqueConstraint("run_id", "position", name="uq_quarantine_run_position"),
    )


def downgrade() -> None:
    # Dropping the baseline drops every migrated row: only an empty or disposable database goes below it.
    op.drop_table("quarantine")
    op.drop_table("migration_checkpoints")
    op.drop_table("migration_runs")
    op.drop_table("tasks")
    op.drop_table("users")
