"""tasks.legacy_key (the Phase 1 id as the file wrote it) and quarantine.location.

Phase 1 files name records by integers, numeric strings, UUIDs, other strings or nothing at all;
legacy_id (int4) holds only the first kind. legacy_key holds every record's key as text, unique per
legacy source. Rows written before have none: their key is their legacy_id (tasks/checksum.py
reads it so), so no backfill is needed. quarantine.location says where in the file a record was.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from migrations.ops import online

revision = "0008"
down_revision = "0007"
branch_labels = depends_on = None


@online
def upgrade() -> None:
    op.add_column_online("tasks", sa.Column("legacy_key", sa.Text))
    op.add_column_online("quarantine", sa.Column("location", sa.Text))
    op.create_index_online("uq_tasks_legacy_key", "tasks", ("legacy_source", "legacy_key"), unique=True)


downgrade = upgrade.downgrade
