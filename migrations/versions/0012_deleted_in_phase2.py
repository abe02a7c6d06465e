"""Expand: the rows of migrated tasks the application deleted, so that a re-sync leaves them deleted.

Until cutover people may keep their Phase 1 files while using Phase 2, and Phase 2 wins: a task
deleted there must not come back with the next re-sync of a file that still holds its record. A
deleted row leaves no trace in `tasks`, so a trigger keeps one:

- migration_deleted: per task id, the row as it was when deleted (only rows a migration wrote: they
  have a legacy_source), the run that wrote it, and when;
- tasks_note_deleted: after every DELETE on tasks, one statement-level insert of the deleted rows
  (nothing on COPY, INSERT or UPDATE, so loads cost what they did). SECURITY DEFINER with its
  search_path fixed at creation: the application's role deletes tasks without any right on
  migration_deleted, and cannot point the trigger at a table of its own.

The migration's own deletes (a rollback, --propagate-deletes) remove the records they leave here,
in the same transaction: those are not the application's.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from migrations.ops import online

revision = "0012"
down_revision = "0011"
branch_labels = depends_on = None

# Built in a DO block so that the function's search_path names the schema it is created in, with
# pg_temp last: a SECURITY DEFINER function must not find a temporary table of its caller first.
_NOTE_DELETED = """
DO $do$
BEGIN
    EXECUTE format($fn$
        CREATE FUNCTION migration_note_deleted() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, %I, pg_temp AS $body$
        BEGIN
            INSERT INTO migration_deleted (task_id, legacy_source, legacy_key, migration_run_id, last_row)
            SELECT g.id, g.legacy_source, coalesce(g.legacy_key, g.legacy_id::text), g.migration_run_id,
                   row_to_json(g)
            FROM gone g WHERE g.legacy_source IS NOT NULL
            ON CONFLICT (task_id) DO UPDATE SET deleted_at = now(), last_row = excluded.last_row,
                migration_run_id = excluded.migration_run_id;
            RETURN NULL;
        END $body$
    $fn$, current_schema());
END $do$;
CREATE TRIGGER tasks_note_deleted AFTER DELETE ON tasks REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION migration_note_deleted()
"""
_FORGET_DELETED = """
DROP TRIGGER IF EXISTS tasks_note_deleted ON tasks;
DROP FUNCTION IF EXISTS migration_note_deleted()
"""


@online
def upgrade() -> None:
    op.create_table_online(
        "migration_deleted",
        sa.Column("task_id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("legacy_source", sa.Text, nullable=False),
        sa.Column("legacy_key", sa.Text, nullable=True),
        sa.Column("migration_run_id", pg.UUID(as_uuid=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.Column("last_row", sa.JSON, nullable=False),  # row_to_json of the row as it was
    )
    op.execute_online(
        "tasks",
        _NOTE_DELETED,
        _FORGET_DELETED,
        downgrade_loses="forgets which migrated tasks the application deleted: a re-sync writes them again",
    )


downgrade = upgrade.downgrade
