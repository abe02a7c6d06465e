"""Foreign keys checked once per chunk instead of once per row, where that is provably the same.

PostgreSQL checks a foreign key with a trigger per inserted row: a query that finds the referenced
row and locks it FOR KEY SHARE, so it cannot be deleted or have its key changed until the insert
commits. For a chunk of 10,000 tasks that all reference one or two users, that is 10,000 lookups of
the same row: about 40% of what PostgreSQL spends loading `tasks`.

A chunk's transaction can do the same thing once: lock every referenced row (the chunk's owners in
`users`, the run in `migration_runs`) FOR KEY SHARE itself, then skip the per-row triggers for the
rest of the transaction with `SET LOCAL session_replication_role = replica`. The guarantee is
unchanged: every referenced row exists and stays locked until commit; a concurrent DELETE of a user
waits, then fails on the rows it finds. It is done only when it is provably the same:
- the role may set session_replication_role (a superuser, or one granted SET on it); else per row;
- after locking the tables against DDL (ROW EXCLUSIVE, what COPY takes anyway), the only triggers
  or rules the replica role would skip on INSERT into them are the checks of the four foreign keys
  locked here (tasks' owner; the run of quarantine, migration_checkpoints and migration_files), and
  it would fire none that does not fire now (one enabled for replicas only, as replicators set).
  Any other (an application's trigger, a new foreign key, a deferrable unique check) and the chunk
  is written with every trigger firing, as if this module did not exist;
- a referenced row is missing: per row too, so the insert fails exactly as it would otherwise;
- the chunk only inserts: a re-sync's chunk also updates rows and writes their history, whose
  triggers (an application's audit trigger on UPDATE) the replica role would skip as well, so it
  is written with every trigger firing (tasks/load.py).

A re-sync records the files it need not read (tasks/resync.py), 90,000 rows of migration_files in
one statement, the same way (`checked_once`): 1.47 s instead of 2.2-2.5 s, most of which was that
many checks of the one run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import psycopg

TABLES = "tasks, quarantine, migration_checkpoints, migration_files"

# Switches the per-row checks off (set_config, for the transaction) when, on INSERT into TABLES,
# the replica role would skip nothing but the checks of the foreign keys it stands in for, and would
# fire nothing that does not fire now (a trigger or rule enabled for replicas only: logical
# replication and trigger-based replicators), and every referenced row is there, locked FOR KEY
# SHARE. One statement, sent with the tables' lock in one round trip (see check_per_chunk).
_PER_CHUNK = """
WITH known(tbl, col, ref, refcol) AS (
    VALUES ('tasks'::regclass, 'user_id', 'users'::regclass, 'id'),
           ('quarantine'::regclass, 'run_id', 'migration_runs'::regclass, 'id'),
           ('migration_checkpoints'::regclass, 'run_id', 'migration_runs'::regclass, 'id'),
           ('migration_files'::regclass, 'run_id', 'migration_runs'::regclass, 'id')
), stood_in AS (
    SELECT c.oid
    FROM pg_constraint c
    JOIN known k ON c.conrelid = k.tbl AND c.confrelid = k.ref
    JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] AND a.attname = k.col
    JOIN pg_attribute r ON r.attrelid = c.confrelid AND r.attnum = c.confkey[1] AND r.attname = k.refcol
    WHERE c.contype = 'f' AND cardinality(c.conkey) = 1
)
SELECT set_config('session_replication_role', 'replica', true)
WHERE NOT EXISTS (
    SELECT 1 FROM pg_trigger t
    WHERE t.tgrelid IN (SELECT tbl FROM known)
      AND t.tgenabled IN ('O', 'R')  -- skipped by the replica role, or fired by it alone (ENABLE REPLICA)
      AND t.tgtype & 4 <> 0  -- fires on INSERT
      AND NOT (t.tgenabled = 'O' AND t.tgfoid = 'pg_catalog."RI_FKey_check_ins"'::regproc
               AND t.tgconstraint IN (SELECT oid FROM stood_in))
) AND NOT EXISTS (
    SELECT 1 FROM pg_rewrite w WHERE w.ev_class IN (SELECT tbl FROM known) AND w.ev_enabled IN ('O', 'R')
) AND (
    SELECT count(*) FROM (SELECT id FROM users WHERE id = ANY(%(owners)s::uuid[]) FOR KEY SHARE) u
) = %(owners_n)s AND EXISTS (
    SELECT 1 FROM migration_runs WHERE id = %(run)s FOR KEY SHARE
)
"""


def may_batch(conn: psycopg.Connection) -> bool:
    """Whether this connection's role may skip triggers for its own transactions: tried in a
    transaction (or savepoint) rolled back whatever happens, so nothing outlives the probe (a
    pooler in transaction mode included)."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SET LOCAL session_replication_role = replica")
    except psycopg.Error:
        if conn.broken:
            raise
        return False  # not allowed (42501), or a server that does not let it be set at all
    return True


def check_per_chunk(conn: psycopg.Connection, owners: Sequence[str], run_id: str) -> bool:
    """Inside a chunk's transaction, before it writes: lock the referenced rows and switch the
    per-row checks off if that is provably the same (see the module's docstring). Returns whether
    it did; if not, nothing about the transaction changed but the locks it took.

    The tables' lock and the statement go in one round trip (a pipeline): five statements one after
    another cost each writer a wait for the GIL per answer, 200 times in a 1M-record load."""
    wanted = sorted(set(owners))
    with conn.pipeline():
        conn.execute(f"LOCK TABLE {TABLES} IN ROW EXCLUSIVE MODE")
        switched = conn.execute(_PER_CHUNK, {"owners": wanted, "owners_n": len(wanted), "run": run_id})
    return switched.fetchone() is not None


@contextmanager
def checked_once(conn: psycopg.Connection, owners: Sequence[str], run_id: str) -> Iterator[bool]:
    """check_per_chunk() for the statements inside the block alone, in a transaction that goes on
    after it: from there every trigger fires again (what is proven covers inserts into TABLES)."""
    off = check_per_chunk(conn, owners, run_id)
    yield off
    if off:
        conn.execute("SET LOCAL session_replication_role TO DEFAULT")
