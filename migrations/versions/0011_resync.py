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

All additive: new nullable columns, counts filled with 0 for the chunks committed before, new tables.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from migrations.ops import online

revision = "0011"
down_revision = "0010"
branch_labels = depends_on = None

COUNTS = ("records", "inserted", "updated", "unchanged", "conflicts", "duplicates", "quarantined")
NOW = sa.text("now()")
ZERO = sa.text("0")


def _run_id(table: str) -> sa.Column:
    return sa.Column(
        "run_id",
        pg.UUID(as_uuid=True),
        sa.ForeignKey("migration_runs.id", name=f"fk_{table}_run_id", ondelete="CASCADE"),
        primary_key=True,
    )


@online
def upgrade() -> None:
    op.add_column_online("tasks", sa.Column("legacy_checksum", sa.BigInteger))
    for count in ("updated", "conflicts"):
        op.add_column_online(
            "migration_checkpoints", sa.Column(count, sa.Integer), default="0", backfill="0", not_null=True
        )
    op.add_column_online("quarantine", sa.Column("legacy_source", sa.Text))
    op.create_table_online(
        "migration_files",
        _run_id("migration_files"),
        sa.Column("file_no", sa.Integer, primary_key=True),
        sa.Column("part", sa.Integer, primary_key=True),  # the chunk (-1: the file was refused whole)
        sa.Column("legacy_source", sa.Text, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("owner", sa.Text, nullable=True),
        sa.Column("sha256", sa.Text, nullable=True),
        sa.Column("status", sa.Text, nullable=False),
        *(sa.Column(name, sa.Integer, nullable=False, server_default=ZERO) for name in COUNTS),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("committed_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    op.create_table_online(
        "migration_sources",
        sa.Column("legacy_source", sa.Text, primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("owner", sa.Text, nullable=True),
        sa.Column("sha256", sa.Text, nullable=True),
        sa.Column("last_run_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table_online(
        "migration_seen",
        _run_id("migration_seen"),
        sa.Column("task_id", pg.UUID(as_uuid=True), primary_key=True),
    )
    op.create_table_online(
        "migration_row_history",
        _run_id("migration_row_history"),
        sa.Column("task_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("op", sa.Text, nullable=False),  # "update" or "delete"
        sa.Column("before", sa.JSON, nullable=False),  # row_to_json of the row as it was
    )


downgrade = upgrade.downgrade
