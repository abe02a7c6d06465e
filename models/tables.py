"""The Phase 2 schema as SQLModel tables: the one definition Alembic, the flows and the tests share.

The application tables are `users` and `tasks`; `migration_runs`, `migration_checkpoints` and
`quarantine` are the migration's own bookkeeping. `migration_run_id` on users and tasks records which
run inserted a row, which is what makes a rollback remove exactly that run's rows and nothing else.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlmodel import Field, SQLModel

NOW = sa.text("now()")


def _ts(nullable: bool = False, default: bool = True) -> Any:
    return Field(
        sa_column=sa.Column(
            sa.DateTime(timezone=True), nullable=nullable, server_default=NOW if default else None
        )
    )


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: uuid.UUID = Field(sa_column=sa.Column(pg.UUID(as_uuid=True), primary_key=True))
    email: str = Field(sa_column=sa.Column(sa.Text, nullable=False, unique=True))
    name: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    email_verified: bool = Field(
        default=False, sa_column=sa.Column(sa.Boolean, nullable=False, server_default=sa.false())
    )
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    migration_run_id: uuid.UUID | None = Field(
        default=None, sa_column=sa.Column(pg.UUID(as_uuid=True), nullable=True)
    )


class Task(SQLModel, table=True):
    __tablename__ = "tasks"
    __table_args__ = (
        sa.UniqueConstraint("legacy_source", "legacy_id", name="uq_tasks_legacy"),
        sa.CheckConstraint("priority IN ('low', 'medium', 'high')", name="ck_tasks_priority"),
        sa.CheckConstraint("status IN ('todo', 'in_progress', 'done')", name="ck_tasks_status"),
        sa.Index("ix_tasks_user_id_status", "user_id", "status"),
        sa.Index("uq_tasks_legacy_key", "legacy_source", "legacy_key", unique=True),
    )

    id: uuid.UUID = Field(sa_column=sa.Column(pg.UUID(as_uuid=True), primary_key=True))
    user_id: uuid.UUID = Field(
        sa_column=sa.Column(
            pg.UUID(as_uuid=True), sa.ForeignKey("users.id", name="fk_tasks_user_id"), nullable=False
        )
    )
    legacy_source: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    legacy_id: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    # Revision 0008: the record's id as the file wrote it (an integer's digits, a UUID, any string),
    # or the key derived for a record without one; legacy_id keeps integer ids that fit.
    legacy_key: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    # Revision 0011: the row's checksum (tasks/checksum.py) when the migration last wrote it; a
    # re-sync updates the row only while its checksum is still this one (the application left it).
    legacy_checksum: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    title: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    # Revision 0010: `description` until then.
    notes: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    # Revision 0009: `completed boolean` until then (done <-> completed).
    status: str = Field(
        default="todo", sa_column=sa.Column(sa.Text, nullable=False, server_default=sa.text("'todo'"))
    )
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    # `json`, not `jsonb`: it keeps the text byte for byte (checksums stay exact) and accepts \u0000.
    legacy_extra: Any | None = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    # Revisions 0003-0006 (expand → backfill → contract); the defaults keep older writers working.
    tags: list[str] = Field(
        default_factory=list,
        sa_column=sa.Column(pg.ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'::text[]")),
    )
    priority: str = Field(
        default="medium", sa_column=sa.Column(sa.Text, nullable=False, server_default=sa.text("'medium'"))
    )
    migration_run_id: uuid.UUID | None = Field(
        default=None, sa_column=sa.Column(pg.UUID(as_uuid=True), nullable=True)
    )


class MigrationRun(SQLModel, table=True):
    __tablename__ = "migration_runs"

    id: uuid.UUID = Field(sa_column=sa.Column(pg.UUID(as_uuid=True), primary_key=True))
    kind: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    status: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    source_path: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    source_name: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    source_sha256: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    chunk_size: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    parameters: Any = Field(
        default=None, sa_column=sa.Column(pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb"))
    )
    stats: Any = Field(
        default=None, sa_column=sa.Column(pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb"))
    )
    error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    started_at: datetime = _ts()
    finished_at: datetime | None = _ts(nullable=True, default=False)


class MigrationCheckpoint(SQLModel, table=True):
    """One row per committed chunk, written in the same transaction as the chunk's rows."""

    __tablename__ = "migration_checkpoints"

    run_id: uuid.UUID = Field(
        sa_column=sa.Column(
            pg.UUID(as_uuid=True),
            sa.ForeignKey("migration_runs.id", name="fk_migration_checkpoints_run_id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    chunk_no: int = Field(sa_column=sa.Column(sa.Integer, primary_key=True))
    first_position: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    last_position: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    records: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    migrated: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    already_present: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    duplicates: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    quarantined: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    # Revision 0011: a re-sync's rows changed in the file and updated, or changed on both sides
    updated: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default=sa.text("0")))
    conflicts: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default=sa.text("0")))
    # Exact sum of the migrated rows' 64-bit content checksums (see tasks/checksum.py).
    checksum: Decimal = Field(sa_column=sa.Column(sa.Numeric, nullable=False))
    committed_at: datetime = _ts()
    # Revision 0013: the task ids of a compared (re-synced) chunk's rows, until its run completes
    seen: list[uuid.UUID] | None = Field(
        default=None, sa_column=sa.Column(pg.ARRAY(pg.UUID(as_uuid=True)), nullable=True)
    )


class QuarantineRecord(SQLModel, table=True):
    """A source record that could not go into `tasks`, with every reason, kept whole."""

    __tablename__ = "quarantine"
    __table_args__ = (sa.UniqueConstraint("run_id", "position", name="uq_quarantine_run_position"),)

    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, sa.Identity(), primary_key=True))
    run_id: uuid.UUID = Field(
        sa_column=sa.Column(
            pg.UUID(as_uuid=True),
            sa.ForeignKey("migration_runs.id", name="fk_quarantine_run_id"),
            nullable=False,
        )
    )
    # Index of the record in the source's tasks array (0-based).
    position: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    legacy_id: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    # The record as read, as JSON a person can read (lone surrogates escaped, nothing else).
    raw: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    reasons: list[str] = Field(sa_column=sa.Column(pg.ARRAY(sa.Text), nullable=False))
    # Revision 0008: where in the file, as a JSON path (`$.days[2].tasks[0]`).
    location: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    # Revision 0011: the file (legacy source) of a run of many files it came from.
    legacy_source: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    created_at: datetime = _ts()


metadata = SQLModel.metadata


class BackfillState(SQLModel, table=True):
    """Where a named backfill stands; committed in the same transaction as each batch it describes,
    so a killed run resumes from its last committed batch."""

    __tablename__ = "backfill_state"

    name: str = Field(sa_column=sa.Column(sa.Text, primary_key=True))
    table_name: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    column_name: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    value: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    run_id: uuid.UUID | None = Field(default=None, sa_column=sa.Column(pg.UUID(as_uuid=True), nullable=True))
    status: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    # The primary key of the last row of the last committed batch, as text (NULL: start of a pass).
    last_key: list[str] | None = Field(default=None, sa_column=sa.Column(pg.ARRAY(sa.Text), nullable=True))
    rows_done: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False, server_default=sa.text("0")))
    batches: int = Field(sa_column=sa.Column(sa.Integer, nullable=False, server_default=sa.text("0")))
    started_at: datetime = _ts()
    updated_at: datetime = _ts()


def _count() -> Any:
    return Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default=sa.text("0")))


def _run_id(table: str) -> Any:
    return Field(
        sa_column=sa.Column(
            pg.UUID(as_uuid=True),
            sa.ForeignKey("migration_runs.id", name=f"fk_{table}_run_id", ondelete="CASCADE"),
            primary_key=True,
        )
    )


class MigrationFile(SQLModel, table=True):
    """Per run, per file and per chunk that holds its records: what happened to them, committed in
    the chunk's own transaction (the file's checkpoint). part -1: the file was refused whole."""

    __tablename__ = "migration_files"

    run_id: uuid.UUID = _run_id("migration_files")
    file_no: int = Field(sa_column=sa.Column(sa.Integer, primary_key=True))
    part: int = Field(sa_column=sa.Column(sa.Integer, primary_key=True))
    legacy_source: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    path: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    owner: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    sha256: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    status: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    records: int = _count()
    inserted: int = _count()
    updated: int = _count()
    unchanged: int = _count()
    conflicts: int = _count()
    duplicates: int = _count()
    quarantined: int = _count()
    error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    committed_at: datetime = _ts()


class MigrationSource(SQLModel, table=True):
    """A legacy source (one Phase 1 file): its last sync, and when cutover closed it."""

    __tablename__ = "migration_sources"

    legacy_source: str = Field(sa_column=sa.Column(sa.Text, primary_key=True))
    path: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    owner: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    sha256: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    # the stat of the file that sync read, when it vouches for those bytes (revision 0014, tasks/filestat.py)
    stat_key: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    last_run_id: uuid.UUID | None = Field(default=None, sa_column=sa.Column(pg.UUID(as_uuid=True), nullable=True))
    synced_at: datetime | None = _ts(nullable=True, default=False)
    closed_at: datetime | None = _ts(nullable=True, default=False)


class MigrationSeen(SQLModel, table=True):
    """The rows a re-sync run saw in its files, one row each, as runs before revision 0013 noted
    them (since then a chunk's checkpoint holds its own: migration_checkpoints.seen). Read for a
    run interrupted before that upgrade; nothing writes here any more."""

    __tablename__ = "migration_seen"

    run_id: uuid.UUID = _run_id("migration_seen")
    task_id: uuid.UUID = Field(sa_column=sa.Column(pg.UUID(as_uuid=True), primary_key=True))


class MigrationRowHistory(SQLModel, table=True):
    """A row as it was before a re-sync updated or deleted it: what a rollback of that run restores."""

    __tablename__ = "migration_row_history"

    run_id: uuid.UUID = _run_id("migration_row_history")
    task_id: uuid.UUID = Field(sa_column=sa.Column(pg.UUID(as_uuid=True), primary_key=True))
    op: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    before: Any = Field(sa_column=sa.Column(sa.JSON, nullable=False))


class MigrationDeleted(SQLModel, table=True):
    """A migrated task the application deleted (kept by the trigger tasks_note_deleted, revision
    0012): a re-sync leaves it deleted, Phase 2 wins, and its record waits in quarantine."""

    __tablename__ = "migration_deleted"

    task_id: uuid.UUID = Field(sa_column=sa.Column(pg.UUID(as_uuid=True), primary_key=True))
    legacy_source: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    legacy_key: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    migration_run_id: uuid.UUID | None = Field(
        default=None, sa_column=sa.Column(pg.UUID(as_uuid=True), nullable=True)
    )
    deleted_at: datetime = _ts()
    last_row: Any = Field(sa_column=sa.Column(sa.JSON, nullable=False))
