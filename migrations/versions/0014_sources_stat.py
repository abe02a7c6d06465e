"""Expand: each source's last sync keeps the stat of the file it read, so a re-sync can tell an
unchanged file without reading it.

A re-sync reads and hashes every file to find the unchanged ones (tasks/resync.py): 100,000 opens
and reads for the 1 % that changed. Now it stats them and compares:

- migration_sources.stat_key: the size, mtime, ctime and inode of the file its last sync read, as
  one 64-bit key (tasks/filestat.py), kept only when the stat vouches for the bytes the sync
  hashed (the file held still while read, and had not changed just before); NULL otherwise.

A file whose stat matches is the file its sync read (the sha256 beside it); one that does not is
hashed, as before, and compared by content. Dropping the column on downgrade loses nothing: a
later re-sync hashes every file again.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from migrations.ops import online

revision = "0014"
down_revision = "0013"
branch_labels = depends_on = None


@online
def upgrade() -> None:
    op.add_column_online(
        "migration_sources",
        sa.Column("stat_key", sa.BigInteger()),
        kept="nowhere needed: a shortcut, a later re-sync hashes the files instead",
    )


downgrade = upgrade.downgrade
