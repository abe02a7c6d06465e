"""Phase 1 → Phase 2: move the CLI's tasks.json files into PostgreSQL, losing nothing.

The story of a run:
1. find the files (one, a directory, a glob or a manifest) and pre-check each whole (well formed,
   sha256, where the records are, duplicate ids) before anything is written; a file that cannot be
   migrated is refused with its reason, and the others go on;
2. take a checkpoint branch `<db>-backup-<UTC time>` (unless told not to), then the migration lock,
   and bring the schema up to head (backfills included);
3. start a run, or resume the interrupted run of these same files;
4. stream the files chunk by chunk (small files share chunks): map fields, convert values,
   validate with pandera, transform, and COPY each chunk with its quarantine rows, its checkpoint
   and its files' results in one transaction; a file migrated before is re-synced (tasks/resync.py);
5. verify: every record is inserted, updated, unchanged, a conflict, a duplicate or quarantined,
   per file and in all, and the checksums computed from the files and from the database agree;
6. report: runs/<run_id>/report.json and report.md, and the same as Prefect artifacts.

`python -m flows.phase1 --help` for the command line; `inspect` shows how a file would be read;
`rollback RUN_ID` undoes a run. The database URL never travels as a flow parameter (Prefect stores
those): it comes from `database_secret` (a Prefect Secret block's name), DATABASE_URL, or the
embedded PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import signal
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from prefect.runtime import flow_run
from prefect.states import State

from flows import params as P
from flows import progress
from flows.checkpoint import take_checkpoint
from flows.outcome import closing_lines, interrupted, interruption, publish, user_error
from flows.retry import db_task
from flows.settings import resolve_database_url
from tasks import report as reports
from tasks import resync, schema
from tasks.db import MIGRATION_LOCK_KEY, RunLock, Session, mask_url, shard_lock_key
from tasks.errors import (
    FilesRefused,
    InputError,
    ReportNotWritten,
    UserFacingError,
    VerificationFailed,
    first_line,
)
from tasks.files import RunFile, precheck_files
from tasks.inference import describe
from tasks.inference import lines as inference_lines
from tasks.load import LoadSummary, load
from tasks.mapping import FieldMapping, read_owner_map
from tasks.rollback import rollback_run
from tasks.runs import (
    Run,
    closed_sources,
    file_results,
    finish,
    record_refused,
    record_sources,
    run_parameters,
    sources_with_rows_from_other_runs,
    start_or_resume,
    transform_context,
)
from tasks.source import ReadOptions, SourceInfo, precheck_once, quick_check
from tasks.sources import resolve, shard
from tasks.transform import TransformContext
from tasks.verify import Verification, find_mismatches, verify_run

KIND = "phase1"
DEFAULT_USER = "phase1-migration@example.com"
FILES_SHOWN = 1000  # rows of the per-file table in the Prefect artifact (the report has them all)


upgrade_schema = db_task(schema.upgrade, "upgrade-schema")
load_chunks = db_task(load, "load-chunks")
verify = db_task(verify_run, "verify-run")


@dataclass(frozen=True)
class Job:
    """The files of a run and everything that decides the rows they give."""

    files: list[RunFile]
    single: bool  # one file named by --source: a file that cannot be migrated fails the run
    mapping: FieldMapping
    options: ReadOptions
    owners: dict[str, str]
    source_name: str
    default_user: str
    chunk_size: int
    origin: str  # what named the files (the --source or --manifest given)

    def context(self, started: datetime) -> TransformContext:
        return transform_context(self.source_name, self.default_user, self.owners, started, self.mapping)

    @property
    def parameters(self) -> dict[str, Any]:
        return run_parameters(self.mapping, self.options, self.owners, self.default_user)

    @property
    def info(self) -> SourceInfo:
        """The pre-check of a run's one file."""
        assert self.single and self.files[0].info is not None, "a run of many files has no one pre-check"
        return self.files[0].info

    @property
    def accepted(self) -> list[RunFile]:
        return [f for f in self.files if f.accepted]

    @property
    def refused(self) -> list[RunFile]:
        return [f for f in self.files if not f.accepted]

    @property
    def records(self) -> int:
        return sum(f.records for f in self.accepted)

    @property
    def infos(self) -> list[SourceInfo]:
        return [f.info for f in self.accepted if f.info is not None]

    @property
    def sha256(self) -> str:
        """One file's sha256, or one over every accepted file's name and sha256 (what a resume matches)."""
        if self.single:
            return self.files[0].info.sha256 if self.files[0].info else ""
        digest = hashlib.sha256()
        for f in self.accepted:
            digest.update(f"{f.source.legacy_source}\0{f.info.sha256 if f.info else ''}\n".encode())
        return digest.hexdigest()

    def closing(self, closed: dict[str, datetime]) -> Job:
        """This job with the files whose sources cutover closed refused (a single file: the run is)."""
        if not closed:
            return self
        if self.single:
            when = next(iter(closed.values()))
            raise InputError(
                f"{self.files[0].source.path}: source {self.source_name} was closed at cutover on "
                f"{when:%Y-%m-%d %H:%M} UTC; nothing was written"
            )
        files = [
            replace(
                f,
                info=None,
                closed=True,
                error=f"{f.source.path}: source {f.source.legacy_source} was closed at cutover",
            )
            if f.source.legacy_source in closed
            else f
            for f in self.files
        ]
        return replace(self, files=files)


def prepare(
    source: str | None,
    *,
    manifest: str | None = None,
    owner_from_path: str | None = None,
    field_map: list[str] | None = None,
    mapping_file: str | None = None,
    strict: bool = False,
    lenient_json: bool = False,
    salvage: bool = False,
    owner_map: str | None = None,
    source_name: str = "phase1",
    default_user_email: str = DEFAULT_USER,
    chunk_size: int = 10_000,
    part: tuple[int, int] | None = None,
) -> Job:
    """Everything a run needs before it writes: the files (part: shard i of n), the mapping, the
    owners, every file checked."""
    if chunk_size < 1:
        raise InputError("chunk_size must be at least 1")
    mapping = FieldMapping.build(field_map or [], mapping_file, strict)
    options = ReadOptions(lenient=lenient_json, salvage=salvage)
    owners = read_owner_map(owner_map)
    sources = resolve(source, manifest=manifest, owner_from_path=owner_from_path, source_name=source_name)
    if part is not None:
        sources = shard(sources, *part)
    single = (
        part is None and manifest is None and len(sources) == 1 and sources[0].legacy_source == source_name
    )
    if single:
        files = [RunFile(0, sources[0], precheck_once(sources[0].path, mapping, options))]
    else:
        files = precheck_files(sources, mapping, options)
    origin = manifest or source or ""
    return Job(files, single, mapping, options, owners, source_name, default_user_email, chunk_size, origin)


prepare_source = task(prepare, name="precheck-source", cache_policy=NONE, persist_result=False)


@flow(name="phase1-migration", persist_result=True)
def phase1_migration(
    source: str | None = P.described(
        "cli/tasks.json",
        "The Phase 1 tasks.json, a directory of them, or a glob (uploads/**/tasks.json), on the worker",
    ),
    manifest: str | None = P.described(
        None, "CSV of path,email: the files and their owners (instead of source)"
    ),
    owner_from_path: str | None = P.described(
        None, "Where a path names its owner, e.g. uploads/{email}/tasks.json"
    ),
    source_name: str = P.described(
        "phase1", "Names the legacy source; with the legacy id it makes each row's uuid5"
    ),
    chunk_size: int = P.described(10_000, "Records per COPY and per checkpoint", ge=1),
    default_user_email: str = P.described(
        DEFAULT_USER, "Owner of records that name none (created if missing)"
    ),
    owner_map: str | None = P.described(
        None, "CSV of legacy_id,email owners per task, as a path on the worker"
    ),
    field_map: list[str] | None = P.described(None, "SOURCE=TARGET field mappings (like --map)"),
    mapping_file: str | None = P.described(
        None, "YAML mapping file (records, fields, dates, vocabulary), as a path on the worker"
    ),
    strict: bool = P.described(False, "No inference: the {tasks: [...]} shape, exact keys, no conversions"),
    lenient_json: bool = P.described(False, "Accept // and /* */ comments and trailing commas"),
    salvage: bool = P.described(False, "A truncated file: load the records before the cut"),
    propagate_deletes: bool = P.described(
        False, "Delete the rows of records gone from their file (only rows the application left alone)"
    ),
    cutover: bool = P.described(False, "The last sync: close the sources, so later runs on them are refused"),
    shards: int = P.described(
        0,
        "Split the files into this many shards, each a flow run of shard_deployment (0: all in this run)",
        ge=0,
    ),
    shard: int | None = P.described(None, "Which shard this run is (set by the run that split them)", ge=0),
    shard_deployment: str = P.described(
        "phase1-migration/phase1-shard", "The deployment each shard runs as (on the migrations work pool)"
    ),
    dry_run: bool = P.described(False, "Validate, transform and report without writing anything"),
    report_dir: str = P.report_dir(),
    workers: int = P.described(2, "Parallel COPY connections", ge=1),
    lock_wait_seconds: float = P.described(0.0, "Seconds to wait for another migration run to finish", ge=0),
    checkpoint: bool = P.checkpoint(),
    branch_provider: P.Provider | None = P.branch_provider(),
    database_secret: str | None = P.database_secret(),
) -> dict[str, Any] | State:
    """Migrate Phase 1 files; returns the outcome (exit_code, run_id, report path, counts)."""
    started = time.monotonic()
    phases = Phases()
    try:
        if workers < 1:
            raise InputError("workers must be at least 1")
        if shards and shard is None:
            from flows.shards import fan_out

            return fan_out(shards, shard_deployment, report_dir, started)
        part = (shard, shards) if shard is not None else None
        job = prepare_source(
            source,
            manifest=manifest,
            owner_from_path=owner_from_path,
            field_map=field_map,
            mapping_file=mapping_file,
            strict=strict,
            lenient_json=lenient_json,
            salvage=salvage,
            owner_map=owner_map,
            source_name=source_name,
            default_user_email=default_user_email,
            chunk_size=chunk_size,
            part=part,
        )
        phases.mark("precheck")
        if dry_run:
            return _dry_run(job, report_dir, started, phases)
        url = resolve_database_url(database_secret)
        sync = Sync(propagate_deletes, cutover, part)
        return _migrate(
            job, url, report_dir, workers, lock_wait_seconds, started, (checkpoint, branch_provider), sync, phases
        )
    except UserFacingError as exc:
        return user_error(exc)


class Phases:
    """Where a run's time goes (the report's timing, and bench/phase1.py's breakdown): seconds per
    phase, and the wall clock at the flow's start (the process before it is start-up)."""

    def __init__(self) -> None:
        self.wall, self.last = time.time(), time.monotonic()
        self.seconds: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        now = time.monotonic()
        self.seconds[phase] = round(self.seconds.get(phase, 0.0) + now - self.last, 3)
        self.last = now

    def so_far(self) -> dict[str, Any]:
        return {"flow_started_epoch": round(self.wall, 3), "phases_s": dict(self.seconds)}


@dataclass(frozen=True)
class Sync:
    """How a run treats files migrated before, and which shard of a split run it is."""

    propagate_deletes: bool = False
    cutover: bool = False
    part: tuple[int, int] | None = None  # (shard, shards)

    def locks(self) -> list[RunLock]:
        """The migration lock alone, or shared with the other shards of the run and a lock of its own."""
        if self.part is None:
            return [(MIGRATION_LOCK_KEY, False)]
        return [(MIGRATION_LOCK_KEY, True), (shard_lock_key(*self.part), False)]


def _migrate(
    job: Job,
    url: str,
    report_dir: str,
    workers: int,
    lock_wait: float,
    started: float,
    checkpoint: tuple[bool, str | None],
    sync: Sync,
    phases: Phases,
) -> dict[str, Any] | State:
    logger = get_run_logger()
    branch, notes = take_checkpoint(url, checkpoint[1], lock_wait) if checkpoint[0] else (None, [])
    phases.mark("checkpoint")
    # Every step below is a unit on this session: a session that is ended is replaced (its locks
    # taken again) and the step run again (tasks/retry.py).
    session = Session(url, lock_wait=lock_wait, locks=sync.locks())
    run: Run | None = None
    try:
        session.run("phase1:lock", lambda _conn: None)
        before, after = upgrade_schema(url) if sync.part is None else (schema.current_revision(url),) * 2
        phases.mark("schema")
        job = job.closing(session.run("phase1:start", closed_sources, [f.source.legacy_source for f in job.files]))
        run = session.run(
            "phase1:start",
            start_or_resume,
            kind=KIND,
            source_path=job.files[0].source.path if job.single else job.origin,
            source_name=job.source_name,
            source_sha256=job.sha256,
            chunk_size=job.chunk_size,
            parameters=job.parameters,
        )
        if run.resumed:
            logger.info("resuming interrupted run %s", run.id)
        session.run("phase1:start", record_refused, run.id, job.refused)
        ctx = job.context(run.started_at)
        sources = [f.source.legacy_source for f in job.accepted]
        resynced = session.run("phase1:start", sources_with_rows_from_other_runs, sources, run.id)
        synced = sorted(resynced)
        rows_before = session.run("phase1:start", resync.rows_of, synced, exclude_run=run.id)
        reporter = _Progress(job.records)
        try:
            summary = load_chunks(
                url,
                job.files,
                ctx,
                run_id=run.id,
                chunk_size=run.chunk_size,
                resync_sources=resynced,
                workers=workers,
                on_progress=reporter,
            )
        except Exception as exc:  # resumable: the chunks committed so far stay
            session.once("phase1:interrupted", finish, run.id, "interrupted", {}, error=first_line(exc))
            raise
        finally:
            reporter.close()
        phases.mark("load")
        gone = session.run("phase1:verify", resync.disappeared, run.id, synced) if resynced else {}
        deleted = (
            session.run("phase1:verify", resync.delete_disappeared, run.id, synced)
            if gone and sync.propagate_deletes
            else 0
        )
        verification = session.run("phase1:verify", verify, run.id, job.records)
        if not verification.ok and job.single and job.files[0].info is not None:
            verification.mismatches = session.run(
                "phase1:verify", find_mismatches, job.files[0].info, ctx, run.id, run.chunk_size
            )
        files = session.run("phase1:verify", file_results, run.id)
        verification.problems += _file_problems(files)
        verification.problems += _source_problems(
            verification.counts,
            rows_before,
            sum(gone.values()),
            deleted,
            session.run("phase1:verify", resync.rows_of, synced, exclude_run=run.id),
        )
        verification.ok = not verification.problems
        phases.mark("verify")
        status = "completed" if verification.ok else "verification_failed"
        report = session.run(
            "phase1:report",
            lambda conn: _report(job, url, run, summary, verification, status, (before, after), started, conn, phases),
        )
        report["files"] = files
        report["counts"] |= {"disappeared": sum(gone.values()), "deleted": deleted}
        report["checkpoint"] = branch
        report["notes"] = notes + report["notes"] + _sync_notes(gone, deleted, sync)
        if verification.ok:
            session.run("phase1:finish", record_sources, run.id, job.files, cutover=sync.cutover)
            session.run("phase1:finish", resync.forget_seen, run.id)
        stats = {**report["counts"], "checksum": verification.source_checksum, "refused": len(job.refused)}
        if sync.part is not None:  # how the run that split the files finds this shard's run
            stats |= {"shard": sync.part[0], "shards": sync.part[1], "flow_run_id": str(flow_run.id)}
        session.run("phase1:finish", finish, run.id, status, stats)
        try:
            return _publish(report, report_dir, summary, job)
        except ReportNotWritten:  # the same command resumes the run (every chunk skipped) and writes it
            session.run("phase1:finish", finish, run.id, "interrupted", stats, error="report not written")
            raise
    except BaseException as exc:
        signum = interruption(exc)
        if signum is not None and run is not None:
            why = f"interrupted by {signal.Signals(signum).name}"
            session.once("phase1:interrupted", finish, run.id, "interrupted", {}, error=why)
            interrupted({"title": "Phase 1 → Phase 2 migration", "kind": KIND, "run_id": run.id,
                         "notes": [f"{why}; the same command resumes the run"]}, report_dir)  # fmt: skip
        raise
    finally:
        session.close()


def _file_problems(files: list[dict[str, Any]]) -> list[str]:
    """Per file: every record it holds accounted for once."""
    problems = []
    for f in files:
        if f["status"] != "loaded":
            continue
        accounted = sum(
            f[c] for c in ("inserted", "updated", "unchanged", "conflicts", "duplicates", "quarantined")
        )
        if accounted != f["records"]:
            problems.append(f"{f['path']}: {f['records']} records read, {accounted} accounted for")
    return problems


def _source_problems(
    counts: dict[str, int], before: int, disappeared: int, deleted: int, after: int
) -> list[str]:
    """For the sources migrated before: their rows then are the ones this run matched (updated,
    unchanged, conflicts) and the ones that disappeared; now they are those less the deleted ones."""
    problems = []
    matched = counts["updated"] + counts["unchanged"] + counts["conflicts"]
    if before != matched + disappeared:
        problems.append(
            f"the re-synced sources held {before} rows before, but {matched} were matched and {disappeared} disappeared"
        )
    if after != before - deleted:
        problems.append(
            f"the re-synced sources hold {after} rows of earlier runs, {before} - {deleted} expected"
        )
    return problems


def _sync_notes(gone: dict[str, int], deleted: int, sync: Sync) -> list[str]:
    notes = []
    if gone:
        total = sum(gone.values())
        where = ", ".join(f"{s} ({n})" for s, n in sorted(gone.items())[:5])
        kept = total - deleted
        if sync.propagate_deletes:
            notes.append(
                f"{total:,} records disappeared from their files ({where}); {deleted:,} rows deleted, "
                f"{kept:,} kept because the application changed them"
            )
        else:
            notes.append(
                f"{total:,} records disappeared from their files ({where}); their rows stay (--propagate-deletes deletes them)"
            )
    if sync.cutover:
        notes.append("Cutover: the sources of this run are closed; later runs on them are refused.")
    return notes


def _dry_run(job: Job, report_dir: str, started: float, phases: Phases) -> dict[str, Any] | State:
    import uuid

    run_id = str(uuid.uuid4())
    reporter = _Progress(job.records)
    try:
        summary = dry_load(job, run_id, reporter)
    finally:
        reporter.close()
    counts = _dry_counts(summary, job)
    verification = Verification(counts["records_read"] == sum(list(counts.values())[1:]), counts, "", "")
    run = Run(run_id, datetime.now(UTC), job.chunk_size, False)
    report = _report(job, None, run, summary, verification, "dry_run", (None, None), started, None, phases)
    report["dry_run"] = True
    report["notes"].append(
        "Dry run: nothing was written; rows already in the database are counted as inserted."
    )
    return _publish(report, report_dir, summary, job)


def dry_load(job: Job, run_id: str, on_progress: Any = None) -> LoadSummary:
    """The whole pipeline without a database: what a run would insert, default and quarantine."""
    ctx = job.context(datetime.now(UTC))
    return load(None, job.files, ctx, run_id=run_id, chunk_size=job.chunk_size, on_progress=on_progress)


def _dry_counts(summary: LoadSummary, job: Job) -> dict[str, int]:
    return {
        "records_read": job.records,
        "inserted": summary.inserted,
        "updated": 0,
        "unchanged": 0,
        "conflicts": 0,
        "duplicates": summary.duplicates,
        "quarantined": summary.quarantined,
    }


def account(job: Job, summary: LoadSummary) -> dict[str, Any]:
    """The inference account: container, rules with their counts, defaults, legacy_extra."""
    return describe(job.infos, job.mapping, summary.rules, summary.defaults, summary.kept, summary.reasons)


class _Progress:
    """Records done: the local bar, and the `phase1-progress` artifact (sent off the load's path)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.artifact = progress.ProgressArtifact(
            key="phase1-progress", description="Phase 1 migration: records done"
        )

    def __call__(self, done: int, _total: int) -> None:
        self.artifact.update(100.0 * done / self.total if self.total else 100.0)
        progress.emit("migrate", done, self.total)

    def close(self) -> None:
        self.artifact.close()


def _report(
    job: Job,
    url: str | None,
    run: Run,
    summary: LoadSummary,
    verification: Verification,
    status: str,
    revisions: tuple[str | None, str | None],
    started: float,
    conn: Any,
    phases: Phases,
) -> dict[str, Any]:
    duration = time.monotonic() - started
    counts = dict(verification.counts)
    top = summary.reasons.most_common(10)
    if conn is not None and run.resumed:  # reasons of chunks committed by the earlier attempt too
        top = [
            (r, n)
            for r, n in conn.execute(
                "SELECT split_part(reason, ' (', 1), count(*) FROM quarantine, unnest(reasons) reason "
                "WHERE run_id = %s GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10",
                (run.id,),
            ).fetchall()
        ]
    notes = [
        f"Salvaged {f.source.path}: {f.info.cut.describe()}." for f in job.accepted if f.info and f.info.cut
    ]
    if job.refused:
        notes.insert(
            0, f"{len(job.refused):,} of {len(job.files):,} files refused whole; nothing of them was written."
        )
    if summary.naive_timestamps:
        notes.append(f"{summary.naive_timestamps:,} times carried no zone and were read as UTC.")
    return {
        "title": "Phase 1 → Phase 2 migration",
        "kind": KIND,
        "run_id": run.id,
        "status": status,
        "dry_run": False,
        "resumed": run.resumed,
        "chunks_skipped": summary.chunks_skipped,
        "foreign_keys_checked": {
            "per_chunk": summary.keys_checked_per_chunk,
            "per_row": summary.chunks_written - summary.keys_checked_per_chunk,
        },
        "source": _source(job),
        "database": mask_url(url) if url else None,
        "schema": {"before": revisions[0], "after": revisions[1]} if url else None,
        "counts": counts,
        "quarantine": {"top_reasons": top},
        "verification": {
            "ok": verification.ok,
            "source_checksum": verification.source_checksum,
            "database_checksum": verification.database_checksum,
            "problems": verification.problems,
            "mismatches": verification.mismatches,
        },
        "inference": describe(job.infos, job.mapping, summary.rules, summary.defaults, summary.kept),
        "naive_timestamps_read_as_utc": summary.naive_timestamps,
        "chunk_size": run.chunk_size,
        "timing": {
            "started_at": run.started_at.isoformat(),
            "duration_s": round(duration, 3),
            "rows_per_s": round(job.records / duration, 1) if duration > 0 else 0.0,
            **phases.so_far(),
        },
        "notes": notes,
    }


def _source(job: Job) -> dict[str, Any]:
    if job.single and job.files[0].info is not None:
        info = job.files[0].info
        return {
            "path": info.path,
            "sha256": info.sha256,
            "bytes": info.size,
            "name": job.source_name,
            "shape": info.document,
        }
    return {
        "path": job.origin,
        "files": len(job.files),
        "refused": len(job.refused),
        "sha256": job.sha256,
        "bytes": sum(i.size for i in job.infos),
        "name": job.source_name,
    }


def _publish(report: dict[str, Any], report_dir: str, summary: LoadSummary, job: Job) -> State:
    if summary.sample:
        create_table_artifact(
            reports.quarantine_rows(summary.sample),
            key="phase1-quarantine",
            description="Quarantined records and their reasons",
        )
    if not job.single and report.get("files"):
        create_table_artifact(
            reports.file_rows(report["files"][:FILES_SHOWN]),
            key="phase1-files",
            description=f"Phase 1 files of run {report['run_id']}: refused first",
        )
    ok = report["verification"]["ok"]
    refused = len(job.refused)
    if not ok:
        code, message = (
            VerificationFailed.exit_code,
            "verification failed: " + "; ".join(report["verification"]["problems"]),
        )
    elif refused:
        code, message = (
            FilesRefused.exit_code,
            f"run {report['run_id']} {report['status']}; {refused} files refused",
        )
    else:
        code, message = 0, f"run {report['run_id']} {report['status']}"
    return publish(
        report,
        report_dir,
        key="phase1-report",
        description=f"Phase 1 migration report, run {report['run_id']}",
        exit_code=code,
        message=message,
    )


@flow(name="phase1-rollback", persist_result=True)
def phase1_rollback(
    run_id: str = P.described(..., "The Phase 1 run to undo (its id is in the run's report)"),
    report_dir: str = P.report_dir(),
    force: bool = P.described(False, "Remove the rows even if the application changed them since"),
    database_secret: str | None = P.database_secret(),
) -> dict[str, Any] | State:
    """Remove exactly the rows a Phase 1 run inserted (and the users it created that nothing else
    uses), verify that none is left, and report."""
    try:
        url = resolve_database_url(database_secret)
        result = rollback_run(url, run_id, force=force)
    except UserFacingError as exc:
        return user_error(exc)
    result["database"] = mask_url(url)
    ok = result["verification"]["ok"]
    return publish(
        result,
        report_dir,
        name="rollback",
        key="phase1-rollback",
        description=f"Rollback of run {run_id}",
        exit_code=0 if ok else VerificationFailed.exit_code,
        message=f"run {run_id} rolled back" if ok else "rollback verification failed",
    )


def _summary(outcome: dict[str, Any]) -> str:
    r = outcome["report_data"]
    if r["kind"] == "phase1-rollback":
        c = r["counts"]
        return (
            f"run {r['run_id']} rolled back: {c['tasks_removed']:,} tasks, {c['users_removed']} users, "
            f"{c['quarantine_removed']:,} quarantined records removed\nreport: {outcome['report']}"
        )
    c, v, t = r["counts"], r["verification"], r["timing"]
    lines = [
        f"run {r['run_id']} {r['status']} in {t['duration_s']:.1f} s ({t['rows_per_s']:,.0f} records/s)"
        + (" (resumed)" if r["resumed"] else ""),
        f"records read {c['records_read']:,} = inserted {c['inserted']:,} + updated {c['updated']:,} + unchanged "
        f"{c['unchanged']:,} + conflicts {c['conflicts']:,} + duplicates {c['duplicates']:,} + quarantined {c['quarantined']:,}",
    ]
    if c.get("disappeared"):
        lines.append(f"disappeared from their files: {c['disappeared']:,} ({c.get('deleted', 0):,} deleted)")
    files = r.get("files") or []
    if len(files) > 1 or r["source"].get("files"):
        refused = [f for f in files if f["status"] != "loaded"]
        lines.append(f"files: {len(files):,}, loaded {len(files) - len(refused):,}, refused {len(refused):,}")
        lines += [f"  refused: {f['error']}" for f in refused[:10]]
        if len(refused) > 10:
            lines.append(f"  … {len(refused) - 10:,} more refused files in the report")
    if r["quarantine"]["top_reasons"]:
        lines.append(
            "most common quarantine reasons: "
            + "; ".join(f"{why} ({n})" for why, n in r["quarantine"]["top_reasons"][:3])
        )
    if not r.get("dry_run"):
        verdict = "match" if v["ok"] else "DO NOT MATCH"
        lines.append(f"checksums {verdict}: source {v['source_checksum']}, database {v['database_checksum']}")
    lines += [
        f"  position {m['position']} (id {m['legacy_id']}): {m['problem']}"
        for m in v.get("mismatches", [])[:10]
    ]
    if r.get("checkpoint"):
        lines.append(f"checkpoint branch: {r['checkpoint']['name']}")
    account = inference_lines(r["inference"], c["records_read"])
    lines += [f"how the file was read: {account[0]}", *account[1:SUMMARY_RULES]]
    if len(account) > SUMMARY_RULES:
        lines.append(f"  … {len(account) - SUMMARY_RULES} more lines in the report")
    return "\n".join(lines + closing_lines(outcome))


SUMMARY_RULES = 12  # lines of the inference account a run's summary prints (the report has all)


def _read_flags(parser: Any) -> None:
    """The flags that decide how a file is read: the same for a migration and for inspect."""
    parser.add_argument(
        "--source",
        default="cli/tasks.json",
        help="the Phase 1 file, a directory of them, or a glob such as 'uploads/**/tasks.json' (default: cli/tasks.json)",
    )
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="SOURCE=TARGET",
        dest="field_map",
        help="map a source key to a field (id, title, description, completed, status, created_at, updated_at, "
        "owner, priority, tags, completed_at, due_date, legacy_extra), or name where the records are "
        "(KEY or KEY.KEY=tasks); repeatable, wins over the mapping file and the built-in table",
    )
    parser.add_argument(
        "--mapping",
        metavar="FILE",
        dest="mapping_file",
        help="YAML mapping file: records (where), fields (key: target), dates (day-first|month-first), "
        "vocabulary (extends the built-in table: aliases, statuses, booleans, time_formats, ...)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="no inference: {tasks: [...]} or a bare list, exact keys, integer ids, booleans, ISO 8601 times; "
        "a record that would need a default is quarantined",
    )
    parser.add_argument(
        "--lenient-json", action="store_true", help="accept // and /* */ comments and trailing commas"
    )
    parser.add_argument(
        "--salvage",
        action="store_true",
        help="a truncated file: load the records before the cut and quarantine the cut one",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=10_000,
        metavar="N",
        help="records per COPY and per checkpoint (default: 10000)",
    )


def _inspect(argv: list[str]) -> int:
    """`inspect`: what the file holds and how it would be read, before anything is written; no
    database and no Prefect server are involved."""
    from flows import cli

    parser = cli.Parser(
        prog="python -m flows.phase1 inspect",
        description="Show how a Phase 1 file would be read: where its records are, which key gives "
        "which field, the value conversions and defaults, with how many records each covers, and what "
        "would be quarantined. Nothing is written.",
    )
    _read_flags(parser)
    parser.add_argument("--json", action="store_true", help="print the account as JSON (for scripts)")
    args = parser.parse_args(argv)
    try:
        job = prepare(
            args.source,
            field_map=args.field_map,
            mapping_file=args.mapping_file,
            strict=args.strict,
            lenient_json=args.lenient_json,
            salvage=args.salvage,
            chunk_size=args.chunk_size,
        )
        summary = dry_load(job, "00000000-0000-4000-8000-000000000000")
    except UserFacingError as exc:
        return cli.fail(str(exc), exc.exit_code)
    found = account(job, summary)
    found["counts"] = _dry_counts(summary, job)
    if args.json:
        print(json.dumps(found, indent=2, default=str))
        return 0
    c = found["counts"]
    print(f"{job.origin}:" if not job.single else f"{job.files[0].source.path}:")
    print("\n".join(inference_lines(found, job.records)))
    for f in job.refused:
        print(f"refused: {f.error}")
    print(
        f"would insert {c['inserted']:,}, count {c['duplicates']:,} as duplicates and quarantine "
        f"{c['quarantined']:,} of {c['records_read']:,} records"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    from flows import cli, orchestrator

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["inspect"]:
        return _inspect(argv[1:])
    if argv[:1] == ["rollback"]:
        args = cli.run_id_command(
            "python -m flows.phase1 rollback",
            phase1_rollback.__doc__,
            argv[1:],
            flags={"--force": "remove the rows even if the application changed them since"},
        )
        if isinstance(args, int):
            return args
        return cli.run_flow(
            lambda: phase1_rollback(
                args.run_id, report_dir=args.report_dir, force=args.force, return_state=True
            ),
            as_json=args.json,
            summary=_summary,
        )
    parser = cli.Parser(
        prog="python -m flows.phase1",
        description="Migrate a Phase 1 tasks.json into the Phase 2 PostgreSQL schema, losing nothing.",
        epilog="See how a file would be read first: python -m flows.phase1 inspect --source FILE. "
        "Undo a run: python -m flows.phase1 rollback RUN_ID. "
        "Exit codes: 0 done and verified, 1 verification failed, 2 bad input or usage, 3 database unavailable or busy, "
        "4 done and verified but some files were refused whole (the report names them and why).",
    )
    _read_flags(parser)
    parser.add_argument(
        "--manifest", metavar="CSV", help="CSV with path,email columns: the files to migrate and their owners"
    )
    parser.add_argument(
        "--owner-from-path",
        metavar="PATTERN",
        help="where a file's path names its owner, e.g. 'uploads/{email}/tasks.json'",
    )
    parser.add_argument(
        "--propagate-deletes",
        action="store_true",
        help="on a re-sync, delete the rows of records gone from their file (only rows the application left alone)",
    )
    parser.add_argument(
        "--cutover",
        action="store_true",
        help="the last sync: close the sources, so later runs on them are refused",
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=0,
        metavar="N",
        help="split the files into N shards, each a flow run of the phase1-shard deployment on the migrations "
        "work pool, so workers on any number of machines take them (needs PREFECT_API_URL; default: 0, one run)",
    )
    parser.add_argument(
        "--source-name",
        default="phase1",
        help="names the legacy source; with the legacy id it makes the row's uuid5 key (default: phase1)",
    )
    parser.add_argument(
        "--default-user-email",
        default=DEFAULT_USER,
        metavar="E",
        help=f"owner of records that name none, created if missing (default: {DEFAULT_USER})",
    )
    parser.add_argument(
        "--owner-map",
        metavar="CSV",
        help="CSV with legacy_id,email columns: owners per task (wins over the record's own owner)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="validate, transform and report without writing anything"
    )
    parser.add_argument(
        "--workers", type=int, default=2, metavar="N", help="parallel COPY connections (default: 2)"
    )
    parser.add_argument(
        "--lock-wait",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds to wait for another run to finish before giving up (default: 0)",
    )
    parser.add_argument(
        "--no-checkpoint",
        action="store_true",
        help="skip the checkpoint branch <db>-backup-<UTC time> taken before writing",
    )
    cli.add_provider(parser)
    cli.add_common(parser)
    args = parser.parse_args(argv)
    if args.chunk_size < 1 or args.workers < 1:
        return cli.fail("--chunk-size and --workers must be at least 1")
    read = {
        "field_map": args.field_map,
        "mapping_file": args.mapping_file,
        "strict": args.strict,
        "lenient_json": args.lenient_json,
        "salvage": args.salvage,
    }
    files = {"manifest": args.manifest, "owner_from_path": args.owner_from_path}
    try:  # bad input exits here, before the orchestrator is involved
        cli.apply_database_url(args.database_url)
        FieldMapping.build(args.field_map, args.mapping_file, args.strict)
        read_owner_map(args.owner_map)
        sources = resolve(args.source, **files, source_name=args.source_name)
        one = args.manifest is None and len(sources) == 1 and sources[0].legacy_source == args.source_name
        if one:
            quick_check(args.source)
    except UserFacingError as exc:
        return cli.fail(str(exc), exc.exit_code)
    server = orchestrator.start()  # boots while the whole file is checked
    if one:  # a single file is checked whole here; the files of a run are, each, by the flow
        try:
            prepare(args.source, **read, owner_map=args.owner_map, chunk_size=args.chunk_size)
        except UserFacingError as exc:
            if server is not None:
                server.stop()
            return cli.fail(str(exc), exc.exit_code)
    with cli.progress_bar(not args.json):
        return cli.run_flow(
            lambda: phase1_migration(
                source=args.source,
                **files,
                propagate_deletes=args.propagate_deletes,
                cutover=args.cutover,
                shards=args.shards,
                source_name=args.source_name,
                chunk_size=args.chunk_size,
                default_user_email=args.default_user_email,
                owner_map=args.owner_map,
                **read,
                dry_run=args.dry_run,
                report_dir=args.report_dir,
                workers=args.workers,
                lock_wait_seconds=args.lock_wait,
                checkpoint=not args.no_checkpoint,
                branch_provider=args.provider,
                return_state=True,
            ),
            as_json=args.json,
            summary=_summary,
            server=server,
        )


if __name__ == "__main__":
    from flows import cli

    cli.run_command(main)
