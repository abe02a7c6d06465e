"""Load: stream the source through map -> validate -> transform -> render, and COPY each chunk
together with its quarantine rows and its checkpoint in one transaction.

The main thread parses and transforms while writer threads (one connection each) COPY, so Python
and PostgreSQL work at the same time. A chunk is all or nothing: after a kill -9 the next run skips
the chunks whose checkpoint exists and loads the rest, so nothing is lost or doubled.

Foreign keys are checked once per chunk rather than once per row where that is provably the same
guarantee (tasks/foreign_keys.py).

Two ways in. When no other run has written rows of this legacy source, a chunk is a plain COPY into
`tasks` (nothing can collide). Otherwise it is COPY into a staging table, `INSERT … ON CONFLICT DO
NOTHING`, and a content comparison of the rows that were already there: identical ones are
`already_present`, different ones go to quarantine (the stored row is left alone).
"""

from __future__ import annotations

import queue
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from psycopg import errors as pgerrors

from tasks import foreign_keys
from tasks.checksum import hex_sql, row_line_sql
from tasks.db import connect, is_transient, retrying
from tasks.mapping import split_records
from tasks.runs import ensure_users
from tasks.source import SourceInfo, iter_chunks
from tasks.transform import (
    FileState,
    QuarantineEntry,
    Rendered,
    Rows,
    TransformContext,
    TransformedChunk,
    raw_json,
    render,
    transform_chunk,
    user_key,
)

TASK_COLUMNS = (
    "id, user_id, legacy_source, legacy_key, legacy_id, title, notes, status, created_at, "
    "updated_at, priority, tags, legacy_extra, migration_run_id"
)
SAMPLE_LIMIT = 1000


def prepared_chunks(info: SourceInfo, ctx: TransformContext, chunk_size: int) -> Iterator[TransformedChunk]:
    """The source, chunk by chunk, mapped, converted, validated and transformed (pure apart from
    reading the file)."""
    state = FileState.of(info)
    mapping = ctx.mapping
    for chunk in iter_chunks(info, mapping, chunk_size):
        yield transform_chunk(chunk, split_records(chunk.records, chunk.first, mapping), ctx, state)


@dataclass
class ChunkResult:
    chunk_no: int
    records: int
    migrated: int
    already_present: int
    duplicates: int
    quarantine: list[QuarantineEntry]
    checksum: int
    keys_checked_per_chunk: bool = False

    @property
    def quarantined(self) -> int:
        return len(self.quarantine)


@dataclass
class LoadSummary:
    """What this process did; the run's totals are read back from its checkpoints."""

    chunks_written: int = 0
    chunks_skipped: int = 0
    records: int = 0
    migrated: int = 0
    already_present: int = 0
    duplicates: int = 0
    quarantined: int = 0
    checksum: int = 0
    keys_seen: set[str] = field(default_factory=set)
    naive_timestamps: int = 0
    rules: Counter[str] = field(default_factory=Counter)  # every chunk's, skipped ones included
    defaults: Counter[str] = field(default_factory=Counter)
    kept: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    sample: list[QuarantineEntry] = field(default_factory=list)
    # chunks whose foreign keys were checked once for the chunk (tasks/foreign_keys.py)
    keys_checked_per_chunk: int = 0

    def add(self, result: ChunkResult) -> None:
        self.chunks_written += 1
        self.keys_checked_per_chunk += result.keys_checked_per_chunk
        self.records += result.records
        self.migrated += result.migrated
        self.already_present += result.already_present
        self.duplicates += result.duplicates
        self.quarantined += result.quarantined
        self.checksum += result.checksum
        for entry in result.quarantine:
            self.reasons.update(reason_group(r) for r in entry.reasons)
            if len(self.sample) < SAMPLE_LIMIT:
                self.sample.append(entry)


def reason_group(reason: str) -> str:
    """The stable part of a reason, for 'most common reasons' (details follow in parentheses)."""
    return reason.split(" (", 1)[0]


@dataclass
class ChunkJob:
    chunk: TransformedChunk
    rendered: Rendered
    user_ids: list[str]  # the distinct users the chunk's rows reference


ProgressFn = Callable[[int, int], None]  # (records done, records total)


def load(
    url: str | None,
    info: SourceInfo,
    ctx: TransformContext,
    *,
    run_id: str,
    chunk_size: int,
    expect_conflicts: bool = False,
    workers: int = 2,
    on_progress: ProgressFn | None = None,
) -> LoadSummary:
    """Run the whole source through the pipeline; url=None is a dry run (nothing is written).
    Chunks already committed for this run are read from the database here, on every call, so a
    resumed run or a retried task skips exactly what is there."""
    committed = frozenset() if url is None else committed_chunks(url, run_id)
    summary = LoadSummary()
    done = 0
    users = _UserCache(url, run_id, ctx.default_owner)
    writer = None if url is None else ChunkWriter(url, run_id, workers, expect_conflicts)

    def collect(results: list[ChunkResult]) -> None:
        nonlocal done
        for result in results:
            summary.add(result)
            done += result.records
        if on_progress:
            on_progress(done, info.records)

    with prompt_handoffs(writer is not None):
        try:
            for chunk in prepared_chunks(info, ctx, chunk_size):
                summary.keys_seen |= chunk.keys_seen
                summary.naive_timestamps += chunk.naive_timestamps
                summary.rules.update(chunk.rules)
                summary.defaults.update(chunk.defaults)
                summary.kept.update(chunk.kept)
                if chunk.chunk_no in committed:
                    summary.chunks_skipped += 1
                    done += chunk.records
                else:
                    owners = set(chunk.rows.owners)
                    user_ids = users.ids(owners)
                    rendered = render(chunk.rows, ctx.source_name, user_ids, run_id)
                    if writer is None:
                        summary.add(_dry_result(chunk, rendered))
                        done += chunk.records
                    else:
                        writer.submit(ChunkJob(chunk, rendered, [user_ids[o] for o in owners]))
                collect([] if writer is None else writer.drain())
            collect([] if writer is None else writer.close())
        finally:
            if writer is not None:
                writer.abort()
            users.close()
    return summary


@contextmanager
def prompt_handoffs(enabled: bool = True, interval: float = 0.0005) -> Iterator[None]:
    """A short GIL switch interval while loading. A writer thread needs the GIL only for a moment
    per 128 kB it hands to libpq, but with the default 5 ms interval it waits that long each time
    behind the main thread's transforms, and PostgreSQL idles: loading 1M records took 8.6 s with
    the default and 7.5 s with 0.5 ms, load() timed alone on two cores."""
    old = sys.getswitchinterval()
    if enabled:
        sys.setswitchinterval(min(old, interval))
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def committed_chunks(url: str, run_id: str) -> frozenset[int]:
    with connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT chunk_no FROM migration_checkpoints WHERE run_id = %s", (run_id,)
        ).fetchall()
    return frozenset(r[0] for r in rows)


def _dry_result(chunk: TransformedChunk, rendered: Rendered) -> ChunkResult:
    return ChunkResult(
        chunk.chunk_no,
        chunk.records,
        rendered.count,
        0,
        chunk.duplicates,
        chunk.quarantine,
        rendered.checksum,
    )


class _UserCache:
    """Owner email -> user id, created on first need (in a dry run: the id it would get)."""

    def __init__(self, url: str | None, run_id: str, default_email: str) -> None:
        self.url, self.run_id, self.default_email = url, run_id, default_email
        self.known: dict[str, str] = {}
        self.conn: psycopg.Connection | None = None

    def ids(self, emails: set[str]) -> dict[str, str]:
        missing = emails - self.known.keys()
        if missing:
            if self.url is None:
                self.known.update({e: user_key(e) for e in missing})
            else:
                if self.conn is None:
                    self.conn = connect(self.url, autocommit=True)
                conn = self.conn
                self.known.update(
                    retrying(
                        lambda: ensure_users(conn, missing, self.run_id, self.default_email),
                        what="create users",
                    )
                )
        return self.known

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


class ChunkWriter:
    """Writer threads, each with its own connection, committing one chunk per transaction."""

    def __init__(self, url: str, run_id: str, workers: int, expect_conflicts: bool) -> None:
        self.url, self.run_id = url, run_id
        self.conflicts = expect_conflicts
        self.jobs: queue.Queue[ChunkJob | None] = queue.Queue(maxsize=1)
        self.results: queue.Queue[ChunkResult] = queue.Queue()
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._work, daemon=True, name=f"copy-{i}") for i in range(workers)
        ]
        for t in self.threads:
            t.start()

    def submit(self, job: ChunkJob) -> None:
        while True:
            self._raise_if_failed()
            try:
                self.jobs.put(job, timeout=0.2)
                return
            except queue.Full:
                continue

    def drain(self) -> list[ChunkResult]:
        self._raise_if_failed()
        out = []
        while True:
            try:
                out.append(self.results.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> list[ChunkResult]:
        for _ in self.threads:
            self.submit_sentinel()
        for t in self.threads:
            t.join()
        self._raise_if_failed()
        return self.drain()

    def submit_sentinel(self) -> None:
        while any(t.is_alive() for t in self.threads):
            try:
                self.jobs.put(None, timeout=0.2)
                return
            except queue.Full:
                continue

    def abort(self) -> None:
        self.stop.set()

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def _work(self) -> None:
        conn: psycopg.Connection | None = None
        batch = False  # whether this connection may check foreign keys per chunk
        try:
            while not self.stop.is_set():
                try:
                    job = self.jobs.get(timeout=0.2)
                except queue.Empty:
                    continue
                if job is None:
                    return
                attempts = 0
                while True:
                    try:
                        if conn is None or conn.closed or conn.broken:
                            conn = connect(self.url, autocommit=True)
                            batch = foreign_keys.may_batch(conn)
                        self.results.put(self._write(conn, job, batch))
                        break
                    except Exception as exc:
                        attempts += 1
                        if not is_transient(exc) or attempts >= 5:
                            raise
                        if conn is not None and not conn.broken:
                            conn.close()
                        conn = None
                        self.stop.wait(min(8.0, 0.25 * 2**attempts))
        except BaseException as exc:  # handed to the main thread, which raises it
            self.error = exc
            self.stop.set()
        finally:
            if conn is not None:
                conn.close()

    def _write(self, conn: psycopg.Connection, job: ChunkJob, batch: bool) -> ChunkResult:
        if not self.conflicts:
            try:
                return self._transaction(conn, job, conflicts=False, batch=batch)
            except pgerrors.UniqueViolation:
                self.conflicts = True  # another run's rows are here after all: compare from now on
        return self._transaction(conn, job, conflicts=True, batch=batch)

    def _transaction(
        self, conn: psycopg.Connection, job: ChunkJob, *, conflicts: bool, batch: bool
    ) -> ChunkResult:
        chunk, rendered = job.chunk, job.rendered
        quarantine = list(chunk.quarantine)
        migrated, present, checksum = rendered.count, 0, rendered.checksum
        with conn.transaction():
            per_chunk = batch and foreign_keys.check_per_chunk(conn, job.user_ids, self.run_id)
            if conflicts:
                inserted, present_ids, changed = _insert_staged(conn, chunk.rows, rendered)
                migrated = len(inserted)
                present = len(present_ids)
                checksum = sum(
                    c for tid, c in zip(rendered.task_ids, rendered.checksums, strict=True) if tid in inserted
                )
                quarantine.extend(_changed_entries(chunk.rows, rendered, changed))
                quarantine.sort(key=lambda q: q.position)
            elif rendered.count:
                with conn.cursor().copy(f"COPY tasks ({TASK_COLUMNS}) FROM STDIN (FORMAT csv)") as copy:
                    copy.write(rendered.csv)
            if quarantine:
                with conn.cursor().copy(
                    "COPY quarantine (run_id, position, legacy_id, raw, reasons, location) FROM STDIN"
                ) as copy:
                    for q in quarantine:
                        copy.write_row((self.run_id, q.position, q.legacy_id, q.raw, q.reasons, q.location))
            conn.execute(
                "INSERT INTO migration_checkpoints (run_id, chunk_no, first_position, last_position, records, "
                "migrated, already_present, duplicates, quarantined, checksum) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    self.run_id,
                    chunk.chunk_no,
                    chunk.first_position,
                    chunk.first_position + chunk.records - 1,
                    chunk.records,
                    migrated,
                    present,
                    chunk.duplicates,
                    len(quarantine),
                    checksum,
                ),
            )
        return ChunkResult(
            chunk.chunk_no,
            chunk.records,
            migrated,
            present,
            chunk.duplicates,
            quarantine,
            checksum,
            per_chunk,
        )


_STAGE = "CREATE TEMP TABLE IF NOT EXISTS stage_tasks (LIKE tasks INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"


def _insert_staged(
    conn: psycopg.Connection, rows: Rows, rendered: Rendered
) -> tuple[set[str], set[str], dict[str, str]]:
    """COPY into a staging table, insert what is new; returns (inserted ids, identical ids,
    {changed id: the run that wrote the stored row}). A record without its own created_at is
    compared without timestamps: the stand-in (a run's start time) is not the record's content."""
    conn.execute(_STAGE)
    with conn.cursor().copy(f"COPY stage_tasks ({TASK_COLUMNS}) FROM STDIN (FORMAT csv)") as copy:
        copy.write(rendered.csv)
    inserted = {
        r[0]
        for r in conn.execute(
            f"INSERT INTO tasks ({TASK_COLUMNS}) SELECT {TASK_COLUMNS} FROM stage_tasks "
            f"ON CONFLICT DO NOTHING RETURNING {hex_sql('id')}"
        ).fetchall()
    }
    identical: set[str] = set()
    changed: dict[str, str] = {}
    if len(inserted) < rendered.count:
        untimed = [tid for tid, d in zip(rendered.task_ids, rows.defaulted_ts, strict=True) if d]
        same = (
            f"CASE WHEN {hex_sql('s.id')} = ANY(%(untimed)s) "
            f"THEN {row_line_sql('s', timestamps=False)} = {row_line_sql('t', timestamps=False)} "
            f"ELSE {row_line_sql('s')} = {row_line_sql('t')} END"
        )
        stored = conn.execute(
            f"SELECT {hex_sql('s.id')}, {same}, coalesce(t.migration_run_id::text, 'the application') "
            "FROM stage_tasks s JOIN tasks t ON t.id = s.id OR (t.legacy_source = s.legacy_source "
            "AND (t.legacy_key = s.legacy_key OR t.legacy_id = s.legacy_id)) "
            f"WHERE {hex_sql('s.id')} <> ALL(%(inserted)s)",
            {"untimed": untimed, "inserted": list(inserted)},
        ).fetchall()
        for tid, same_content, writer in stored:
            if same_content:
                identical.add(tid)
            else:
                changed[tid] = writer
    return inserted, identical, changed


def _changed_entries(rows: Rows, rendered: Rendered, changed: dict[str, str]) -> list[QuarantineEntry]:
    out = []
    for tid, position, key, raw in zip(
        rendered.task_ids, rows.positions, rows.legacy_keys, rows.raw, strict=True
    ):
        if tid in changed:
            reason = (
                f"already in tasks with different content (row {tid}, written by {changed[tid]}); kept here"
            )
            out.append(QuarantineEntry(position, key[:100], raw_json(raw), [reason]))
    return out
