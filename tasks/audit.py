"""Post-migration audit: checks that find what constraints and migrations can let slip, each one a
small function returning `Check`s, plus the one repair that is safe to automate (orphans into
quarantine, undoable).

Checks: orphan (rows whose foreign key, as the models declare it, points nowhere: a dropped or
NOT VALID constraint lets them in), not valid (constraints left NOT VALID, indexes left invalid by a
failed CONCURRENTLY build), required null (NULLs in columns the models require), duplicate legacy id,
row schema (the `tasks` rows read back through pandera, in chunks) and, given the Phase 1 file, source
rows and source checksum (row counts and per-record checksums against the run that migrated it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from models import metadata
from tasks.errors import InputError
from tasks.runs import has_table, run_mapping, transform_context
from tasks.source import file_sha256, precheck
from tasks.verify import find_mismatches, run_counts, table_columns
from validation import rows as row_schema

SAMPLE = 5
APPLICATION_TABLES = ("users", "tasks")


@dataclass
class Check:
    check: str
    status: str  # "pass" or "fail"
    count: int = 0
    sample: list[str] = field(default_factory=list)
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["sample"] = ", ".join(self.sample)
        return row


def _check(name: str, count: int, sample: list[Any], detail: str) -> Check:
    return Check(name, "fail" if count else "pass", count, [str(s) for s in sample[:SAMPLE]], detail)


@dataclass(frozen=True)
class ForeignKey:
    table: str
    column: str
    parent: str
    parent_column: str

    @property
    def label(self) -> str:
        return f"{self.table}.{self.column} -> {self.parent}.{self.parent_column}"


def declared_foreign_keys() -> list[ForeignKey]:
    """The foreign keys the models declare: what must hold whatever the live catalog says."""
    found = []
    for table in metadata.sorted_tables:
        for fk in table.foreign_keys:
            found.append(ForeignKey(table.name, fk.parent.name, fk.column.table.name, fk.column.name))
    return found


def _orphans_where(fk: ForeignKey) -> sql.Composed:
    return sql.SQL(
        "c.{col} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE p.{pcol} = c.{col})"
    ).format(
        col=sql.Identifier(fk.column), parent=sql.Identifier(fk.parent), pcol=sql.Identifier(fk.parent_column)
    )


def _key(table: str) -> sql.Composable:
    keys = [c.name for c in metadata.tables[table].primary_key.columns]
    return sql.SQL(" || ',' || ").join(sql.SQL("c.{}::text").format(sql.Identifier(k)) for k in keys)


def check_orphans(conn: psycopg.Connection) -> list[Check]:
    out = []
    for fk in declared_foreign_keys():
        row = conn.execute(
            sql.SQL(
                "SELECT count(*), (array_agg({key} ORDER BY {key}))[1:%s] FROM {table} c WHERE {where}"
            ).format(key=_key(fk.table), table=sql.Identifier(fk.table), where=_orphans_where(fk)),
            (SAMPLE,),
        ).fetchone()
        assert row is not None
        out.append(_check("orphan", row[0], row[1] or [], fk.label))
    return out


def not_valid_objects(conn: psycopg.Connection) -> tuple[list[str], list[str]]:
    """(constraints left NOT VALID, indexes left invalid) in the current schema."""
    constraints = conn.execute(
        "SELECT conrelid::regclass::text || '.' || conname FROM pg_constraint "
        "WHERE NOT convalidated AND connamespace = current_schema()::regnamespace ORDER BY 1"
    ).fetchall()
    indexes = conn.execute(
        "SELECT indexrelid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE NOT (i.indisvalid AND i.indisready) AND c.relnamespace = current_schema()::regnamespace ORDER BY 1"
    ).fetchall()
    return [r[0] for r in constraints], [r[0] for r in indexes]


def check_not_valid(conn: psycopg.Connection) -> list[Check]:
    constraints, indexes = not_valid_objects(conn)
    return [
        _check(
            "not valid", len(constraints), constraints, "constraints created NOT VALID and never validated"
        ),
        _check("invalid index", len(indexes), indexes, "indexes a failed CONCURRENTLY build left behind"),
    ]


def check_required_nulls(conn: psycopg.Connection) -> list[Check]:
    """NULLs in columns the models require, where the database no longer enforces it."""
    out = []
    for name in APPLICATION_TABLES:
        table = metadata.tables[name]
        enforced = dict(
            conn.execute(
                "SELECT attname, attnotnull FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
                "AND NOT attisdropped",
                (name,),
            ).fetchall()
        )
        for column in table.columns:
            if column.nullable or column.name not in enforced or enforced[column.name]:
                continue
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*), (array_agg({key} ORDER BY {key}))[1:%s] FROM {t} c WHERE {c} IS NULL"
                ).format(key=_key(name), t=sql.Identifier(name), c=sql.Identifier(column.name)),
                (SAMPLE,),
            ).fetchone()
            assert row is not None
            out.append(
                _check("required null", row[0], row[1] or [], f"{name}.{column.name} (NOT NULL not enforced)")
            )
    if not out:
        out.append(Check("required null", "pass", 0, [], "every required column is NOT NULL in the database"))
    return out


def check_duplicate_legacy(conn: psycopg.Connection) -> list[Check]:
    rows = conn.execute(
        "SELECT legacy_source || ':' || legacy_id, count(*) FROM tasks WHERE legacy_id IS NOT NULL "
        "GROUP BY legacy_source, legacy_id HAVING count(*) > 1 ORDER BY 1"
    ).fetchall()
    return [
        _check(
            "duplicate legacy id",
            len(rows),
            [r[0] for r in rows],
            "(legacy_source, legacy_id) pairs held twice",
        )
    ]


def check_rows(conn: psycopg.Connection, chunk_size: int = 50_000) -> list[Check]:
    """Every `tasks` row through the pandera schema, read with a server-side cursor in chunks."""
    present = set(table_columns(conn)["tasks"])
    columns = [*row_schema.COLUMNS, *(c for c in row_schema.OPTIONAL if c in present)]
    failing = 0
    sample: list[str] = []
    reasons: dict[str, int] = {}
    with conn.transaction(), conn.cursor(name="audit_rows") as cur:
        cur.itersize = chunk_size
        cur.execute(sql.SQL("SELECT {} FROM tasks").format(sql.SQL(", ").join(map(sql.Identifier, columns))))
        while batch := cur.fetchmany(chunk_size):
            df = row_schema.frame(batch, columns)
            for index, why in row_schema.validate(df).items():
                failing += 1
                if len(sample) < SAMPLE:
                    sample.append(str(df.at[index, "id"]))
                for reason in why:
                    reasons[reason] = reasons.get(reason, 0) + 1
    detail = "; ".join(f"{r} ({n})" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
    return [_check("row schema", failing, sample, detail or "every tasks row passes the pandera schema")]


# --- against the Phase 1 source ---------------------------------------------------------------------


def check_source(conn: psycopg.Connection, source: str | Path, mismatch_limit: int = 1_000) -> list[Check]:
    """Row counts and per-record checksums against the completed Phase 1 run of this very file."""
    path = Path(source)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    sha = file_sha256(path)
    if sha is None:
        raise InputError(f"{path}: cannot be read")
    # the last run that read the file (a re-sync that found it unchanged counted it without reading)
    run = conn.execute(
        "SELECT id::text, source_name, parameters, started_at, chunk_size FROM migration_runs r "
        "WHERE kind = 'phase1' AND status = 'completed' AND source_sha256 = %s AND NOT EXISTS "
        "(SELECT 1 FROM migration_files m WHERE m.run_id = r.id AND m.status = 'unchanged') "
        "ORDER BY finished_at DESC LIMIT 1",
        (sha,),
    ).fetchone()
    if run is None:
        return [
            Check("source rows", "fail", 0, [], f"no completed Phase 1 run of {path} (sha256 {sha[:12]}…)")
        ]
    run_id, source_name, params, started_at, chunk_size = run
    mapping, options = run_mapping(params)
    info = precheck(path, mapping, options)
    ctx = transform_context(
        source_name, params["default_user_email"], params.get("owner_map", {}), started_at, mapping
    )
    counts, _ = run_counts(conn, run_id)
    expected = counts["inserted"] + counts["updated"] + counts["unchanged"] + counts["conflicts"]
    expected -= _deleted_conflicts(conn, run_id, source_name)
    row = conn.execute("SELECT count(*) FROM tasks WHERE legacy_source = %s", (source_name,)).fetchone()
    actual = int(row[0]) if row else 0
    mismatches = find_mismatches(conn, info, ctx, run_id, chunk_size, limit=mismatch_limit)
    labels = [f"position {m['position']} (id {m['legacy_id']}): {m['problem']}" for m in mismatches]
    more = "+" if len(mismatches) >= mismatch_limit else ""
    return [
        Check(
            "source rows",
            "pass" if actual == expected else "fail",
            abs(actual - expected),
            [],
            f"{actual:,} rows of source {source_name!r} in tasks, {expected:,} expected from run {run_id}",
        ),
        _check(
            "source checksum",
            len(mismatches),
            labels,
            f"{len(mismatches)}{more} records differ from {path.name}",
        ),
    ]


def _deleted_conflicts(conn: psycopg.Connection, run_id: str, source_name: str) -> int:
    """The run's conflicts whose rows the application had deleted (they wait in quarantine, no row)."""
    if not has_table(conn, "migration_deleted"):
        return 0
    row = conn.execute(
        "SELECT count(*) FROM quarantine q JOIN migration_deleted d ON d.legacy_source = %s "
        "AND d.legacy_key = q.legacy_id WHERE q.run_id = %s",
        (source_name, run_id),
    ).fetchone()
    return int(row[0]) if row else 0


# --- the repair ---------------------------------------------------------------------------------------


def fix_orphans(conn: psycopg.Connection, run_id: str) -> int:
    """Move every orphan row of an application table into `quarantine` (the whole row, its table and
    the reason), in one transaction; undo_fix() puts them back."""
    moved = 0
    with conn.transaction():
        for fk in declared_foreign_keys():
            if fk.table not in APPLICATION_TABLES:
                continue
            row = conn.execute(
                sql.SQL(
                    "WITH moved AS (DELETE FROM {table} c WHERE {where} RETURNING c.*) "
                    "INSERT INTO quarantine (run_id, position, legacy_id, raw, reasons) "
                    "SELECT %s, %s::int + row_number() OVER () - 1, to_jsonb(m) ->> 'legacy_id', "
                    "json_build_object('table', %s::text, 'row', row_to_json(m))::text, "
                    "ARRAY['orphan: ' || %s::text || ' = ' || (to_jsonb(m) ->> %s::text) || ' has no row in ' || %s::text] "
                    "FROM moved m RETURNING 1"
                ).format(table=sql.Identifier(fk.table), where=_orphans_where(fk)),
                (run_id, moved, fk.table, f"{fk.table}.{fk.column}", fk.column, fk.parent),
            ).fetchall()
            moved += len(row)
        if has_table(conn, "migration_deleted"):  # the audit's own move: not the application's delete
            conn.execute(
                "DELETE FROM migration_deleted d USING quarantine q WHERE q.run_id = %s "
                "AND q.raw::json ->> 'table' = 'tasks' AND d.task_id = (q.raw::json -> 'row' ->> 'id')::uuid",
                (run_id,),
            )
    return moved


def undo_fix(conn: psycopg.Connection, run_id: str) -> int:
    """Put the rows fix_orphans() moved back where they were, and forget them in quarantine."""
    with conn.transaction():
        kind = conn.execute("SELECT kind FROM migration_runs WHERE id::text = %s", (run_id,)).fetchone()
        if kind is None or kind[0] != "audit":
            raise InputError(f"no audit run {run_id} in this database")
        tables = conn.execute(
            "SELECT DISTINCT raw::json ->> 'table' FROM quarantine WHERE run_id = %s", (run_id,)
        ).fetchall()
        restored = 0
        for (table,) in tables:
            if table not in APPLICATION_TABLES:
                raise InputError(f"quarantine rows of run {run_id} name an unknown table {table!r}")
            restored += conn.execute(
                sql.SQL(
                    "INSERT INTO {t} SELECT (json_populate_record(NULL::{t}, raw::json -> 'row')).* "
                    "FROM quarantine WHERE run_id = %s AND raw::json ->> 'table' = %s"
                ).format(t=sql.Identifier(table)),
                (run_id, table),
            ).rowcount
        conn.execute("DELETE FROM quarantine WHERE run_id = %s", (run_id,))
        conn.execute("UPDATE migration_runs SET status = 'fix undone' WHERE id = %s", (run_id,))
    return restored


def run_checks(conn: psycopg.Connection, source: str | Path | None = None) -> list[Check]:
    checks = [
        *check_orphans(conn),
        *check_not_valid(conn),
        *check_required_nulls(conn),
        *check_duplicate_legacy(conn),
        *check_rows(conn),
    ]
    if source is not None:
        checks += check_source(conn, source)
    return checks


def snapshot(conn: psycopg.Connection) -> dict[str, Any]:
    """Row counts of every table and what is not valid: taken before and after a schema change."""
    counts = {}
    for name in table_columns(conn, bookkeeping=True):
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))).fetchone()
        counts[name] = int(row[0]) if row else 0
    not_valid, invalid = not_valid_objects(conn)
    return {"row_counts": counts, "not_valid": not_valid, "invalid_indexes": invalid}
