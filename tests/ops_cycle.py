"""The one cycle every schema-change operation passes through (as pgroll's op_common_test.go does):

1. seed the previous version (a table, rows, and its version schema `public_9000` of views);
2. start; the previous and the new version write and read at once, each through its own search
   path, and each sees the other's writes in its own shape (hook: after_start);
3. backfill, both versions writing throughout: no write fails and no row is missed;
4. complete: the new version works, the previous version's schema is gone (hook: after_complete);
5. separately: start -> rollback -> catalog and data exactly as before (hook: after_rollback) ->
   start -> complete.

An operation's own test (tests/test_ops.py) states only what is special about it: its table's
columns, what each version writes and reads, and its hooks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, pool

from migrations.ops import OnlineOperation
from migrations.ops.context import Context
from migrations.ops.raw_sql import RawSQL
from migrations.ops.revision import run
from migrations.ops.versions import search_path
from tasks.backfill import Settings, run_backfill, spec_of
from tasks.db import sqlalchemy_url

OLD, NEW = "9000", "9001"

SETUP = """
CREATE TABLE owners (id bigint PRIMARY KEY);
INSERT INTO owners VALUES (1);
CREATE TABLE items (id bigint PRIMARY KEY, name text, done boolean NOT NULL DEFAULT false,
                    owner bigint DEFAULT 1);
INSERT INTO items SELECT g, 'item ' || g, g % 2 = 0, CASE WHEN g % 3 = 0 THEN NULL ELSE 1 END
  FROM generate_series(1, 500) g;
"""


@dataclass(frozen=True)
class Version:
    """How one application version writes a row and reads a value back (`%(id)s` is the row's id)."""

    insert: str = "INSERT INTO items (id, name) VALUES (%(id)s, 'w' || %(id)s)"
    read: str = "SELECT name FROM items WHERE id = %(id)s"


@dataclass
class Case:
    ops: list[OnlineOperation]
    old: Version = field(default_factory=Version)
    new: Version = field(default_factory=Version)
    new_sees_old: Callable[[int], Any] = lambda i: f"w{i}"  # what new.read gives for a row old wrote
    old_sees_new: Callable[[int], Any] = lambda i: f"w{i}"
    # An update each version makes to the other's rows, and what the other then reads of them.
    old_update: str | None = None
    new_sees_old_update: Callable[[int], Any] | None = None
    new_update: str | None = None
    old_sees_new_update: Callable[[int], Any] | None = None
    setup: str = ""  # more SQL on top of SETUP
    after_start: Callable[[str], None] | None = None
    after_complete: Callable[[str], None] | None = None
    after_rollback: Callable[[str], None] | None = None


def phase(url: str, revision: str, ops: list[OnlineOperation], name: str) -> None:
    """One phase of a revision of `ops`, run as the flow runs complete and rollback."""
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("SET lock_timeout = '2s'")
            context = MigrationContext.configure(conn, opts={"autocommit": True})
            with Operations.context(context) as operations:
                run(Context(operations, revision, str(int(revision) - 1), name), ops)
    finally:
        engine.dispose()


def as_version(url: str, revision: str) -> psycopg.Connection:
    return psycopg.connect(
        url, autocommit=True, options=f"-csearch_path={search_path(revision).replace(' ', '')}"
    )


def one(url: str, query: str, *params: Any, revision: str | None = None) -> Any:
    with as_version(url, revision) if revision else psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
        return row[0] if row else None


def first(row: tuple | None) -> Any:
    return row[0] if row else None


def catalog(url: str) -> list[tuple]:
    """Everything a schema change can leave behind, outside PostgreSQL's own schemas."""
    user = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'"
    queries = [
        f"SELECT 'schema', n.nspname, obj_description(n.oid, 'pg_namespace') FROM pg_namespace n WHERE {user}",
        f"SELECT 'relation', n.nspname || '.' || c.relname, c.relkind::text FROM pg_class c "
        f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {user}",
        f"SELECT 'column', c.relname || '.' || a.attname, format_type(a.atttypid, a.atttypmod) || a.attnotnull "
        f"|| coalesce(pg_get_expr(d.adbin, d.adrelid), '') FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        f"JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid "
        f"AND d.adnum = a.attnum WHERE {user} AND a.attnum > 0 AND NOT a.attisdropped",
        "SELECT 'constraint', conname, pg_get_constraintdef(oid) || convalidated FROM pg_constraint "
        "WHERE connamespace = 'public'::regnamespace",
        "SELECT 'index', indexrelid::regclass::text, pg_get_indexdef(indexrelid) || indisvalid FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = 'public'::regnamespace",
        "SELECT 'trigger', tgname, tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal",
        f"SELECT 'function', n.nspname || '.' || p.proname, '' FROM pg_proc p "
        f"JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {user}",
        f"SELECT 'view', n.nspname || '.' || c.relname, pg_get_viewdef(c.oid) FROM pg_class c "
        f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'v' AND {user}",
    ]
    with psycopg.connect(url) as conn:
        return sorted(tuple(map(str, r)) for q in queries for r in conn.execute(q).fetchall())


def data(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return {
            t: conn.execute(
                f"SELECT count(*) || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM \"{t}\" t"
            ).fetchone()[0]
            for t in tables
        }


class Writer(threading.Thread):
    """A version's application: inserts rows (ids from `first`) until stopped, reading each back."""

    def __init__(
        self, url: str, revision: str, version: Version, first: int, limit: int | None = None
    ) -> None:
        super().__init__(daemon=True)
        self.url, self.revision, self.version, self.next, self.limit = url, revision, version, first, limit
        self.written: list[int] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with as_version(self.url, self.revision) as conn:
            attempts = 0  # a limited writer stops after `limit` attempts, failed ones included
            while not self.stop.is_set() and (self.limit is None or attempts < self.limit):
                attempts += 1
                try:
                    conn.execute(self.version.insert, {"id": self.next})
                    conn.execute(self.version.read, {"id": self.next}).fetchone()
                    self.written.append(self.next)
                except psycopg.Error as exc:
                    self.errors.append(str(exc).splitlines()[0])
                self.next += 1


def both_write(url: str, case: Case, first: int, limit: int | None = None) -> tuple[Writer, Writer]:
    old = Writer(url, OLD, case.old, first, limit)
    new = Writer(url, NEW, case.new, first + 100_000, limit)
    old.start()
    new.start()
    return old, new


def seed(url: str, case: Case) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SETUP + case.setup)
    marker = [RawSQL("items", "SELECT 1", "SELECT 1")]  # the previous version: views, no change
    phase(url, OLD, marker, "start")
    phase(url, OLD, marker, "complete")


def cycle(url: str, case: Case) -> None:
    """The shared cycle (module docstring); raises AssertionError naming what broke."""
    seed(url, case)
    phase(url, NEW, case.ops, "start")
    if case.after_start:
        case.after_start(url)
    old, new = both_write(url, case, 10_000, limit=25)
    old.join()
    new.join()
    assert old.errors == [] and new.errors == [], (old.errors[:3], new.errors[:3])
    with as_version(url, NEW) as conn:  # the new version sees the previous one's rows in its shape
        seen = [first(conn.execute(case.new.read, {"id": i}).fetchone()) for i in old.written]
    assert seen == [case.new_sees_old(i) for i in old.written]
    with as_version(url, OLD) as conn:
        seen = [first(conn.execute(case.old.read, {"id": i}).fetchone()) for i in new.written]
    assert seen == [case.old_sees_new(i) for i in new.written]
    updates = ((case.old_update, OLD, new.written, NEW, case.new.read, case.new_sees_old_update),
               (case.new_update, NEW, old.written, OLD, case.old.read, case.old_sees_new_update))  # fmt: skip
    for update, writer, rows, reader, read, expected in updates:
        if update and expected:
            with as_version(url, writer) as conn:
                for i in rows:
                    conn.execute(update, {"id": i})
            with as_version(url, reader) as conn:
                assert [first(conn.execute(read, {"id": i}).fetchone()) for i in rows] == [
                    expected(i) for i in rows
                ]

    old, new = both_write(url, case, 20_000)  # the backfill runs under a steady insert load
    for b in (b for o in case.ops for b in o.backfills()):
        result = run_backfill(url, spec_of(b), Settings(batch_size=50))
        assert result.status == "done"
    deadline = time.monotonic() + 10  # both versions get to write, backfill or not
    while min(len(old.written), len(new.written)) < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    old.stop.set()
    new.stop.set()
    old.join()
    new.join()
    assert old.errors == [] and new.errors == [] and old.written and new.written, (
        old.errors[:3],
        new.errors[:3],
    )
    for b in (b for o in case.ops for b in o.backfills()):
        left = f'SELECT count(*) FROM "{b.table}" WHERE "{b.column}" IS NULL AND ({b.expression}) IS NOT NULL'
        assert one(url, left) == 0, b.name

    phase(url, NEW, case.ops, "complete")
    assert one(url, "SELECT to_regnamespace(%s) IS NULL", f"public_{OLD}"), "the old version's schema is gone"
    _, after = both_write(url, case, 50_000, limit=5)
    after.join()
    assert after.errors == [], after.errors[:3]
    if case.after_complete:
        case.after_complete(url)


def rollback_cycle(url: str, case: Case) -> None:
    """start -> rollback leaves catalog and data as they were -> start -> complete."""
    seed(url, case)
    before = catalog(url), data(url)
    phase(url, NEW, case.ops, "start")
    phase(url, NEW, case.ops, "rollback")
    assert (catalog(url), data(url)) == before
    if case.after_rollback:
        case.after_rollback(url)
    phase(url, NEW, case.ops, "start")
    for b in (b for o in case.ops for b in o.backfills()):
        run_backfill(url, spec_of(b))
    phase(url, NEW, case.ops, "complete")
