"""Load: stream the files through map -> validate -> transform -> render, and COPY each chunk
together with its quarantine rows, its checkpoint and its files' results in one transaction.

The main thread parses and transforms while writer threads (one connection each) COPY, so Python
and PostgreSQL work at the same time. A chunk is all or nothing: after a kill -9 the next run skips
the chunks whose checkpoint exists and loads the rest, so nothing is lost or doubled. The records
of many small files share chunks (one file's records may span two), and each chunk writes one
`migration_files` row per file it holds: the file's checkpoint, with its counts.

Foreign keys are checked once per chunk rather than once per row where that is provably the same
guarantee (tasks/foreign_keys.py).

Two ways in. When no other run has written rows of a chunk's legacy sources, the chunk is a plain
COPY into `tasks` (nothing can collide). Otherwise it is a re-sync (tasks/resync.py): staged,
compared, and each row inserted, updated, left unchanged, or a conflict.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import errors as pgerrors

from tasks import foreign_keys, interpreter, resync
from tasks.checksum import COPY_COLUMNS
from tasks.conversions import normalize_email
from tasks.db import connect, retrying
from tasks.files import FileStream, RunFile
from tasks.inference import Holdings
from tasks.mapping import split_records
from tasks.runs import ensure_users
from tasks.source import ReadOptions, SourceInfo
from tasks.sources import FileSource
from tasks.transform import (
    FileContext,
    FileState,
    QuarantineEntry,
    Rendered,
    TransformContext,
    TransformedChunk,
    render,
    transform_chunk,
    user_key,
)

TASK_COLUMNS = COPY_COLUMNS
SAMPLE_LIMIT = 1000
COUNTS = ("records", "inserted", "updated", "unchanged", "conflicts", "duplicates", "quarantined")


def run_files(source: SourceInfo | Sequence[RunFile], ctx: TransformContext) -> Sequence[RunFile]:
    """The files of a run (as given: the stream updates a list in place); a single pre-checked file
    is the one file of a run named ctx.source_name."""
    if isinstance(source, SourceInfo):
        return [RunFile.of(0, FileSource(source.path, ctx.source_name, None), source, keep=True)]
    return source


def prepared_chunks(
    source: SourceInfo | FileStream, ctx: TransformContext, chunk_size: int
) -> Iterator[TransformedChunk]:
    """The file, or the run's stream of files, chunk by chunk, mapped, converted, validated and
    transformed (pure apart from reading them). A file's context lives while its records pass
    (files come one after another)."""
    stream = source if isinstance(source, FileStream) else FileStream(run_files(source, ctx), ctx.mapping, source.options)
    contexts: dict[int, FileContext] = {}
    mapping = ctx.mapping
    for chunk in stream.chunks(chunk_size):
        numbers = {s.file for s in chunk.segments}
        first = min(numbers)
        for no in [k for k in contexts if k < first]:
            del contexts[no]
        for no in numbers - contexts.keys():
            f = stream.files[no]
            owner = normalize_email(f.source.owner or ctx.default_owner)
            contexts[no] = FileContext(no, f.source.legacy_source, owner, FileState.of(stream.take(no)))
        here = {no: contexts[no] for no in numbers}
        yield transform_chunk(chunk, split_records(chunk.records, chunk.first, mapping), ctx, here)


@dataclass
class ChunkResult:
    chunk_no: int
    records: int
    inserted: int
    unchanged: int
    duplicates: int
    quarantine: list[QuarantineEntry]
    checksum: int
    keys_checked_per_chunk: bool = False
    updated: int = 0
    conflicts: int = 0
    by_file: dict[int, Counter[str]] = field(default_factory=dict)  # file -> its counts in this chunk

    @property
    def quarantined(self) -> int:
        return len(self.quarantine) - self.conflicts


@dataclass
class LoadSummary:
    """What this process did; the run's totals are read back from its checkpoints."""

    chunks_written: int = 0
    chunks_skipped: int = 0
    records: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    conflicts: int = 0
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
    # the run's files as the stream left them: pre-checked, or refused with the reason
    files: list[RunFile] = field(default_factory=list)
    held: Holdings = field(default_factory=Holdings)  # what the accepted files hold, summed

    def add(self, result: ChunkResult) -> None:
        self.chunks_written += 1
        self.keys_checked_per_chunk += result.keys_checked_per_chunk
        self.records += result.records
        self.inserted += result.inserted
        self.updated += result.updated
        self.unchanged += result.unchanged
        self.conflicts += result.conflicts
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
    staged: bool  # some of its legacy sources have rows of other runs: a re-sync


ProgressFn = Callable[[int, int], None]  # (records done, records total)


def load(
    url: str | None,
    source: SourceInfo | Sequence[RunFile],
    ctx: TransformContext,
    *,
    run_id: str,
    chunk_size: int,
    options: ReadOptions | None = None,
    resync_sources: frozenset[str] = frozenset(),
    workers: int = 2,
    on_progress: ProgressFn | None = None,
) -> LoadSummary:
    """Run the files through the pipeline, each pending one pre-checked (read with `options`) as
    its turn comes; url=None is a dry run (nothing is written). Chunks already committed for this
    run are read from the database here, on every call, so a resumed run or a retried task skips
    exactly what is there. resync_sources: legacy sources that have rows of other runs (their
    chunks are compared, tasks/resync.py). The summary's files say which files were refused."""
    stream = FileStream(run_files(source, ctx), ctx.mapping, options or ReadOptions())
    files = stream.files
    committed = frozenset() if url is None else committed_chunks(url, run_id)
    summary = LoadSummary(files=files, held=stream.held)
    done = 0
    users = _UserCache(url, run_id, ctx.default_owner)
    writer = None if url is None else ChunkWriter(url, run_id, workers, files)

    def collect(results: list[ChunkResult]) -> None:
        nonlocal done
        for result in results:
            summary.add(result)
            done += result.records
        if on_progress:
            on_progress(done, max(done, stream.expected_records()))

    try:
        with interpreter.settled():  # fewer collections, quicker GIL hand-overs to the writers (tasks/interpreter.py)
            for chunk in prepared_chunks(stream, ctx, chunk_size):
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
                    staged = bool(resync_sources) and not resync_sources.isdisjoint(
                        files[no].source.legacy_source for no in chunk.files
                    )
                    rendered = render(chunk.rows, ctx.source_name, user_ids, run_id, each=staged)
                    if writer is None:
                        summary.add(_dry_result(chunk, rendered))
                        done += chunk.records
                    else:
                        writer.submit(ChunkJob(chunk, rendered, [user_ids[o] for o in owners], staged))
                collect([] if writer is None else writer.drain())
            collect([] if writer is None else writer.close())
    finally:
        if writer is not None:
            writer.abort()
        users.close()
    return summary


def committed_chunks(url: str, run_id: str) -> frozenset[int]:
    def read() -> frozenset[int]:
        with connect(url, autocommit=True, step="phase1:load") as conn:
            rows = conn.execute(
                "SELECT chunk_no FROM migration_checkpoints WHERE run_id = %s", (run_id,)
            ).fetchall()
        return frozenset(r[0] for r in rows)

    return retrying(read, what="read the committed chunks")


def _committed(conn: psycopg.Connection, run_id: str, job: ChunkJob) -> ChunkResult | None:
    """The chunk's result as its checkpoint recorded it, if an earlier attempt committed it."""
    row = conn.execute(
        "SELECT migrated, already_present, duplicates, checksum, updated FROM migration_checkpoints "
        "WHERE run_id = %s AND chunk_no = %s",
        (run_id, job.chunk.chunk_no),
    ).fetchone()
    if row is None:
        return None
    chunk = job.chunk
    # The run's totals are read back from the checkpoints; this result only says the chunk is in
    # (its conflicts' quarantine rows are in the database, not rebuilt here).
    return ChunkResult(
        chunk.chunk_no, chunk.records, row[0], row[1], row[2], list(chunk.quarantine), int(row[3]), updated=row[4]
    )


def _dry_result(chunk: TransformedChunk, rendered: Rendered) -> ChunkResult:
    result = ChunkResult(
        chunk.chunk_no, chunk.records, rendered.count, 0, chunk.duplicates, chunk.quarantine, rendered.checksum
    )
    result.by_file = _by_file(chunk, set(rendered.task_ids), rendered, {})
    return result


def _by_file(
    chunk: TransformedChunk, inserted: set[str], rendered: Rendered, other: dict[str, str]
) -> dict[int, Counter[str]]:
    """Each file's counts in a chunk: records, and what became of them (other: task id -> its lot,
    "updated", "unchanged" or "conflicts", for the rows not inserted)."""
    out: dict[int, Counter[str]] = {no: Counter(records=n) for no, n in chunk.files.items()}
    for tid, no in zip(rendered.task_ids, chunk.rows.files or [min(chunk.files)] * len(rendered.task_ids), strict=True):
        out[no]["inserted" if tid in inserted else other.get(tid, "unchanged")] += 1
    for no, n in chunk.duplicates_by_file.items():
        out[no]["duplicates"] += n
    for q in chunk.quarantine:
        out[q.file]["quarantined"] += 1
    return out


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
                self.known.update(retrying(lambda: self._ensure(missing), what="create users"))
        return self.known

    def _ensure(self, emails: set[str]) -> dict[str, str]:
        assert self.url is not None
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.close()
            self.conn = connect(self.url, autocommit=True, step="phase1:load")
        return ensure_users(self.conn, emails, self.run_id, self.default_email)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None


class _Link:
    """A writer thread's connection, opened when first needed and again after it was lost."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: psycopg.Connection | None = None
        self.batch = False  # whether this connection may check foreign keys per chunk

    def get(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.close()
            self.conn = connect(self.url, autocommit=True, step="phase1:load")
            self.batch = foreign_keys.may_batch(self.conn)
        return self.conn

    def drop_if_broken(self) -> None:
        if self.conn is not None and (self.conn.closed or self.conn.broken):
            self.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None


class ChunkWriter:
    """Writer threads, each with its own connection, committing one chunk per transaction."""

    def __init__(self, url: str, run_id: str, workers: int, files: Sequence[RunFile]) -> None:
        self.url, self.run_id, self.files = url, run_id, files
        self.jobs: queue.Queue[ChunkJob | None] = queue.Queue()
        # A chunk a writer at most: the next one waits, built, in the main thread. A chunk queued
        # besides was one more in memory (13 MB at 10,000 records) for no throughput: when a
        # writer is free, the main thread's chunk is handed over at once.
        self.slots = threading.BoundedSemaphore(workers)
        self.results: queue.Queue[ChunkResult] = queue.Queue()
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._work, daemon=True, name=f"copy-{i}") for i in range(workers)
        ]
        for t in self.threads:
            t.start()

    def submit(self, job: ChunkJob) -> None:
        while not self.slots.acquire(timeout=0.2):
            self._raise_if_failed()
        self._raise_if_failed()
        self.jobs.put(job)

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
            self.jobs.put(None)
        for t in self.threads:
            t.join()
        self._raise_if_failed()
        return self.drain()

    def abort(self, grace: float = 5.0) -> None:
        """Take no new chunk; give the ones being written up to `grace` seconds to commit (an
        interrupted run exits promptly, and a chunk still unfinished then rolls back whole)."""
        self.stop.set()
        deadline = time.monotonic() + grace
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def _work(self) -> None:
        link = _Link(self.url)
        try:
            while not self.stop.is_set():
                try:
                    job = self.jobs.get(timeout=0.2)
                except queue.Empty:
                    continue
                if job is None:
                    return
                self.results.put(self._commit(link, job))
                self.slots.release()
        except BaseException as exc:  # handed to the main thread, which raises it
            self.error = exc
            self.stop.set()
        finally:
            link.close()

    def _commit(self, link: _Link, job: ChunkJob) -> ChunkResult:
        """Write one chunk as a unit of the retry policy (tasks/retry.py), on a fresh connection
        after a lost one."""
        retried = False

        def attempt() -> ChunkResult:
            conn = link.get()
            # a retry after a lost COMMIT acknowledgement: the chunk may be in already
            done = _committed(conn, self.run_id, job) if retried else None
            return done or self._write(conn, job, link.batch)

        def again() -> None:
            nonlocal retried
            retried = True
            link.drop_if_broken()

        return retrying(attempt, what=f"chunk {job.chunk.chunk_no}", before_retry=again)

    def _write(self, conn: psycopg.Connection, job: ChunkJob, batch: bool) -> ChunkResult:
        if not job.staged:
            try:
                return self._transaction(conn, job, batch=batch)
            except pgerrors.UniqueViolation:
                job.staged = True  # another run's rows are here after all: compare
        return self._transaction(conn, job, batch=batch)

    def _transaction(self, conn: psycopg.Connection, job: ChunkJob, *, batch: bool) -> ChunkResult:
        chunk, rendered = job.chunk, job.rendered
        quarantine = list(chunk.quarantine)
        inserted_ids, lots, checksum = set(rendered.task_ids), {}, rendered.checksum
        with conn.transaction():
            # A staged chunk (a re-sync) also updates rows and writes their history, whose triggers the
            # replica role would skip too (an application's audit trigger): it keeps them all firing.
            per_chunk = batch and not job.staged and foreign_keys.check_per_chunk(conn, job.user_ids, self.run_id)
            if job.staged:
                found = resync.staged(conn, self.run_id, chunk.rows, rendered, self._whole(chunk))
                inserted_ids = found.inserted
                lots = {
                    **dict.fromkeys(found.updated, "updated"),
                    **dict.fromkeys(found.unchanged, "unchanged"),
                    **dict.fromkeys(found.conflicts, "conflicts"),
                }
                checksum = sum(
                    c for tid, c in zip(rendered.task_ids, rendered.checksums, strict=True) if tid in inserted_ids
                )
                quarantine.extend(resync.conflict_entries(chunk, rendered, found))
                quarantine.sort(key=lambda q: q.position)
            elif rendered.count:
                with conn.cursor().copy(f"COPY tasks ({TASK_COLUMNS}) FROM STDIN (FORMAT csv)") as copy:
                    copy.write(rendered.csv)
            if quarantine:
                with conn.cursor().copy(
                    "COPY quarantine (run_id, position, legacy_id, raw, reasons, location, legacy_source) FROM STDIN"
                ) as copy:
                    for q in quarantine:
                        copy.write_row(
                            (self.run_id, q.position, q.legacy_id, q.raw, q.reasons, q.location, q.legacy_source)
                        )
            by_file = _by_file(chunk, inserted_ids, rendered, lots)
            counted = Counter(lots.values())
            conn.execute(
                "INSERT INTO migration_checkpoints (run_id, chunk_no, first_position, last_position, records, "
                "migrated, already_present, duplicates, quarantined, checksum, updated, conflicts, seen) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %b::uuid[])",
                (
                    self.run_id,
                    chunk.chunk_no,
                    chunk.first_position,
                    chunk.first_position + chunk.records - 1,
                    chunk.records,
                    len(inserted_ids),
                    counted["unchanged"],
                    chunk.duplicates,
                    len(quarantine) - counted["conflicts"],
                    checksum,
                    counted["updated"],
                    counted["conflicts"],
                    # a compared chunk's rows, whatever became of them: the others of its sources disappeared
                    rendered.task_ids if job.staged else None,
                ),
            )
            self._file_parts(conn, chunk.chunk_no, by_file)
        result = ChunkResult(
            chunk.chunk_no,
            chunk.records,
            len(inserted_ids),
            counted["unchanged"],
            chunk.duplicates,
            quarantine,
            checksum,
            per_chunk,
            counted["updated"],
            counted["conflicts"],
        )
        result.by_file = by_file
        return result

    def _whole(self, chunk: TransformedChunk) -> frozenset[str]:
        """The legacy sources whose every record is in this chunk (the pre-check counted them)."""
        return frozenset(self.files[no].source.legacy_source for no, n in chunk.files.items() if n == self.files[no].records)

    def _file_parts(self, conn: psycopg.Connection, chunk_no: int, by_file: dict[int, Counter[str]]) -> None:
        """Each file's share of the chunk: its checkpoint, committed with the chunk."""
        with conn.cursor().copy(
            "COPY migration_files (run_id, file_no, part, legacy_source, path, owner, sha256, status, "
            f"{', '.join(COUNTS)}) FROM STDIN"
        ) as copy:
            for no, counts in sorted(by_file.items()):
                f = self.files[no]
                copy.write_row(
                    (self.run_id, no, chunk_no, f.source.legacy_source, f.source.path, f.source.owner, f.digest,
                     "loaded", *(counts[c] for c in COUNTS))
                )  # fmt: skip
