"""Verify a run against its source: every record accounted for, every row's content intact.

- The checkpoints cover positions 0..records_read-1 exactly once, and
  records_read == inserted + updated + unchanged + conflicts + duplicates + quarantined.
- `tasks` holds exactly `migrated` rows of the run and `quarantine` exactly `quarantined`.
- The sum of the rows' checksums computed by PostgreSQL from what it stored equals the sum the load
  computed from the source. When it does not, the source is read again and compared row by row, so
  the failure names the records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from tasks.checksum import hex_sql, row_checksum_sql
from tasks.load import prepared_chunks
from tasks.runs import user_ids
from tasks.source import SourceInfo
from tasks.transform import TransformContext, render, user_key

MISMATCH_LIMIT = 50
COUNTS = ("records_read", "inserted", "updated", "unchanged", "conflicts", "duplicates", "quarantined")
ACCOUNTED = COUNTS[1:]  # what every record read becomes: records_read is their sum


def checksum_hex(total: int) -> str:
    """A printable form of an exact checksum sum (64 bits of it)."""
    return f"{total % 2**64:016x}"


@dataclass
class Verification:
    ok: bool
    counts: dict[str, int]
    source_checksum: str
    database_checksum: str
    problems: list[str] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)


def run_counts(conn: psycopg.Connection, run_id: str) -> tuple[dict[str, int], int]:
    """The run's totals as its checkpoints recorded them, and the source-side checksum sum."""
    row = conn.execute(
        "SELECT coalesce(sum(records), 0), coalesce(sum(migrated), 0), coalesce(sum(updated), 0), "
        "coalesce(sum(already_present), 0), coalesce(sum(conflicts), 0), coalesce(sum(duplicates), 0), "
        "coalesce(sum(quarantined), 0), coalesce(sum(checksum), 0) FROM migration_checkpoints WHERE run_id = %s",
        (run_id,),
    ).fetchone()
    assert row is not None
    return dict(zip(COUNTS, (int(v) for v in row[:7]), strict=True)), int(row[7])


def verify_run(conn: psycopg.Connection, run_id: str, records_read: int) -> Verification:
    counts, source_sum = run_counts(conn, run_id)
    problems: list[str] = []
    recorded = counts["records_read"]
    counts["records_read"] = records_read
    if recorded != records_read:
        problems.append(f"checkpoints account for {recorded} records, the source has {records_read}")
    accounted = sum(counts[c] for c in ACCOUNTED)
    if accounted != records_read:
        problems.append(f"records_read {records_read} != {' + '.join(ACCOUNTED)} ({accounted})")
    problems += _coverage(conn, run_id, records_read)
    db = conn.execute(
        f"SELECT count(*), coalesce(sum({row_checksum_sql('t')}), 0) FROM tasks t WHERE t.migration_run_id = %s",
        (run_id,),
    ).fetchone()
    assert db is not None
    db_rows, db_sum = int(db[0]), int(db[1])
    if db_rows != counts["inserted"]:
        problems.append(f"tasks holds {db_rows} rows of this run, the checkpoints say {counts['inserted']}")
    if db_sum != source_sum:
        problems.append("row checksums computed from the database differ from those computed from the source")
    q = conn.execute("SELECT count(*) FROM quarantine WHERE run_id = %s", (run_id,)).fetchone()
    expected_q = counts["quarantined"] + counts["conflicts"]  # a conflict's record waits there too
    if q is not None and q[0] != expected_q:
        problems.append(f"quarantine holds {q[0]} records of this run, the checkpoints say {expected_q}")
    changed = conn.execute(
        f"SELECT count(*) FROM migration_row_history h JOIN tasks t ON t.id = h.task_id WHERE h.run_id = %s "
        f"AND h.op = 'update' AND {row_checksum_sql('t')} IS DISTINCT FROM t.legacy_checksum",
        (run_id,),
    ).fetchone()
    if changed and changed[0]:
        problems.append(f"{changed[0]} rows this run updated do not hold what it wrote")
    return Verification(not problems, counts, checksum_hex(source_sum), checksum_hex(db_sum), problems)


def _coverage(conn: psycopg.Connection, run_id: str, records_read: int) -> list[str]:
    spans = conn.execute(
        "SELECT first_position, last_position FROM migration_checkpoints WHERE run_id = %s ORDER BY first_position",
        (run_id,),
    ).fetchall()
    expected = 0
    for first, last in spans:
        if first != expected:
            return [f"checkpoints do not cover positions {expected}..{first - 1} exactly once"]
        expected = last + 1
    if expected != records_read:
        return [f"no checkpoint covers positions {expected}..{records_read - 1}"]
    return []


def find_mismatches(
    conn: psycopg.Connection,
    info: SourceInfo,
    ctx: TransformContext,
    run_id: str,
    chunk_size: int,
    limit: int = MISMATCH_LIMIT,
) -> list[dict[str, Any]]:
    """Read the source again and compare each row it should have produced with the database."""
    found: list[dict[str, Any]] = []
    quarantined = {
        r[0] for r in conn.execute("SELECT position FROM quarantine WHERE run_id = %s", (run_id,)).fetchall()
    }
    users: dict[str, str] = {}
    for chunk in prepared_chunks(info, ctx, chunk_size):
        owners = set(chunk.rows.owners) - users.keys()
        if owners:
            users.update(user_ids(conn, sorted(owners)))
            users.update({e: user_key(e) for e in owners if e not in users})
        rendered = render(chunk.rows, ctx.source_name, users, run_id)
        stored = dict(
            conn.execute(
                f"SELECT {hex_sql('t.id')}, {row_checksum_sql('t')} FROM tasks t WHERE t.id = ANY(%b::uuid[])",
                (rendered.task_ids,),
            ).fetchall()
        )
        for tid, expected, position, legacy_id in zip(
            rendered.task_ids, rendered.checksums, chunk.rows.positions, chunk.rows.legacy_keys, strict=True
        ):
            if position in quarantined:
                continue
            if tid not in stored:
                found.append({"position": position, "legacy_id": legacy_id, "problem": "missing from tasks"})
            elif stored[tid] != expected:
                found.append({"position": position, "legacy_id": legacy_id, "problem": "content differs"})
            if len(found) >= limit:
                return found
    return found


# Bookkeeping that a verifying run itself writes to: never part of a before/after comparison.
BOOKKEEPING = ("migration_runs", "alembic_version", "backfill_state")


def table_fingerprints(
    conn: psycopg.Connection, columns: dict[str, list[str]] | None = None
) -> dict[str, str]:
    """table -> "rows:sum of 64-bit row hashes" over the given columns (default: all), for every
    table of the current schema except bookkeeping. Order-independent and exact: equal only if the
    tables hold the same rows (as multisets) in those columns."""
    found = columns if columns is not None else table_columns(conn)
    out = {}
    for table, cols in sorted(found.items()):
        row_text = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(sql.Identifier(c) for c in cols))
        total = conn.execute(
            sql.SQL(
                "SELECT count(*), coalesce(sum(('x' || left(md5({}), 16))::bit(64)::bigint::numeric), 0) FROM {}"
            ).format(row_text, sql.Identifier(table))
        ).fetchone()
        assert total is not None
        out[table] = f"{total[0]}:{checksum_hex(int(total[1]))}"
    return out


def table_columns(conn: psycopg.Connection, *, bookkeeping: bool = False) -> dict[str, list[str]]:
    """table -> its columns, for the tables of the current schema (bookkeeping only when asked)."""
    rows = conn.execute(
        "SELECT c.relname, a.attname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
        "WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace AND a.attnum > 0 "
        "AND NOT a.attisdropped AND NOT (c.relname = ANY(%s)) ORDER BY c.relname, a.attnum",
        ([] if bookkeeping else list(BOOKKEEPING),),
    ).fetchall()
    out: dict[str, list[str]] = {}
    for table, column in rows:
        out.setdefault(table, []).append(column)
    return out


def compare_fingerprints(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """What differs, as one line per table."""
    problems = []
    for table in sorted(set(before) | set(after)):
        if table not in after:
            problems.append(f"table {table} is gone")
        elif table not in before:
            problems.append(f"table {table} appeared")
        elif before[table] != after[table]:
            problems.append(f"table {table} differs: {before[table]} before, {after[table]} after")
    return problems
