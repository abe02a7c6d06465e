"""Expand: tasks.legacy_key (the Phase 1 id as the file wrote it) and quarantine.location.

Phase 1 files name records by integers, numeric strings, UUIDs, other strings or nothing at all;
legacy_id (int4) holds only the first kind. legacy_key holds every record's key as text (an
integer's digits, the string as written, or a key derived from an id-less record's content), unique
per legacy source through an index built CONCURRENTLY. Rows written before have none: their key is
their legacy_id (tasks/checksum.py reads it so), so no backfill is needed and old and new
application versions write as before. quarantine.location says where in the file a record was.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tasks.ddl import create_index_concurrently, drop_index_concurrently

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

phase = "expand"
backfills: tuple[str, ...] = ()
downgrade_loses = "drops tasks.legacy_key (string and derived ids of Phase 1 records) and quarantine.location"


def upgrade() -> None:
    op.add_column("tasks", sa.Column("legacy_key", sa.Text, nullable=True))
    op.add_column("quarantine", sa.Column("location", sa.Text, nullable=True))
    create_index_concurrently("uq_tasks_legacy_key", "tasks", ["legacy_source", "legacy_key"], unique=True)


def downgrade() -> None:
    drop_index_concurrently("uq_tasks_legacy_key")
    op.drop_column("quarantine", "location")
    op.drop_column("tasks", "legacy_key")
