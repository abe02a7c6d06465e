"""Phase 1 → Phase 2: move the CLI's tasks.json into PostgreSQL, losing nothing.

The story of a run:
1. pre-check the whole file (well formed, sha256, duplicate ids) before anything is written;
2. take a checkpoint branch `<db>-backup-<UTC time>` (unless told not to), then the migration lock,
   and bring the schema up to head (backfills included);
3. start a run, or resume the interrupted run of this same file;
4. stream the file chunk by chunk: map fields, validate with pandera, transform, and COPY each chunk
   with its quarantine rows and its checkpoint in one transaction;
5. verify: every record is migrated, already present, a duplicate or quarantined, and the checksums
   computed from the source and from the database agree;
6. report: runs/<run_id>/report.json and report.md, and the same as Prefect artifacts.

`python -m flows.phase1 --help` for the command line; `rollback RUN_ID` undoes a run. The database
URL never travels as a flow parameter (Prefect stores those): it comes from `database_secret` (a
Prefect Secret block's name), DATABASE_URL, or the embedded PostgreSQL.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from prefect.states import State

from flows import params as P
from flows import progress
from flows.checkpoint import take_checkpoint
from flows.outcome import closing_lines, interrupted, interruption, publish, user_error
from flows.retry import db_task
from flows.settings import resolve_database_url
from tasks import report as reports
from tasks import schema
from tasks.db import Session, mask_url
from tasks.errors import InputError, ReportNotWritten, UserFacingError, VerificationFailed, first_line
from tasks.inference import describe
from tasks.inference import lines as inference_lines
from tasks.load import LoadSummary, load
from tasks.mapping import FieldMapping, read_owner_map
from tasks.rollback import rollback_run
from tasks.runs import (
    Run,
    finish,
    run_parameters,
    sources_with_rows_from_other_runs,
    start_or_resume,
    transform_context,
)
from tasks.source import ReadOptions, SourceInfo, precheck_once, quick_check
from tasks.transform import TransformContext
from tasks.verify import Verification, find_mismatches, verify_run

KIND = "phase1"
DEFAULT_USER = "phase1-migration@example.com"


upgrade_schema = db_task(schema.upgrade, "upgrade-schema")
load_chunks = db_task(load, "load-chunks")
verify = db_task(verify_run, "verify-run")


@dataclass(frozen=True)
class Job:
    """One Phase 1 file and everything that decides the rows it gives."""

    info: SourceInfo
    mapping: FieldMapping
    options: ReadOptions
    owners: dict[str, str]
    source_name: str
    default_user: str
    chunk_size: int

    def context(self, started: datetime) -> TransformContext:
        return transform_context(self.source_name, self.default_user, self.owners, started, self.mapping)

    @property
    def parameters(self) -> dict[str, Any]:
        return run_parameters(self.mapping, self.options, self.owners, self.default_user)


def prepare(
    source: str,
    *,
    field_map: list[str] | None = None,
    mapping_file: str | None = None,
    strict: bool = False,
    lenient_json: bool = False,
    salvage: bool = False,
    owner_map: str | None = None,
    source_name: str = "phase1",
    default_user_email: str = DEFAULT_USER,
    chunk_size: int = 10_000,
) -> Job:
    """Everything a run needs before it writes: the mapping, the owners, the whole file checked."""
    if chunk_size < 1:
        raise InputError("chunk_size must be at least 1")
    mapping = FieldMapping.build(field_map or [], mapping_file, strict)
    options = ReadOptions(lenient=lenient_json, salvage=salvage)
    owners = read_owner_map(owner_map)
    info = precheck_once(source, mapping, options)
    return Job(info, mapping, options, owners, source_name, default_user_email, chunk_size)


prepare_source = task(prepare, name="precheck-source", cache_policy=NONE, persist_result=False)


@flow(name="phase1-migration", persist_result=True)
def phase1_migration(
    source: str = P.described("cli/tasks.json", "The Phase 1 tasks.json, as a path on the worker"),
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
    dry_run: bool = P.described(False, "Validate, transform and report without writing anything"),
    report_dir: str = P.report_dir(),
    workers: int = P.described(2, "Parallel COPY connections", ge=1),
    lock_wait_seconds: float = P.described(0.0, "Seconds to wait for another migration run to finish", ge=0),
    checkpoint: bool = P.checkpoint(),
    branch_provider: P.Provider | None = P.branch_provider(),
    database_secret: str | None = P.database_secret(),
) -> dict[str, Any] | State:
    """Migrate one Phase 1 file; returns the outcome (exit_code, run_id, report path, counts)."""
    started = time.monotonic()
    try:
        if workers < 1:
            raise InputError("workers must be at least 1")
        job = prepare_source(
            source,
            field_map=field_map,
            mapping_file=mapping_file,
            strict=strict,
            lenient_json=lenient_json,
            salvage=salvage,
            owner_map=owner_map,
            source_name=source_name,
            default_user_email=default_user_email,
            chunk_size=chunk_size,
        )
        if dry_run:
            return _dry_run(job, report_dir, started)
        url = resolve_database_url(database_secret)
        return _migrate(
            job, url, report_dir, workers, lock_wait_seconds, started, (checkpoint, branch_provider)
        )
    except UserFacingError as exc:
        return user_error(exc)


def _migrate(
    job: Job,
    url: str,
    report_dir: str,
    workers: int,
    lock_wait: float,
    started: float,
    checkpoint: tuple[bool, str | None],
) -> dict[str, Any] | State:
    logger = get_run_logger()
    info = job.info
    branch, notes = take_checkpoint(url, checkpoint[1], lock_wait) if checkpoint[0] else (None, [])
    # Every step below is a unit on this session: a session that is ended is replaced (the run
    # lock taken again) and the step run again (tasks/retry.py).
    session = Session(url, lock_wait=lock_wait)
    run: Run | None = None
    try:
        session.run("phase1:lock", lambda _conn: None)
        before, after = upgrade_schema(url)
        run = session.run(
            "phase1:start",
            start_or_resume,
            kind=KIND,
            source_path=info.path,
            source_name=job.source_name,
            source_sha256=info.sha256,
            chunk_size=job.chunk_size,
            parameters=job.parameters,
        )
        if run.resumed:
            logger.info("resuming interrupted run %s", run.id)
        ctx = job.context(run.started_at)
        reporter = _Progress(info.records)
        conflicts = session.run("phase1:start", sources_with_rows_from_other_runs, job.source_name, run.id)
        try:
            summary = load_chunks(
                url,
                info,
                ctx,
                run_id=run.id,
                chunk_size=run.chunk_size,
                expect_conflicts=conflicts,
                workers=workers,
                on_progress=reporter,
            )
        except Exception as exc:  # resumable: the chunks committed so far stay
            session.once("phase1:interrupted", finish, run.id, "interrupted", {}, error=first_line(exc))
            raise
        finally:
            reporter.close()
        verification = session.run("phase1:verify", verify, run.id, info.records)
        if not verification.ok:
            verification.mismatches = session.run(
                "phase1:verify", find_mismatches, info, ctx, run.id, run.chunk_size
            )
        status = "completed" if verification.ok else "verification_failed"
        report = session.run(
            "phase1:report",
            lambda conn: _report(job, url, run, summary, verification, status, (before, after), started, conn),
        )
        report["checkpoint"] = branch
        report["notes"] = notes + report["notes"]
        stats = {**verification.counts, "checksum": verification.source_checksum}
        session.run("phase1:finish", finish, run.id, status, stats)
        try:
            return _publish(report, report_dir, summary)
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


def _dry_run(job: Job, report_dir: str, started: float) -> dict[str, Any] | State:
    import uuid

    run_id = str(uuid.uuid4())
    reporter = _Progress(job.info.records)
    try:
        summary = dry_load(job, run_id, reporter)
    finally:
        reporter.close()
    verification = Verification(_reconciled(summary, job.info), _dry_counts(summary, job.info), "", "")
    run = Run(run_id, datetime.now(UTC), job.chunk_size, False)
    report = _report(job, None, run, summary, verification, "dry_run", (None, None), started, None)
    report["dry_run"] = True
    report["notes"].append(
        "Dry run: nothing was written; rows already in the database are counted as migrated."
    )
    return _publish(report, report_dir, summary)


def dry_load(job: Job, run_id: str, on_progress: Any = None) -> LoadSummary:
    """The whole pipeline without a database: what a run would migrate, default and quarantine."""
    ctx = job.context(datetime.now(UTC))
    return load(None, job.info, ctx, run_id=run_id, chunk_size=job.chunk_size, on_progress=on_progress)


def _dry_counts(summary: LoadSummary, info: SourceInfo) -> dict[str, int]:
    return {
        "records_read": info.records,
        "migrated": summary.migrated,
        "already_present": 0,
        "duplicates": summary.duplicates,
        "quarantined": summary.quarantined,
    }


def _reconciled(summary: LoadSummary, info: SourceInfo) -> bool:
    return summary.migrated + summary.duplicates + summary.quarantined == info.records


def account(job: Job, summary: LoadSummary) -> dict[str, Any]:
    """The inference account: container, rules with their counts, defaults, legacy_extra."""
    return describe(job.info, job.mapping, summary.rules, summary.defaults, summary.kept, summary.reasons)


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
) -> dict[str, Any]:
    info = job.info
    duration = time.monotonic() - started
    counts = verification.counts
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
    notes = []
    if info.cut is not None:
        notes.append(f"Salvaged: {info.cut.describe()}.")
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
        "source": {
            "path": info.path,
            "sha256": info.sha256,
            "bytes": info.size,
            "name": job.source_name,
            "shape": info.document,
        },
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
        "inference": describe(info, job.mapping, summary.rules, summary.defaults, summary.kept),
        "naive_timestamps_read_as_utc": summary.naive_timestamps,
        "chunk_size": run.chunk_size,
        "timing": {
            "started_at": run.started_at.isoformat(),
            "duration_s": round(duration, 3),
            "rows_per_s": round(info.records / duration, 1) if duration > 0 else 0.0,
        },
        "notes": notes,
    }


def _publish(report: dict[str, Any], report_dir: str, summary: LoadSummary) -> State:
    if summary.sample:
        create_table_artifact(
            reports.quarantine_rows(summary.sample),
            key="phase1-quarantine",
            description="Quarantined records and their reasons",
        )
    ok = report["verification"]["ok"]
    return publish(
        report,
        report_dir,
        key="phase1-report",
        description=f"Phase 1 migration report, run {report['run_id']}",
        exit_code=0 if ok else VerificationFailed.exit_code,
        message=f"run {report['run_id']} {report['status']}"
        if ok
        else "verification failed: " + "; ".join(report["verification"]["problems"]),
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
        f"records read {c['records_read']:,} = migrated {c['migrated']:,} + already present {c['already_present']:,}"
        f" + duplicates {c['duplicates']:,} + quarantined {c['quarantined']:,}",
    ]
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
        "--source", default="cli/tasks.json", help="the Phase 1 file (default: cli/tasks.json)"
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
    found["counts"] = _dry_counts(summary, job.info)
    if args.json:
        print(json.dumps(found, indent=2, default=str))
        return 0
    c = found["counts"]
    print(f"{job.info.path}:")
    print("\n".join(inference_lines(found, job.info.records)))
    print(
        f"would migrate {c['migrated']:,}, count {c['duplicates']:,} as duplicates and quarantine "
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
        "Exit codes: 0 done and verified, 1 verification failed, 2 bad input or usage, 3 database unavailable or busy.",
    )
    _read_flags(parser)
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
    try:  # bad input exits here, before the orchestrator is involved
        cli.apply_database_url(args.database_url)
        FieldMapping.build(args.field_map, args.mapping_file, args.strict)
        read_owner_map(args.owner_map)
        quick_check(args.source)
    except UserFacingError as exc:
        return cli.fail(str(exc), exc.exit_code)
    server = orchestrator.start()  # boots while the whole file is checked
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
