"""Phase 1 → Phase 2: move the CLI's tasks.json files into PostgreSQL, losing nothing.

The story of a run:
1. find the files (one, a directory, a glob or a manifest); one file is pre-checked whole here (well
   formed, sha256, where the records are, duplicate ids), the files of a run are stat'ed (and
   hashed if their stat cannot vouch for their bytes, tasks/filestat.py);
2. take a checkpoint branch `<db>-backup-<UTC time>` (unless told not to), then the migration lock,
   and bring the schema up to head (backfills included);
3. start a run, or resume the interrupted run of these same files; count the files unchanged since
   their last sync (tasks/resync.py) and pre-check the others: a file that cannot be migrated is
   refused with its reason, nothing of it is written, and the others go on;
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

if __name__ == "__main__":  # the command line, which answers --help without importing Prefect
    from flows.commands import phase1 as command

    command.run()

import hashlib
import json
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from prefect.runtime import flow_run
from prefect.states import State
from prefect.utilities.annotations import quote

from flows import params as P
from flows import progress
from flows.checkpoint import take_checkpoint
from flows.outcome import interrupted, interruption, publish, user_error
from flows.retry import db_task
from flows.settings import resolve_database_url
from tasks import file_results, interpreter, resync, schema
from tasks import report as reports
from tasks.db import MIGRATION_LOCK_KEY, RunLock, Session, mask_url, shard_lock_key
from tasks.errors import (
    FilesRefused,
    InputError,
    ReportNotWritten,
    UserFacingError,
    VerificationFailed,
    first_line,
)
from tasks.files import RunFile, found_files
from tasks.inference import describe
from tasks.load import LoadSummary, load
from tasks.mapping import FieldMapping, read_owner_map
from tasks.rollback import rollback_run
from tasks.runs import (
    Run,
    claimed_before,
    closed_sources,
    finish,
    record_chunkless,
    record_sources,
    rows_from_other_runs,
    run_parameters,
    start_or_resume,
    transform_context,
)
from tasks.source import ReadOptions, SourceInfo, file_sha256, precheck
from tasks.sources import FileSource, resolve, shard
from tasks.transform import TransformContext
from tasks.verify import Verification, find_mismatches, verify_run

KIND = "phase1"
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
    # a directory, a glob or a manifest: the run is of a user base, so it names the files an earlier
    # sync read that it did not find (one file given alone is no word on the others)
    user_base: bool = False
    ahead_s: float = 0.0  # seconds the command spent preparing it before the flow (prepared_ahead())

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
        return [f for f in self.files if f.refused]

    @property
    def records(self) -> int:
        return sum(f.records for f in self.accepted)

    @property
    def streamed_records(self) -> int:
        """The records the load reads (an unchanged file's are counted from its last sync)."""
        return sum(f.records for f in self.files if f.streamed)

    @property
    def sha256(self) -> str:
        """One file's sha256, or one over every file's name and stat key (what a resume matches: a
        file's stat moves with its bytes, tasks/filestat.py, and is the same whether it was hashed)."""
        if self.single:
            return self.files[0].digest or ""
        digest = hashlib.sha256()
        for f in self.files:
            digest.update(f"{f.source.legacy_source}\0{f.stat if f.stat is not None else ''}\n".encode())
        return digest.hexdigest()

    def mark_unchanged(self, unchanged: frozenset[int]) -> None:
        """Mark the files a re-sync found unchanged (tasks/resync.py), each in place. A new list held
        90,000 files twice for a moment, and the memory it took stayed taken for the run (100,000
        files, 1 % changed, as in bench/phase1_fleet.py: peak RSS 268-271 MiB against 288-291, six
        pairs); a new object per file took 0.27-0.34 s of the start."""
        for f in self.files:
            if f.no in unchanged:
                f.unchanged = True

    def after(self, summary: LoadSummary) -> Job:
        """This job with its files as the load left them: pre-checked, or refused with the reason."""
        return replace(self, files=summary.files)

    def closing(self, closed: dict[str, datetime], claimed: dict[str, str]) -> Job:
        """This job with the files refused whose sources cutover closed, or an earlier sync claimed
        otherwise (runs.claimed_before: why); a single file: the run is refused."""
        if not closed and not claimed:
            return self
        why = {**claimed, **dict.fromkeys(closed, "was closed at cutover")}
        if self.single:
            f = self.files[0]
            if f.source.legacy_source in closed:
                when = closed[f.source.legacy_source]
                raise InputError(
                    f"{f.source.path}: source {self.source_name} was closed at cutover on "
                    f"{when:%Y-%m-%d %H:%M} UTC; nothing was written"
                )
            raise InputError(f"{f.source.path}: source {self.source_name} {why[f.source.legacy_source]}; nothing was written")
        files = [
            replace(
                f,
                info=None,
                closed=f.source.legacy_source in closed,
                error=f"{f.source.path}: source {f.source.legacy_source} {why[f.source.legacy_source]}",
            )
            if f.source.legacy_source in why
            else f
            for f in self.files
        ]
        return replace(self, files=files)


def prepare(source: str | None, **options: Any) -> Job:
    """prepare_job() of the file(s) read with `options`, the reading parameters of the Phase 1 flow
    (P.Phase1; their defaults are its)."""
    return prepare_job(P.of(P.Phase1, {"source": source, **options}))


def fans_out(p: P.Phase1) -> bool:
    """Whether the run splits its files into shards, each a flow run of its own (flows/shards.py)."""
    return bool(p.shards) and p.shard is None


def sources_of(p: P.Phase1) -> list[FileSource]:
    """The files the run's parameters name, each with its legacy source and owner (all shards')."""
    return resolve(p.source, manifest=p.manifest, owner_from_path=p.owner_from_path, source_name=p.source_name)


def part_of(p: P.Phase1) -> tuple[int, int] | None:
    """(shard, shards) for the run of one shard of a split run, else None."""
    return (p.shard, p.shards) if p.shard is not None else None


def prepare_job(p: P.Phase1) -> Job:
    """Everything a run needs before it touches the database: the files (of its shard, if it is
    one), the mapping, the owners. A single file is pre-checked whole here (a bad one fails the run
    before anything starts); the files of a run are found and stat'ed, and the load pre-checks each
    one it reads when its turn comes (tasks/files.py). Both make objects by the hundred thousand
    beside Prefect's heap, so the collector is settled meanwhile (tasks/interpreter.py)."""
    mapping = FieldMapping.build(p.field_map or [], p.mapping_file, p.strict)
    options = ReadOptions(lenient=p.lenient_json, salvage=p.salvage)
    owners = read_owner_map(p.owner_map)
    with interpreter.settled():
        sources = sources_of(p)
        part = part_of(p)
        if part is not None:
            sources = shard(sources, *part)
        single = (
            part is None and p.manifest is None and len(sources) == 1 and sources[0].legacy_source == p.source_name
        )
        if single:
            files = [RunFile.of(0, sources[0], precheck(sources[0].path, mapping, options), keep=True)]
        else:
            files = found_files(sources, hashed=p.cutover)
    origin = p.manifest or p.source or ""
    user_base = p.manifest is not None or len(sources) != 1 or sources[0].path != p.source
    return Job(
        files, single, mapping, options, owners, p.source_name, p.default_user_email, p.chunk_size, origin,
        user_base=user_base and part is None,
    )  # fmt: skip


# Jobs prepared ahead by the command for the flow run it starts next (prepared_ahead()).
_AHEAD: ContextVar[dict[str, Job] | None] = ContextVar("phase1_prepared_ahead", default=None)


@contextmanager
def prepared_ahead(p: P.Phase1) -> Iterator[None]:
    """prepare_job(p) now, and handed to the flow run of the same parameters started inside. The
    command prepares while the temporary Prefect server boots, so bad input fails before the flow
    starts, and the flow does not walk and stat 100,000 files a second time (its pre-check step in
    a re-sync of them: 2.3 to 2.8 s before, 0.01 s now)."""
    began = time.monotonic()
    job = prepare_job(p)
    token = _AHEAD.set({p.model_dump_json(): replace(job, ahead_s=time.monotonic() - began)})
    try:
        yield
    finally:
        _AHEAD.reset(token)


def _prepare(p: P.Phase1) -> Job:
    """The job prepared ahead for these parameters (taken: it is not held after), else prepared now."""
    ahead = _AHEAD.get()
    job = ahead.pop(p.model_dump_json(), None) if ahead else None
    return job if job is not None else prepare_job(p)


prepare_source = task(_prepare, name="precheck-source", cache_policy=NONE, persist_result=False)


@flow(name="phase1-migration", persist_result=True)
@P.takes(P.Phase1)
def phase1_migration(**params: Any) -> dict[str, Any] | State:
    """Migrate Phase 1 files; returns the outcome (exit_code, run_id, report path, counts)."""
    started = time.monotonic()
    phases = Phases()
    try:
        p = P.of(P.Phase1, params)
        report_dir = p.report_dir
        if fans_out(p):
            from flows.shards import fan_out

            return fan_out(p.shards, p.shard_deployment, report_dir, started)
        part = part_of(p)
        job = prepare_source(p)
        phases.mark("precheck")
        phases.before("precheck", job.ahead_s)
        if p.dry_run:
            return _dry_run(job, report_dir, started, phases)
        url = resolve_database_url(p.database_secret)
        sync = Sync(p.propagate_deletes, p.cutover, part)
        return _migrate(
            job, url, report_dir, p.workers, p.lock_wait_seconds, started, (p.checkpoint, p.branch_provider), sync, phases
        )
    except UserFacingError as exc:
        return user_error(exc)


class Phases:
    """Where a run's time goes (the report's timing, and bench/phase1.py's breakdown): seconds per
    phase, and the wall clock at the flow's start (the process before it is start-up), and what the
    command did of a phase before the flow (its pre-check of the input, beside the server's boot)."""

    def __init__(self) -> None:
        self.wall, self.last = time.time(), time.monotonic()
        self.seconds: dict[str, float] = {}
        self.ahead: dict[str, float] = {}

    def before(self, phase: str, seconds: float) -> None:
        """seconds of `phase` spent by the command before the flow started."""
        if seconds:
            self.ahead[phase] = seconds

    def mark(self, phase: str) -> None:
        now = time.monotonic()
        self.seconds[phase] = round(self.seconds.get(phase, 0.0) + now - self.last, 3)
        self.last = now

    def so_far(self) -> dict[str, Any]:
        return {
            "flow_started_epoch": round(self.wall, 3),
            "phases_s": dict(self.seconds),
            "before_flow_s": {phase: round(seconds, 3) for phase, seconds in self.ahead.items()},
        }


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
        job = job.closing(
            session.run("phase1:start", closed_sources, [f.source.legacy_source for f in job.files]),
            session.run(
                "phase1:start", claimed_before, job.files, job.default_user, job.source_name if job.single else None
            ),
        )
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
        job.mark_unchanged(
            session.run(
                "phase1:start", resync.unchanged_files, run.id, job.files, job.parameters, file_sha256, resumed=run.resumed
            )
        )
        phases.mark("start")
        ctx = job.context(run.started_at)
        sources = [f.source.legacy_source for f in job.files if f.to_stream]
        rows_before = session.run("phase1:start", rows_from_other_runs, sources, run.id)
        resynced = frozenset(rows_before)
        reporter = _Progress()
        try:
            # quote(): Prefect would otherwise walk every file, owner and source looking for
            # futures (11 s of a 33 s run of 10,000 files, profiled); these hold none.
            summary = load_chunks(
                url,
                quote(job.files),
                quote(ctx),
                run_id=run.id,
                chunk_size=run.chunk_size,
                options=job.options,
                resync_sources=quote(resynced),
                workers=workers,
                on_progress=reporter,
            )
        except Exception as exc:  # resumable: the chunks committed so far stay
            session.once("phase1:interrupted", finish, run.id, "interrupted", {}, error=first_line(exc))
            raise
        finally:
            reporter.close()
        job = job.after(summary)
        session.run("phase1:load", record_chunkless, run.id, job.files)
        phases.mark("load")
        # The sources whose files were read: one refused during the load was not, so none of its
        # rows disappeared (and --propagate-deletes must not delete them).
        synced = sorted(resynced.intersection(f.source.legacy_source for f in job.files if f.streamed))
        gone = session.run("phase1:verify", resync.disappeared, run.id, synced) if synced else {}
        # and the rows the application deleted whose records then left their files too
        gone_deleted = session.run("phase1:verify", resync.deleted_and_gone, run.id, synced) if synced else {}
        disappeared_records = sum(gone.values()) + sum(gone_deleted.values())
        missing = session.run("phase1:verify", resync.missing_sources, run.id, job.source_name) if job.user_base else (0, [])
        deleted = (
            session.run("phase1:verify", resync.delete_disappeared, run.id, synced)
            if gone and sync.propagate_deletes
            else 0
        )
        verification = session.run("phase1:verify", verify, run.id, job.streamed_records)
        if not verification.ok and job.single and job.files[0].streamed and job.files[0].info is not None:
            verification.mismatches = session.run(
                "phase1:verify", find_mismatches, job.files[0].info, ctx, run.id, run.chunk_size
            )
        files = session.run("phase1:verify", file_results.totals, [run.id])
        verification.problems += files.problems
        verification.problems += _source_problems(
            verification.counts,
            sum(rows_before[s] for s in synced),
            disappeared_records,
            deleted,
            sum(session.run("phase1:verify", rows_from_other_runs, synced, run.id).values()),
        )
        for count, n in files.unchanged.items():  # the unchanged files, counted from their last sync
            verification.counts[count] += n
        verification.ok = not verification.problems
        phases.mark("verify")
        status = "completed" if verification.ok else "verification_failed"
        report = session.run(
            "phase1:report",
            lambda conn: _report(job, url, run, summary, verification, status, (before, after), started, conn, phases),
        )
        report["files"] = reports.Rows(
            files.files,
            files.refused,
            session.run("phase1:report", file_results.first, [run.id], FILES_SHOWN),
            lambda: file_results.every(session, [run.id]),
        )
        report["counts"] |= {"disappeared": disappeared_records, "deleted": deleted}
        report["checkpoint"] = branch
        report["notes"] = notes + report["notes"] + _sync_notes(gone, gone_deleted, deleted, sync, missing)
        if verification.ok:
            session.run("phase1:finish", record_sources, run.id, job.files, cutover=sync.cutover)
            session.run("phase1:finish", resync.forget_seen, run.id)
        stats = {**report["counts"], "checksum": verification.source_checksum, "refused": len(job.refused)}
        if sync.part is not None:  # how the run that split the files finds this shard's run
            stats |= {"shard": sync.part[0], "shards": sync.part[1], "flow_run_id": str(flow_run.id)}
        session.run("phase1:finish", finish, run.id, status, stats)
        phases.mark("finish")
        report["timing"] = _timing(run, report["counts"]["records_read"], started, phases)
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


def _source_problems(
    counts: dict[str, int], before: int, disappeared: int, deleted: int, after: int
) -> list[str]:
    """For the sources migrated before: their rows then (those the application deleted included)
    are the ones this run matched (updated, unchanged, conflicts) and the ones that disappeared
    (deleted ones whose records left the files too); now they are those less the deleted ones."""
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


def _sync_notes(
    gone: dict[str, int], gone_deleted: dict[str, int], deleted: int, sync: Sync, missing: tuple[int, list[str]]
) -> list[str]:
    """gone: the disappeared records' rows still in tasks before any was deleted; gone_deleted: those
    the application had deleted already; missing: the sources synced before that no file of the run
    is (how many, the first few)."""
    notes = []
    if missing[0]:
        more = ", …" if missing[0] > len(missing[1]) else ""
        notes.append(
            f"{missing[0]:,} files an earlier sync read were not among this run's files (deleted, moved, or outside "
            f"what it was given: {', '.join(missing[1])}{more}); their rows stay as they are"
            + (", and their sources open" if sync.cutover else "")
        )
    every = Counter(gone) + Counter(gone_deleted)
    if every:
        total = sum(every.values())
        where = ", ".join(f"{s} ({n})" for s, n in sorted(every.items())[:5])
        already = sum(gone_deleted.values())
        if sync.propagate_deletes:
            what = f"{deleted:,} rows deleted, {sum(gone.values()) - deleted:,} kept because the application changed them"
        else:
            what = f"{sum(gone.values()):,} rows stay (--propagate-deletes deletes them)"
        if already:
            what += f", {already:,} the application had deleted already"
        notes.append(f"{total:,} records disappeared from their files ({where}); {what}")
    if sync.cutover:
        notes.append("Cutover: the sources of this run are closed; later runs on them are refused.")
    return notes


def _dry_run(job: Job, report_dir: str, started: float, phases: Phases) -> dict[str, Any] | State:
    import uuid

    run_id = str(uuid.uuid4())
    reporter = _Progress()
    try:
        summary = dry_load(job, run_id, reporter)
    finally:
        reporter.close()
    job = job.after(summary)
    counts = dry_counts(summary, job)
    verification = Verification(counts["records_read"] == sum(list(counts.values())[1:]), counts, "", "")
    run = Run(run_id, datetime.now(UTC), job.chunk_size, False)
    report = _report(job, None, run, summary, verification, "dry_run", (None, None), started, None, phases)
    report["dry_run"] = True
    report["notes"].append(
        "Dry run: nothing was written; rows already in the database are counted as inserted."
    )
    if not job.single:  # what a dry run is for: which files a run would refuse, and why
        refused = [_refused_row(f) for f in job.refused]
        report["files"] = reports.Rows(len(job.files), len(refused), refused, lambda: map(json.dumps, refused))
        report["notes"].append(
            "Dry run: the Files table lists the files a run would refuse on reading them; a dry run does not ask "
            "the database, so a file closed at cutover or claimed by an earlier sync is refused by the run alone."
        )
    return _publish(report, report_dir, summary, job)


def _refused_row(f: RunFile) -> dict[str, Any]:
    """A refused file's row of the Files table (file_results.FIELDS), from the run's own account."""
    row = dict.fromkeys(file_results.FIELDS, 0)
    return row | {"file_no": f.no, "path": f.source.path, "legacy_source": f.source.legacy_source,
                  "owner": f.source.owner, "status": f.status, "error": f.error}  # fmt: skip


def dry_load(job: Job, run_id: str, on_progress: Any = None) -> LoadSummary:
    """The whole pipeline without a database: what a run would insert, default and quarantine."""
    ctx = job.context(datetime.now(UTC))
    return load(
        None, job.files, ctx, run_id=run_id, chunk_size=job.chunk_size, options=job.options, on_progress=on_progress
    )


def dry_counts(summary: LoadSummary, job: Job) -> dict[str, int]:
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
    return describe(summary.held, job.mapping, summary.rules, summary.defaults, summary.kept, summary.reasons)


class _Progress:
    """Records done of the records expected (tasks/files.py: exact once every file is read): the
    local bar, and the `phase1-progress` artifact (sent off the load's path)."""

    def __init__(self) -> None:
        self.artifact = progress.ProgressArtifact(
            key="phase1-progress", description="Phase 1 migration: records done"
        )

    def __call__(self, done: int, total: int) -> None:
        self.artifact.update(100.0 * done / total if total else 100.0)
        progress.emit("migrate", done, total)

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
        f"Salvaged {f.source.path}: {f.salvaged}." for f in job.accepted if f.salvaged
    ]
    if job.refused:
        notes.insert(
            0, f"{len(job.refused):,} of {len(job.files):,} files refused whole; nothing of them was written."
        )
    unchanged = sum(f.unchanged for f in job.files)
    if unchanged:
        notes.append(
            f"{unchanged:,} files are byte for byte what the last sync of their source read, with nothing "
            "left to do: their records are counted unchanged, not read again."
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
        "inference": describe(summary.held, job.mapping, summary.rules, summary.defaults, summary.kept),
        "naive_timestamps_read_as_utc": summary.naive_timestamps,
        "chunk_size": run.chunk_size,
        "timing": _timing(run, counts["records_read"], started, phases),
        "notes": notes,
    }


def _timing(run: Run, records: int, started: float, phases: Phases) -> dict[str, Any]:
    """The run's duration so far and where it went (the report's, written last: its own writing
    and the process's exit are what a benchmark sees after it)."""
    duration = time.monotonic() - started
    return {
        "started_at": run.started_at.isoformat(),
        "duration_s": round(duration, 3),
        "rows_per_s": round(records / duration, 1) if duration > 0 else 0.0,
        **phases.so_far(),
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
        "unchanged": sum(f.unchanged for f in job.files),
        "sha256": job.sha256,
        "bytes": sum(f.size for f in job.files if f.streamed),
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
            reports.file_rows(report["files"].head[:FILES_SHOWN]),
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
@P.takes(P.Phase1Rollback)
def phase1_rollback(**params: Any) -> dict[str, Any] | State:
    """Remove exactly the rows a Phase 1 run inserted (and the users it created that nothing else
    uses), verify that none is left, and report."""
    p = P.of(P.Phase1Rollback, params)
    run_id, report_dir = p.run_id, p.report_dir
    try:
        url = resolve_database_url(p.database_secret)
        result = rollback_run(url, run_id, force=p.force)
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
