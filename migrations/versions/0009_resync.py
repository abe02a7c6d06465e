"""Expand: what a Phase 1 run of many files, and its re-syncs until cutover, keep track of.

- tasks.legacy_checksum: the checksum of the row as the migration last wrote it, so a re-sync can
  tell a row the application changed since (a conflict: Phase 2 wins) from one it may update;
- migration_checkpoints.updated / conflicts: a chunk's re-sync counts, beside migrated (inserted)
  and already_present (unchanged);
- quarantine.legacy_source: which file of a run a quarantined record came from;
- migration_files: per run, per file and per chunk the file's records are in, what happened to
  them (written in the chunk's transaction: the file's checkpoint), and the files refused whole;
- migration_sources: per legacy source (one per file) its last sync, and when it was closed at cutover;
- migration_seen: the rows a re-sync run saw, to find the records that disappeared from a file;
- migration_row_history: a row as it was before a re-sync updated or deleted it, so a rollback of
  that run puts it back.

All additive: new nullable columns or columns with a constant default (catalog-only), new tables.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

phase = "expand"
backfills: tuple[str, ...] = ()
downgrade_loses = (
    "drops the re-sync bookkeeping: per-file results, source states and cutover marks, the history "
    "a rollback of a re-sync needs, and tasks.legacy_checksum"
)

NOW = sa.text("now()")
ZERO = sa.text("0")


def _run_id(table: str) -> sa.Column:
    return sa.Column(
        "run_id",
        pg.UUID(as_uuid=True),
        sa.ForeignKey("migration_runs.id", name=f"fk_{table}_run_id", ondelete="CASCADE"),
        primary_key=True,
    )


def upgrade() -> None:
    op.add_column("tasks", sa.Column("legacy_checksum", sa.BigInteger, nullable=True))
    op.add_column("migration_checkpoints", sa.Column("updated", sa.Integer, nullable=False, server_default=ZERO))
    op.add_column("migration_checkpoints", sa.Column("conflicts", sa.Integer, nullable=False, server_default=ZERO))
    op.add_column("quarantine", sa.Column("legacy_source", sa.Text, nullable=True))
    counts = [
        sa.Column(name, sa.Integer, nullable=False, server_default=ZERO)
        for name in ("records", "inserted", "updated", "unchanged", "conflicts", "duplicates", "quarantined")
    ]
    op.create_table(
        "migration_files",
        _run_id("migration_files"),
        sa.Column("file_no", sa.Integer, primary_key=True),
        sa.Column("part", sa.Integer, primary_key=True),  # the chunk (-1: the file was refused whole)
        sa.Column("legacy_source", sa.Text, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("owner", sa.Text, nullable=True),
        sa.Column("sha256", sa.Text, nullable=True),
        sa.Column("status", sa.Text, nullable=False),
        *counts,
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("committed_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_table(
        "migration_sources",
        sa.Column("legacy_source", sa.Text, primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("owner", sa.Text, nullable=True),
        sa.Column("sha256", sa.Text, nullable=True),
        sa.Column("last_run_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "migration_seen",
        _run_id("migration_seen"),
        sa.Column("task_id", pg.UUID(as_uuid=True), primary_key=True),
    )
    op.create_table(
        "migration_row_history",
        _run_id("migration_row_history"),
        sa.Column("task_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("op", sa.Text, nullable=False),  # "update" or "delete"
        sa.Column("before", sa.JSON, nullable=False),  # row_to_json of the row as it was
    )


def downgrade() -> None:
    op.drop_table("migration_row_history")
    op.drop_table("migration_seen")
    op.drop_table("migration_sources")
    op.drop_table("migration_files")
    op.drop_column("quarantine", "legacy_source")
    op.drop_column("migration_checkpoints", "conflicts")
    op.drop_column("migration_checkpoints", "updated")
    op.drop_column("tasks", "legacy_checksum")
