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

import sys
import time
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from prefect.states import State

from flows import params as P
from flows import progress
from flows.checkpoint import take_checkpoint
from flows.outcome import closing_lines, publish, user_error
from flows.retry import db_task
from flows.settings import resolve_database_url
from tasks import report as reports
from tasks import schema
from tasks.db import acquire_run_lock, connect, mask_url, release_run_lock
from tasks.errors import InputError, UserFacingError, VerificationFailed, first_line
from tasks.load import LoadSummary, load
from tasks.mapping import FieldMapping, read_owner_map
from tasks.rollback import rollback_run
from tasks.runs import Run, finish, sources_with_rows_from_other_runs, start_or_resume, transform_context
from tasks.source import SourceInfo, precheck_once, quick_check
from tasks.transform import normalize_email
from tasks.verify import Verification, find_mismatches, verify_run

KIND = "phase1"
DEFAULT_USER = "phase1-migration@example.com"


precheck_source = task(precheck_once, name="precheck-source", cache_policy=NONE, persist_result=False)
upgrade_schema = db_task(schema.upgrade, "upgrade-schema")
load_chunks = db_task(load, "load-chunks")
verify = db_task(verify_run, "verify-run")


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
        mapping = FieldMapping.build(field_map or [])
        owners = read_owner_map(owner_map)
        if chunk_size < 1 or workers < 1:
            raise InputError("chunk_size and workers must be at least 1")
        info = precheck_source(source, mapping.array_keys, mapping.aliases["id"])
        if dry_run:
            return _dry_run(
                info, mapping, owners, source_name, chunk_size, default_user_email, report_dir, started
            )
        url = resolve_database_url(database_secret)
        return _migrate(
            info,
            mapping,
            owners,
            url,
            source_name,
            chunk_size,
            default_user_email,
            report_dir,
            workers,
            lock_wait_seconds,
            started,
            (checkpoint, branch_provider),
        )
    except UserFacingError as exc:
        return user_error(exc)


def _parameters(mapping: FieldMapping, owners: dict[int, str], default_user: str) -> dict[str, Any]:
    """What decides the rows' content: a run resumes only with the same."""
    return {
        "map": list(mapping.overrides),
        "default_user_email": normalize_email(default_user),
        "owner_map": {str(k): v for k, v in sorted(owners.items())},
    }


def _migrate(
    info: SourceInfo,
    mapping: FieldMapping,
    owners: dict[int, str],
    url: str,
    source_name: str,
    chunk_size: int,
    default_user: str,
    report_dir: str,
    workers: int,
    lock_wait: float,
    started: float,
    checkpoint: tuple[bool, str | None],
) -> dict[str, Any] | State:
    logger = get_run_logger()
    branch, notes = take_checkpoint(url, checkpoint[1], lock_wait) if checkpoint[0] else (None, [])
    control = connect(url, autocommit=True)
    try:
        acquire_run_lock(control, wait_seconds=lock_wait)
        before, after = upgrade_schema(url)
        run = start_or_resume(
            control,
            kind=KIND,
            source_path=info.path,
            source_name=source_name,
            source_sha256=info.sha256,
            chunk_size=chunk_size,
            parameters=_parameters(mapping, owners, default_user),
        )
        if run.resumed:
            logger.info("resuming interrupted run %s", run.id)
        ctx = transform_context(source_name, default_user, owners, run.started_at)
        reporter = _Progress(info.records)
        try:
            summary = load_chunks(
                url,
                info,
                mapping,
                ctx,
                run_id=run.id,
                chunk_size=run.chunk_size,
                expect_conflicts=sources_with_rows_from_other_runs(control, source_name, run.id),
                workers=workers,
                on_progress=reporter,
            )
        except BaseException as exc:
            finish(control, run.id, "interrupted", {}, error=first_line(exc))
            raise
        finally:
            reporter.close()
        verification = verify(control, run.id, info.records)
        if not verification.ok:
            verification.mismatches = find_mismatches(control, info, mapping, ctx, run.id, run.chunk_size)
        status = "completed" if verification.ok else "verification_failed"
        report = _report(
            info,
            mapping,
            url,
            run,
            summary,
            verification,
            status,
            source_name,
            (before, after),
            started,
            control,
        )
        report["checkpoint"] = branch
        report["notes"] = notes
        finish(control, run.id, status, {**verification.counts, "checksum": verification.source_checksum})
        release_run_lock(control)
    finally:
        control.close()
    return _publish(report, report_dir, summary)


def _dry_run(
    info: SourceInfo,
    mapping: FieldMapping,
    owners: dict[int, str],
    source_name: str,
    chunk_size: int,
    default_user: str,
    report_dir: str,
    started: float,
) -> dict[str, Any] | State:
    import uuid

    run_id = str(uuid.uuid4())
    ctx = transform_context(source_name, default_user, owners, datetime.now(UTC))
    reporter = _Progress(info.records)
    try:
        summary = load(None, info, mapping, ctx, run_id=run_id, chunk_size=chunk_size, on_progress=reporter)
    finally:
        reporter.close()
    counts = {
        "records_read": info.records,
        "migrated": summary.migrated,
        "already_present": 0,
        "duplicates": summary.duplicates,
        "quarantined": summary.quarantined,
    }
    reconciled = counts["migrated"] + counts["duplicates"] + counts["quarantined"] == info.records
    verification = Verification(reconciled, counts, "", "")
    run = Run(run_id, datetime.now(UTC), chunk_size, False)
    report = _report(
        info, mapping, None, run, summary, verification, "dry_run", source_name, (None, None), started, None
    )
    report["dry_run"] = True
    report["notes"] = ["Dry run: nothing was written; rows already in the database are counted as migrated."]
    return _publish(report, report_dir, summary)


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
    info: SourceInfo,
    mapping: FieldMapping,
    url: str | None,
    run: Run,
    summary: LoadSummary,
    verification: Verification,
    status: str,
    source_name: str,
    revisions: tuple[str | None, str | None],
    started: float,
    conn: Any,
) -> dict[str, Any]:
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
            "name": source_name,
            "shape": info.shape,
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
        "mapping": mapping.describe(summary.keys_seen),
        "naive_timestamps_read_as_utc": summary.naive_timestamps,
        "chunk_size": run.chunk_size,
        "timing": {
            "started_at": run.started_at.isoformat(),
            "duration_s": round(duration, 3),
            "rows_per_s": round(info.records / duration, 1) if duration > 0 else 0.0,
        },
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
    return "\n".join(lines + closing_lines(outcome))


def main(argv: list[str] | None = None) -> int:
    from flows import cli, orchestrator

    argv = sys.argv[1:] if argv is None else argv
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
        epilog="Undo a run: python -m flows.phase1 rollback RUN_ID. "
        "Exit codes: 0 done and verified, 1 verification failed, 2 bad input or usage, 3 database unavailable or busy.",
    )
    parser.add_argument(
        "--source", default="cli/tasks.json", help="the Phase 1 file (default: cli/tasks.json)"
    )
    parser.add_argument(
        "--source-name",
        default="phase1",
        help="names the legacy source; with the legacy id it makes the row's uuid5 key (default: phase1)",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=10_000,
        metavar="N",
        help="records per COPY and per checkpoint (default: 10000)",
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
        "--map",
        action="append",
        default=[],
        metavar="SOURCE=TARGET",
        dest="field_map",
        help="map a source key to a field (id, title, description, completed, created_at, updated_at, owner, or tasks for the array); repeatable",
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
    try:  # bad input exits here, before the orchestrator is involved
        cli.apply_database_url(args.database_url)
        mapping = FieldMapping.build(args.field_map)
        read_owner_map(args.owner_map)
        quick_check(args.source, mapping.array_keys)
    except UserFacingError as exc:
        return cli.fail(str(exc), exc.exit_code)
    server = orchestrator.start()  # boots while the whole file is checked
    try:
        precheck_once(args.source, mapping.array_keys, mapping.aliases["id"])
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
                field_map=args.field_map,
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
