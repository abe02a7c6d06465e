"""A chunk whose legacy sources already have rows: compare, then insert, update or leave each row.

People kept using the CLI until cutover, so a file is migrated again after it changed. Each row
keeps `legacy_checksum`, the checksum of the row as the migration last wrote it. Against it:

- a record not in `tasks` is inserted;
- a record whose content equals its row's is unchanged;
- a record that changed while its row still has the checksum the migration wrote (the application
  left it alone) updates the row, and the row as it was goes to migration_row_history (a rollback
  of this run puts it back);
- a record that did not change while the application changed its row is unchanged: Phase 2 wins;
- a record that changed while the application changed its row too is a conflict: Phase 2 wins,
  and the record goes to quarantine with both versions;
- a record whose row the application deleted (migration_deleted keeps it, revision 0012) is a
  conflict too, whether the record changed or not: Phase 2 wins, the row stays deleted, and the
  record goes to quarantine with the row as it was when deleted.

A record without its own creation time is compared without timestamps (its stand-in is the run's
start time, which is not its content). Every row the chunk saw is noted in its checkpoint
(migration_checkpoints.seen, revision 0013), so the rows of the same sources that no file holds any
more are found afterwards (`disappeared`), and deleted only when asked (`--propagate-deletes`) and
only where the application left them alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from tasks import foreign_keys
from tasks.checksum import COPY_COLUMNS as TASK_COLUMNS
from tasks.checksum import hex_sql, row_checksum_sql, row_line_sql
from tasks.runs import DELETED_OF_OTHER_RUNS, holds
from tasks.transform import QuarantineEntry, Rendered, Rows, TransformedChunk

# A staged row whose task the application deleted: the same id, or the same record of the same source.
_SAME_RECORD = "d.legacy_source = s.legacy_source AND d.legacy_key = coalesce(s.legacy_key, s.legacy_id::text)"
_DELETED_MATCH = f"d.task_id = s.id OR ({_SAME_RECORD})"
# The same as NOT EXISTS (… WHERE _DELETED_MATCH), as two anti-joins on equalities: an OR in one
# would compare every staged row with every deleted one.
_NOT_DELETED = (
    "NOT EXISTS (SELECT 1 FROM migration_deleted d WHERE d.task_id = s.id) "
    f"AND NOT EXISTS (SELECT 1 FROM migration_deleted d WHERE {_SAME_RECORD})"
)
_STAGE = "CREATE TEMP TABLE IF NOT EXISTS stage_tasks (LIKE tasks INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
# What a re-sync compares and updates; a rollback of it restores these and the row's timestamps.
# The owner is content: a record that names another owner now moves (its row's line and checksum
# hold the owner, so one left behind would be "updated" again by every re-sync).
CONTENT = "title, notes, status, priority, tags, legacy_extra, legacy_id, user_id"
_KEPT = ("id", "legacy_source", "legacy_key")  # what an update leaves of the row's own
PHASE2_SHOWN = 600  # characters of the Phase 2 row a conflict's reason shows


@dataclass
class Sorted:
    """What became of a staged chunk's rows, by task id (32 hex digits)."""

    inserted: set[str] = field(default_factory=set)
    updated: set[str] = field(default_factory=set)
    unchanged: set[str] = field(default_factory=set)
    conflicts: dict[str, str] = field(default_factory=dict)  # id -> the Phase 2 row, as JSON
    deleted: set[str] = field(default_factory=set)  # the conflicts whose row the application deleted


def _loaded_line(defaulted: str) -> str:
    """The line of a staged row as the migration would have written it the first time: a record
    without its own creation time took the run's start, which is the stored row's created_at."""
    return row_line_sql(
        "s",
        created=f"CASE WHEN {defaulted} THEN t.created_at ELSE s.created_at END",
        updated=f"CASE WHEN {defaulted} AND s.updated_at = s.created_at THEN t.created_at ELSE s.updated_at END",
    )


def staged(
    conn: psycopg.Connection, run_id: str, rows: Rows, rendered: Rendered, whole: Collection[str] = ()
) -> Sorted:
    """Sort the chunk's rows; the caller holds the transaction. A row whose record has its own
    timestamps and whose row under the same id still has the checksum the record's line gives is
    unchanged by the first rule (below) whatever else: told from the checksums alone. The others
    are COPied into a staging table and compared there. The caller notes every row as seen, in the
    chunk's checkpoint.

    `whole`: the legacy sources all of whose records are in this chunk. Their stored rows are
    read by source, the others' id by id: a source's rows sit together in its index and, loaded
    file by file, in the table, where the ids of a chunk are random probes into both (a chunk of
    380 user files, 3,700 rows, on the 100,000-file database: 4 ms against 21 ms)."""
    out = Sorted()
    todo: Sequence[int] = range(rendered.count)
    if rendered.lines is not None:  # a re-sync's rows are mostly such: 9 in 10 of a file that changed
        whole = whole if rows.sources else ()  # rows of a single file carry no source of their own
        by_id = (
            [t for t, source in zip(rendered.task_ids, rows.sources, strict=True) if source not in whole]
            if whole
            else rendered.task_ids
        )
        stored = dict(
            conn.execute(
                f"SELECT {hex_sql('id')}, legacy_checksum FROM tasks WHERE legacy_source = ANY(%b) UNION ALL "
                f"SELECT {hex_sql('id')}, legacy_checksum FROM tasks WHERE id = ANY(%b::uuid[])",
                (list(whole), by_id),
            ).fetchall()
        )
        todo = [
            j
            for j, (tid, checksum, untimed) in enumerate(
                zip(rendered.task_ids, rendered.checksums, rows.defaulted_ts, strict=True)
            )
            if untimed or stored.get(tid) != checksum
        ]
        out.unchanged = set(rendered.task_ids).difference(rendered.task_ids[j] for j in todo)
    if not todo:
        return out
    conn.execute(_STAGE)
    with conn.cursor().copy(f"COPY stage_tasks ({TASK_COLUMNS}) FROM STDIN (FORMAT csv)") as copy:
        copy.write(rendered.some(todo) if rendered.lines is not None else rendered.csv)
    out.inserted = {
        r[0]
        for r in conn.execute(
            f"INSERT INTO tasks ({TASK_COLUMNS}) SELECT {TASK_COLUMNS} FROM stage_tasks s "
            f"WHERE {_NOT_DELETED} "
            f"ON CONFLICT DO NOTHING RETURNING {hex_sql('id')}"
        ).fetchall()
    }
    if len(out.inserted) == len(todo):
        return out
    untimed = [tid for tid, d in zip(rendered.task_ids, rows.defaulted_ts, strict=True) if d]
    defaulted = f"{hex_sql('s.id')} = ANY(%(untimed)b)"
    same = (
        f"CASE WHEN {defaulted} THEN {row_line_sql('s', timestamps=False)} = {row_line_sql('t', timestamps=False)} "
        f"ELSE {row_line_sql('s')} = {row_line_sql('t')} END"
    )
    untouched = f"(t.legacy_checksum IS NOT NULL AND {row_checksum_sql('t')} = t.legacy_checksum)"
    file_unchanged = f"(('x' || left(md5({_loaded_line(defaulted)}), 16))::bit(64)::bigint = t.legacy_checksum)"
    # The module's rules in order. First, a record with its own timestamps whose line is the one
    # the migration wrote (its checksum, sent with it, is the row's legacy_checksum) is unchanged
    # whatever Phase 2 did: the rows a re-sync sees are mostly these, and the rules after it
    # rebuild and hash both lines (60 ms a chunk of 2,000 rows, against 24 ms with this first).
    outcome = (
        f"CASE WHEN NOT {defaulted} AND s.legacy_checksum = t.legacy_checksum THEN 'unchanged' "
        f"WHEN {same} THEN 'unchanged' WHEN {untouched} THEN 'updated' "
        f"WHEN {file_unchanged} THEN 'unchanged' ELSE 'conflict' END"
    )
    # The Phase 2 row as JSON only for a conflict, which shows it: for every row it was 6 MB a
    # chunk of 10,000, read from the server and held, for the few a re-sync finds in conflict.
    found = conn.execute(
        "SELECT id, outcome, CASE WHEN outcome = 'conflict' THEN row_to_json(phase2)::text END "
        f"FROM (SELECT {hex_sql('s.id')} AS id, {outcome} AS outcome, t AS phase2 "
        "FROM stage_tasks s JOIN tasks t ON t.id = s.id OR (t.legacy_source = s.legacy_source "
        "AND (t.legacy_key = s.legacy_key OR t.legacy_id = s.legacy_id)) "
        f"WHERE {hex_sql('s.id')} <> ALL(%(inserted)b)) compared",
        {"untimed": untimed, "inserted": list(out.inserted)},
    ).fetchall()
    for tid, became, phase2 in found:
        if became == "unchanged":
            out.unchanged.add(tid)
        elif became == "updated":
            out.updated.add(tid)
        else:
            out.conflicts[tid] = phase2
    # Neither inserted nor matched with a row: the application deleted its row (the insert left it out)
    matched = set(out.inserted).union(out.unchanged, out.updated, out.conflicts)
    gone = [tid for tid in (rendered.task_ids[j] for j in todo) if tid not in matched]
    if gone:
        for tid, last_row in conn.execute(
            f"SELECT DISTINCT ON (s.id) {hex_sql('s.id')}, d.last_row::text FROM stage_tasks s "
            f"JOIN migration_deleted d ON {_DELETED_MATCH} WHERE {hex_sql('s.id')} = ANY(%b) "
            "ORDER BY s.id, d.deleted_at DESC",
            (gone,),
        ).fetchall():
            out.conflicts[tid] = last_row
            out.deleted.add(tid)
    if out.updated:
        _update(conn, run_id, sorted(out.updated), untimed)
    return out


def _update(conn: psycopg.Connection, run_id: str, ids: list[str], untimed: list[str]) -> None:
    """The rows as they were to history, then each row as it becomes -- its own id and keys, the
    record's content and owner, the row's creation time for a record without its own -- written once
    with that row's checksum (a second UPDATE for the checksum wrote every updated row twice)."""
    conn.execute(
        "INSERT INTO migration_row_history (run_id, task_id, op, before) "
        "SELECT %s, t.id, 'update', row_to_json(t) FROM tasks t WHERE t.id = ANY(%b::uuid[])",
        (run_id, ids),
    )
    content = CONTENT.split(", ")
    becomes = (
        f"SELECT {', '.join(f't.{c}' for c in _KEPT)}, {', '.join(f's.{c}' for c in content)}, "
        f"CASE WHEN {hex_sql('s.id')} = ANY(%(untimed)b) THEN t.created_at ELSE s.created_at END AS created_at, "
        "s.updated_at FROM stage_tasks s JOIN tasks t ON t.id = s.id WHERE s.id = ANY(%(ids)b::uuid[])"
    )
    assignments = ", ".join(f"{c} = n.{c}" for c in (*content, "created_at", "updated_at"))
    conn.execute(
        f"UPDATE tasks t SET {assignments}, legacy_checksum = {row_checksum_sql('n')} "
        f"FROM ({becomes}) n WHERE t.id = n.id",
        {"ids": ids, "untimed": untimed},
    )


def conflict_entries(chunk: TransformedChunk, rendered: Rendered, found: Sorted) -> list[QuarantineEntry]:
    """A conflict's record in quarantine, where it is in its file, with the row Phase 2 kept (or
    deleted) in its reason."""
    assert chunk.entry is not None, "a transformed chunk tells its records' entries"
    out = []
    for j, tid in enumerate(rendered.task_ids):
        if tid in found.conflicts:
            phase2 = found.conflicts[tid]
            shown = phase2 if len(phase2) <= PHASE2_SHOWN else phase2[: PHASE2_SHOWN - 1] + "…"
            reason = (
                "conflict: the application deleted this record's row in Phase 2 after the migration wrote it; "
                f"Phase 2 wins, the row stays deleted (it was {shown})"
                if tid in found.deleted
                else "conflict: the record changed in the file and its row changed in Phase 2 since the migration "
                f"wrote it; Phase 2 kept (row {tid}: {shown})"
            )
            out.append(chunk.entry(chunk.rows.positions[j], [reason]))
    return out


# The task ids a run saw: each compared chunk's checkpoint holds its own (revision 0013); a run
# interrupted before that upgrade noted them a row each in migration_seen.
_SEEN = (
    "(SELECT unnest(seen) AS task_id FROM migration_checkpoints WHERE run_id = %(run)s AND seen IS NOT NULL "
    "UNION ALL SELECT task_id FROM migration_seen WHERE run_id = %(run)s)"
)


def disappeared(conn: psycopg.Connection, run_id: str, sources: list[str]) -> dict[str, int]:
    """Per legacy source, the rows no file of this run holds any more."""
    return dict(
        conn.execute(
            "SELECT t.legacy_source, count(*) FROM tasks t WHERE t.legacy_source = ANY(%(sources)b) AND NOT EXISTS "
            f"(SELECT 1 FROM {_SEEN} m WHERE m.task_id = t.id) GROUP BY 1",
            {"sources": sources, "run": run_id},
        ).fetchall()
    )


def deleted_and_gone(conn: psycopg.Connection, run_id: str, sources: list[str]) -> dict[str, int]:
    """Per legacy source, the rows the application deleted whose records no file of this run holds
    any more: counted among the sources' rows before the run (tasks/runs.py), matched by no
    record, so disappeared too."""
    return dict(
        conn.execute(
            f"SELECT d.legacy_source, count(*) {DELETED_OF_OTHER_RUNS} "
            f"AND NOT EXISTS (SELECT 1 FROM {_SEEN} m WHERE m.task_id = d.task_id) GROUP BY 1",
            {"sources": sources, "run": run_id},
        ).fetchall()
    )


def delete_disappeared(conn: psycopg.Connection, run_id: str, sources: list[str]) -> int:
    """Delete the disappeared rows the application left alone (their history first); the others stay."""
    with conn.transaction():
        gone = (
            "FROM tasks t WHERE t.legacy_source = ANY(%(sources)b) AND NOT EXISTS "
            f"(SELECT 1 FROM {_SEEN} m WHERE m.task_id = t.id) "
            f"AND t.legacy_checksum IS NOT NULL AND {row_checksum_sql('t')} = t.legacy_checksum"
        )
        params = {"sources": sources, "run": run_id}
        conn.execute(
            f"INSERT INTO migration_row_history (run_id, task_id, op, before) "
            f"SELECT %(run)s, t.id, 'delete', row_to_json(t) {gone} ON CONFLICT DO NOTHING",
            params,
        )
        deleted = "SELECT task_id FROM migration_row_history WHERE run_id = %(run)s AND op = 'delete'"
        conn.execute(f"DELETE FROM tasks WHERE id IN ({deleted})", params)
        # the migration's own deletes: not the application's (the trigger noted them all)
        conn.execute(f"DELETE FROM migration_deleted WHERE task_id IN ({deleted})", params)
        # counted from the history, so a retry after a lost acknowledgement counts the same
        return conn.execute(
            "SELECT count(*) FROM migration_row_history WHERE run_id = %(run)s AND op = 'delete'", params
        ).fetchone()[0]


def missing_sources(conn: psycopg.Connection, run_id: str, source_name: str, shown: int = 5) -> tuple[int, list[str]]:
    """The open sources of this source name that an earlier sync read, holding rows still, and that
    this run of many files did not find (a file deleted, moved, or outside what the run was given):
    how many, and the first few. Their rows stay as they are; a run only says so (deleting them
    would take every user's tasks on a mistyped glob)."""
    found = conn.execute(
        "WITH missing AS MATERIALIZED (SELECT s.legacy_source FROM migration_sources s "
        "WHERE starts_with(s.legacy_source, %(prefix)s) AND s.closed_at IS NULL AND NOT EXISTS "
        "(SELECT 1 FROM migration_files f WHERE f.run_id = %(run)s AND f.legacy_source = s.legacy_source)) "
        f"SELECT legacy_source, count(*) OVER () FROM missing m WHERE {holds('m.legacy_source')} "
        "ORDER BY 1 LIMIT %(shown)s",
        {"prefix": f"{source_name}:", "run": run_id, "shown": shown},
    ).fetchall()
    return (int(found[0][1]), [r[0] for r in found]) if found else (0, [])


def forget_seen(conn: psycopg.Connection, run_id: str) -> None:
    """A completed run's seen rows: no longer needed (a resumed run needed them)."""
    with conn.transaction():
        conn.execute("UPDATE migration_checkpoints SET seen = NULL WHERE run_id = %s AND seen IS NOT NULL", (run_id,))
        conn.execute("DELETE FROM migration_seen WHERE run_id = %s", (run_id,))


# The files of a run that a re-sync may find unchanged, in one statement over the run's files:
# each file's last sync, where that sync read these very bytes for this owner and completed with
# these parameters; what it did with the file; and whether the rows are all still there.
_CANDIDATES = (
    "CREATE TEMP TABLE IF NOT EXISTS run_candidates (file_no int, legacy_source text, path text, owner text, "
    "sha256 text, stat_key bigint) ON COMMIT DELETE ROWS"
)
# The candidates not hashed yet whose stat does not vouch for the bytes their source's last sync
# read (another stat, or none kept): they are hashed and compared by content.
_UNVOUCHED = """
SELECT c.file_no, c.path FROM run_candidates c JOIN migration_sources s ON s.legacy_source = c.legacy_source
WHERE c.sha256 IS NULL AND s.closed_at IS NULL AND s.stat_key IS DISTINCT FROM c.stat_key
"""
_HASHED = (
    "UPDATE run_candidates c SET sha256 = u.sha256 FROM unnest(%b::int[], %b::text[]) AS u(file_no, sha256) "
    "WHERE c.file_no = u.file_no"
)
# A file found unchanged by content, stat taken before it was hashed: that stat vouches for it next time.
_VOUCHED = (
    "UPDATE migration_sources s SET stat_key = c.stat_key FROM run_candidates c "
    "WHERE c.file_no = ANY(%b) AND c.stat_key IS NOT NULL AND s.legacy_source = c.legacy_source"
)
_UNCHANGED = """
WITH matched AS MATERIALIZED (  -- the same bytes: the same sha256, or (not hashed) the same stat
    SELECT c.file_no, c.legacy_source, c.path, c.owner, s.sha256, s.last_run_id FROM run_candidates c
    JOIN migration_sources s ON s.legacy_source = c.legacy_source
         AND (s.sha256 = c.sha256 OR (c.sha256 IS NULL AND s.stat_key = c.stat_key))
    JOIN migration_runs r ON r.id = s.last_run_id
    WHERE s.closed_at IS NULL AND s.owner IS NOT DISTINCT FROM c.owner AND r.status = 'completed'
      AND r.parameters = %(parameters)s
), clean AS (  -- what those syncs did with their files: every record a row or a duplicate
    SELECT m.run_id, m.legacy_source, sum(m.records) AS records, sum(m.duplicates) AS duplicates
    FROM migration_files m WHERE m.run_id = ANY(ARRAY(SELECT DISTINCT last_run_id FROM matched))
    GROUP BY m.run_id, m.legacy_source
    HAVING bool_and(m.status IN ('loaded', 'unchanged')) AND sum(m.quarantined) = 0 AND sum(m.conflicts) = 0
), found AS MATERIALIZED (  -- joined before the rows are counted, so that they are for these files alone
    SELECT c.*, l.records, l.duplicates
    FROM matched c JOIN clean l ON l.run_id = c.last_run_id AND l.legacy_source = c.legacy_source
)
INSERT INTO migration_files (run_id, file_no, part, legacy_source, path, owner, sha256, status, records,
                             unchanged, duplicates)
SELECT %(run)s, f.file_no, 0, f.legacy_source, f.path, f.owner, f.sha256, 'unchanged', f.records,
       f.records - f.duplicates, f.duplicates
FROM found f
WHERE (SELECT count(*) FROM tasks t WHERE t.legacy_source = f.legacy_source)  -- the rows are all still there
      = f.records - f.duplicates
RETURNING file_no
"""


# Tables whose statistics are this far behind their rows (or were never taken) are analysed before
# the statement reads them: right after the run that wrote them, before autovacuum has, its plan
# took 6.2 s against 1.3-1.6 s (100,000 files; a re-sync started seconds after the first run).
_STALE = """
SELECT c.oid::regclass::text FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = ANY(%s::regclass[]) AND s.n_mod_since_analyze > greatest(c.reltuples, 0) / 10 + 1000
"""


def _analyze_if_stale(conn: psycopg.Connection, tables: Sequence[str]) -> None:
    """ANALYZE those of the tables whose statistics are stale (a role that may not is warned, not stopped)."""
    stale = [r[0] for r in conn.execute(_STALE, (list(tables),)).fetchall()]
    if stale:
        conn.execute(f"ANALYZE {', '.join(stale)}")


def unchanged_files(
    conn: psycopg.Connection,
    run_id: str,
    files: Sequence[Any],
    parameters: dict[str, Any],
    sha256: Callable[[str], str | None],
    *,
    resumed: bool,
) -> frozenset[int]:
    """The files this run need not read again, recorded (status 'unchanged' in migration_files)
    in one transaction, so that a resumed run streams exactly the files its first attempt did.
    A file found with a stat that matches the one its last sync kept is those bytes (tasks/filestat.py);
    the others are hashed here with sha256(path) and compared by content.

    A file is unchanged when the last sync that read its source, a completed run with these same
    parameters and owner, read these very bytes (sha256) and left nothing to do: every record it
    held became a row or a duplicate (none quarantined, none a conflict), and the rows are all
    still there. A re-sync of it would count each record unchanged again (Phase 2 wins where the
    application changed a row), so its counts are taken from that sync instead.

    The files go to a temporary table by COPY and are matched there in one statement: 100,000
    files sent as arrays and matched in Python cost 52 MB and 3.6 s (now 14 MB and 1.7 s). The
    table is analysed first and the statement runs without nested loops (below)."""
    rows = conn.execute(
        "SELECT file_no FROM migration_files WHERE run_id = %s AND status = 'unchanged'", (run_id,)
    ).fetchall()
    if resumed or rows:  # chosen before (or by this very step, whose acknowledgement was lost)
        return frozenset(r[0] for r in rows)
    synced = conn.execute("SELECT EXISTS (SELECT 1 FROM migration_sources WHERE closed_at IS NULL)").fetchone()
    if not (synced and synced[0]):  # no source has a sync to compare with: a first run
        return frozenset()
    batch = foreign_keys.may_batch(conn)
    with conn.transaction():
        conn.execute(_CANDIDATES)
        columns = "file_no, legacy_source, path, owner, sha256, stat_key"
        with conn.cursor().copy(f"COPY run_candidates ({columns}) FROM STDIN") as copy:
            for f in files:
                if not f.refused and (f.digest is not None or f.settled):
                    key = f.stat if f.settled else None
                    copy.write_row((f.no, f.source.legacy_source, f.source.path, f.source.owner, f.digest, key))
        conn.execute("ANALYZE run_candidates")
        _analyze_if_stale(conn, ("tasks", "migration_files", "migration_sources"))
        # Every join here is of whole sets, but a (run, source) join is estimated at a row or two,
        # and a nested loop over that re-aggregated migration_files a row at a time (seen: a
        # statement still running after ten minutes). Hash and merge joins only, for this one; the
        # rows of each file's source are counted on the index of tasks (legacy_source, ...).
        conn.execute("SET LOCAL enable_nestloop = off")
        hashed = _hash_unvouched(conn, sha256)
        with foreign_keys.checked_once(conn, (), run_id) if batch else contextlib.nullcontext():
            found = frozenset(
                r[0] for r in conn.execute(_UNCHANGED, {"run": run_id, "parameters": Jsonb(parameters)}).fetchall()
            )
        vouched = [no for no in hashed if no in found]
        if vouched:
            conn.execute(_VOUCHED, (vouched,))
    return found


def _hash_unvouched(conn: psycopg.Connection, sha256: Callable[[str], str | None]) -> list[int]:
    """Hash the candidates whose stat cannot say they are unchanged (the few that changed, as a
    rule); the file numbers hashed. One that cannot be read stays unhashed: it is read, and refused."""
    hashed = [(no, sha256(path)) for no, path in conn.execute(_UNVOUCHED).fetchall()]
    hashed = [(no, sha) for no, sha in hashed if sha is not None]
    if hashed:
        conn.execute(_HASHED, ([no for no, _ in hashed], [sha for _, sha in hashed]))
    return [no for no, _ in hashed]
