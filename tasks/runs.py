"""Run bookkeeping: the `migration_runs` row of a run, resuming an interrupted one, and the users a
run needs (found by email, or created and marked as the run's)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg.types.json import Jsonb

from tasks.checksum import hex_sql
from tasks.conversions import normalize_email
from tasks.mapping import FieldMapping
from tasks.source import ReadOptions
from tasks.sources import absolute
from tasks.transform import TransformContext, user_key

RESUMABLE = ("running", "interrupted")
# Sources a statement: the legacy sources of 100,000 files as one array parameter are tens of MB
# of Python objects held at once (40 MB for record_sources' four arrays).
BATCH = 10_000
T = TypeVar("T")


def batches(items: Sequence[T], size: int = BATCH) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


@dataclass(frozen=True)
class Run:
    id: str
    started_at: datetime
    chunk_size: int
    resumed: bool


def canonical_ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def transform_context(
    source_name: str, default_user: str, owners: dict[str, str], started: datetime, mapping: FieldMapping
) -> TransformContext:
    """What a run's rows are derived with besides the records (a resumed run and an audit of it
    rebuild the very same)."""
    return TransformContext(
        source_name, normalize_email(default_user), canonical_ts(started), owners, mapping
    )


def run_parameters(
    mapping: FieldMapping, options: ReadOptions, owners: dict[str, str], default_user: str
) -> dict[str, Any]:
    """What decides a Phase 1 run's rows besides the file: a run resumes only with the same, and an
    audit rebuilds the rows from it (the mapping file's content, not its path, which may change)."""
    return {
        "mapping": mapping.spec,
        "read": {"lenient": options.lenient, "salvage": options.salvage},
        "default_user_email": normalize_email(default_user),
        "owner_map": dict(sorted(owners.items())),
    }


def run_mapping(parameters: dict[str, Any]) -> tuple[FieldMapping, ReadOptions]:
    """The mapping and read options a run's parameters describe (runs before inference kept only
    their --map list)."""
    spec = parameters.get("mapping") or {"map": parameters.get("map", []), "strict": True}
    return FieldMapping.from_spec(spec), ReadOptions(**parameters.get("read", {}))


def start_or_resume(
    conn: psycopg.Connection,
    *,
    kind: str,
    source_path: str,
    source_name: str,
    source_sha256: str,
    chunk_size: int,
    parameters: dict[str, Any],
) -> Run:
    """Resume the newest interrupted run of this same file and parameters, or start a new one.
    The caller holds the migration lock, so a 'running' row here belongs to a dead process."""
    with conn.transaction():
        row = conn.execute(
            "SELECT id, started_at, chunk_size, parameters FROM migration_runs "
            "WHERE kind = %s AND status = ANY(%s) AND source_sha256 = %s AND source_name = %s "
            "ORDER BY started_at DESC LIMIT 1",
            (kind, list(RESUMABLE), source_sha256, source_name),
        ).fetchone()
        if row is not None and row[3] == parameters:
            run_id = str(row[0])
            conn.execute(
                "UPDATE migration_runs SET status = 'running', error = NULL WHERE id = %s", (run_id,)
            )
            return Run(run_id, row[1], row[2], True)
        if row is not None:  # same file, other parameters: that run's rows stay, it is not resumed
            conn.execute(
                "UPDATE migration_runs SET status = 'superseded', finished_at = now() WHERE id = %s",
                (row[0],),
            )
        run_id = str(uuid.uuid4())
        started = conn.execute(
            "INSERT INTO migration_runs (id, kind, status, source_path, source_name, source_sha256, "
            "chunk_size, parameters) VALUES (%s, %s, 'running', %s, %s, %s, %s, %s) RETURNING started_at",
            (run_id, kind, source_path, source_name, source_sha256, chunk_size, Jsonb(parameters)),
        ).fetchone()
        assert started is not None
        return Run(run_id, started[0], chunk_size, False)


def finish(
    conn: psycopg.Connection, run_id: str, status: str, stats: dict[str, Any], error: str | None = None
) -> None:
    with conn.transaction():
        conn.execute(
            "UPDATE migration_runs SET status = %s, stats = %s, error = %s, finished_at = now() WHERE id = %s",
            (status, Jsonb(stats), error, run_id),
        )


# A row migration_deleted d keeps that is still deleted: one put back since (by an administrator,
# an undone audit fix) counts as the row it is again.
STILL_DELETED = "NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = d.task_id)"
# The rows of the sources another run wrote that the application has deleted: counted among the
# sources' rows before and after a re-sync, and (those no file holds) in resync.deleted_and_gone.
DELETED_OF_OTHER_RUNS = (
    "FROM migration_deleted d WHERE d.legacy_source = ANY(%(sources)b) "
    f"AND d.migration_run_id IS DISTINCT FROM %(run)s AND {STILL_DELETED}"
)


def rows_from_other_runs(conn: psycopg.Connection, sources: Sequence[str], run_id: str) -> dict[str, int]:
    """Per legacy source, the rows of `tasks` another run (or the application) wrote, with those of
    them the application has deleted since (migration_deleted, unless the row is back); a source
    with none is left out. Their chunks are re-syncs (compared: a deleted row is not written
    again), the others plain COPYs that cannot collide; before and after the load, their sum is
    what reconciles a re-sync (flows/phase1.py), a row the application deletes meanwhile included."""
    found: dict[str, int] = {}
    for part in batches(sources):
        found.update(
            conn.execute(
                "SELECT legacy_source, count(*) FROM (SELECT legacy_source FROM tasks WHERE legacy_source = "
                "ANY(%(sources)b) AND migration_run_id IS DISTINCT FROM %(run)s "
                f"UNION ALL SELECT d.legacy_source {DELETED_OF_OTHER_RUNS}) r GROUP BY legacy_source",
                {"sources": part, "run": run_id},
            ).fetchall()
        )
    return found


def closed_sources(conn: psycopg.Connection, sources: Sequence[str]) -> dict[str, datetime]:
    """The legacy sources cutover closed, and when. Until a cutover none is: asked first, so that
    a run of 100,000 files does not send every name to find none."""
    if not has_table(conn, "migration_sources"):
        return {}
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM migration_sources WHERE closed_at IS NOT NULL)").fetchone()
    if not (row and row[0]):
        return {}
    closed: dict[str, datetime] = {}
    for part in batches(sources):
        closed.update(
            conn.execute(
                "SELECT legacy_source, closed_at FROM migration_sources "
                "WHERE legacy_source = ANY(%b) AND closed_at IS NOT NULL",
                (part,),
            ).fetchall()
        )
    return closed


def claimed_before(conn: psycopg.Connection, files: Sequence[Any], default_user: str, single: str | None) -> dict[str, str]:
    """Of a run's files not refused yet (tasks/files.py RunFile), the sources an earlier sync
    claimed otherwise, with why (the end of a sentence about the source):

    - its last sync gave the source's rows to another owner (the file's, else that run's default
      user): a file is one person's tasks, and a run that names someone else for it (a manifest
      edited, another --default-user-email, two users' files under one name) must not move them,
      or write another's file over them;
    - an earlier sync read the very path under another source name (a pilot of one file without
      --owner-from-path, then the tree; --source-name changed): its tasks would be inserted twice;
    - `single`, the source name a file given alone goes by, was last synced from another file (a
      second user's file run the same way): it would be written over the first one's tasks. A
      tree's sources are named by their place in it, so a tree that moved is synced in place.

    The files go by COPY to a temporary table, row by row as they are: 100,000 (source, owner)
    pairs sent as two arrays took 0.20 s, this 0.09 s; nothing is sent on a first run."""
    if not files or not has_table(conn, "migration_sources"):
        return {}
    synced = conn.execute("SELECT EXISTS (SELECT 1 FROM migration_sources)").fetchone()
    if not (synced and synced[0]):  # a first run: no source was claimed yet
        return {}
    with conn.transaction():
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS run_claims (legacy_source text, path text, owner text) "
            "ON COMMIT DELETE ROWS"
        )
        conn.execute("TRUNCATE run_claims")  # a second call in one transaction starts empty too
        with conn.cursor().copy("COPY run_claims (legacy_source, path, owner) FROM STDIN") as copy:
            named = [f for f in files if not f.refused]
            for f, path in zip(named, absolute(f.source.path for f in named), strict=True):
                copy.write_row((f.source.legacy_source, path, f.source.owner))
        # owners as they take effect: a file without one of its own gives its rows to its run's default user
        owner = "coalesce(u.owner, %(default)s)"
        found = conn.execute(
            "WITH claimed AS MATERIALIZED ("  # first the few claims, then whether their sources hold rows
            "SELECT u.legacy_source, 'owner' AS kind, coalesce(s.owner, r.parameters ->> 'default_user_email') AS other, "
            "s.legacy_source AS held FROM run_claims u JOIN migration_sources s USING (legacy_source) "
            "LEFT JOIN migration_runs r ON r.id = s.last_run_id "
            f"WHERE coalesce(s.owner, r.parameters ->> 'default_user_email', {owner}) <> {owner} "
            "UNION ALL SELECT u.legacy_source, 'path', s.legacy_source, s.legacy_source FROM run_claims u "
            "JOIN migration_sources s ON s.path = u.path AND s.legacy_source <> u.legacy_source "
            # paths recorded before they were made absolute say nothing of which file it was
            "UNION ALL SELECT u.legacy_source, 'file', s.path, s.legacy_source FROM run_claims u "
            "JOIN migration_sources s USING (legacy_source) "
            "WHERE u.legacy_source = %(single)s AND s.path <> u.path AND starts_with(s.path, '/')) "
            f"SELECT legacy_source, kind, min(other) FROM claimed WHERE {holds('held')} GROUP BY 1, 2 "
            "ORDER BY 1, array_position(ARRAY['owner', 'path', 'file'], kind)",
            {"default": normalize_email(default_user), "single": single},
        ).fetchall()
    why: dict[str, str] = {}
    for source, kind, other in found:  # owner, then path, then file
        why.setdefault(source, _CLAIMS[kind].format(other or default_user))
    return why


def holds(source: str) -> str:
    """SQL: whether the legacy source (an SQL expression) holds rows, or records whose rows the
    application deleted. Only such a source is claimed: a sync rolled back holds neither, and its
    files are free again."""
    return (
        f"(EXISTS (SELECT 1 FROM tasks t WHERE t.legacy_source = {source}) "
        f"OR EXISTS (SELECT 1 FROM migration_deleted d WHERE d.legacy_source = {source}))"
    )


_CLAIMS = {
    "owner": "was last synced for {}: its rows never move to another account (change the email in Phase 2, "
    "or roll back that sync)",
    "path": "is a file an earlier sync read as source {}: its tasks would be there twice (run it as that sync "
    "did, or roll that sync back)",
    "file": "was last synced from {}: another file under the same name would be written over its tasks (give it "
    "a --source-name of its own, or put it where that file was)",
}


def record_chunkless(conn: psycopg.Connection, run_id: str, files: Sequence[Any]) -> None:
    """The files no chunk holds a part of, each a row of its own in migration_files: one refused
    whole (part -1), with its one-line reason, nothing else of it written; one read whole that
    holds no record (`{"tasks": []}`, a user who emptied their list: part 0, loaded, all counts 0).
    Idempotent: a resumed run records them again."""
    with conn.transaction():
        for f in files:
            if not f.refused and not (f.streamed and f.records == 0):
                continue
            conn.execute(
                "INSERT INTO migration_files (run_id, file_no, part, legacy_source, path, owner, sha256, status, error) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (run_id, f.no, -1 if f.refused else 0, f.source.legacy_source, f.source.path, f.source.owner,
                 None if f.refused else f.digest, f.status, f.error),
            )  # fmt: skip


def record_sources(conn: psycopg.Connection, run_id: str, files: Sequence[Any], *, cutover: bool) -> None:
    """Each streamed file's legacy source: the last sync that read it, and what it read (and, at
    cutover, every migrated file's source closed from now on). An unchanged file's source keeps the
    sync that read it, whose results say what became of each record (tasks/resync.py)."""
    loaded = [f for f in files if f.streamed]
    with conn.transaction():
        if cutover:
            for part in batches([f.source.legacy_source for f in files if f.accepted and not f.streamed]):
                conn.execute(
                    "UPDATE migration_sources SET closed_at = now() WHERE legacy_source = ANY(%b) AND closed_at IS NULL",
                    (part,),
                )
        for part in batches(loaded):
            conn.execute(
                "INSERT INTO migration_sources AS s (legacy_source, path, owner, sha256, stat_key, last_run_id, "
                "synced_at, closed_at) "
                "SELECT u.source, u.path, u.owner, u.sha, u.stat_key, %s, now(), CASE WHEN %s THEN now() END "
                "FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::bigint[]) "
                "AS u(source, path, owner, sha, stat_key) "
                "ON CONFLICT (legacy_source) DO UPDATE SET path = excluded.path, owner = excluded.owner, "
                "sha256 = excluded.sha256, stat_key = excluded.stat_key, last_run_id = excluded.last_run_id, "
                "synced_at = excluded.synced_at, closed_at = coalesce(s.closed_at, excluded.closed_at)",
                (
                    run_id,
                    cutover,
                    [f.source.legacy_source for f in part],
                    list(absolute(f.source.path for f in part)),
                    [f.source.owner for f in part],
                    [f.digest for f in part],
                    [f.stat for f in part],
                ),
            )


def shard_runs(conn: psycopg.Connection, flow_run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """flow run id -> the Phase 1 run a shard recorded (its id, status and counts)."""
    rows = conn.execute(
        "SELECT stats ->> 'flow_run_id', id::text, status, stats FROM migration_runs "
        "WHERE kind = 'phase1' AND stats ->> 'flow_run_id' = ANY(%s)",
        (flow_run_ids,),
    ).fetchall()
    return {f: {"run_id": r, "status": s, "stats": st} for f, r, s, st in rows}


def has_table(conn: psycopg.Connection, name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def user_ids(conn: psycopg.Connection, emails: list[str]) -> dict[str, str]:
    """email -> user id (32 hex digits) of the users that exist, matched case-insensitively."""
    return dict(
        conn.execute(
            f"SELECT lower(email), {hex_sql('id')} FROM users WHERE lower(email) = ANY(%b)", (emails,)
        ).fetchall()
    )


def ensure_users(
    conn: psycopg.Connection, emails: set[str], run_id: str, default_email: str
) -> dict[str, str]:
    """email -> user id (32 hex digits). Existing users are matched case-insensitively; missing ones
    are created with a deterministic id and marked as this run's, so a rollback can remove them."""
    wanted = sorted(emails)
    with conn.transaction():
        found = user_ids(conn, wanted)
        missing = [e for e in wanted if e not in found]
        if missing:
            names = ["Phase 1 default user" if e == default_email else e.split("@")[0] for e in missing]
            conn.execute(
                "INSERT INTO users (id, email, name, email_verified, migration_run_id) "
                "SELECT u.id, u.email, u.name, false, %s FROM unnest(%b::uuid[], %b::text[], %b::text[]) "
                "AS u(id, email, name) ON CONFLICT (email) DO NOTHING",
                (run_id, [user_key(e) for e in missing], missing, names),
            )
            found.update(user_ids(conn, missing))
    return found


def open_run(
    conn: psycopg.Connection,
    kind: str,
    parameters: dict[str, Any],
    source_name: str | None = None,
    run_id: str | None = None,
) -> str:
    """A new `migration_runs` row for a job that is not resumed by source file (backfill, audit,
    schema steps); returns its id. With the id given it is idempotent, so that a retry after a
    lost acknowledgement does not open a second run."""
    run_id = run_id or str(uuid.uuid4())
    with conn.transaction():
        conn.execute(
            "INSERT INTO migration_runs (id, kind, status, source_name, parameters) "
            "VALUES (%s, %s, 'running', %s, %s) ON CONFLICT (id) DO NOTHING",
            (run_id, kind, source_name, Jsonb(parameters)),
        )
    return run_id


def has_bookkeeping(conn: psycopg.Connection) -> bool:
    """Does this database have `migration_runs` yet (a database below revision 0001 does not)?"""
    return has_table(conn, "migration_runs")
