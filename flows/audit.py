"""Audit: prove after a migration (and every night) that the data still holds together.

The story of a run:
1. run every check against the live database: orphans, constraints left NOT VALID, invalid indexes,
   NULLs in required columns, duplicate legacy ids, and every `tasks` row through pandera in chunks;
2. given the Phase 1 file, compare row counts and per-record checksums with the run that migrated it;
3. with `fix_orphans`, move orphan rows into `quarantine` with the reason (one transaction; `undo-fix
   RUN_ID` puts them back) and check again;
4. report: the `audit-checks` table artifact, `audit-report`, and `runs/<run_id>/audit.json`.

A failing check fails the run and the command exits 1 naming it. `python -m flows.audit --help`.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.states import State

from flows import params as P
from flows.outcome import closing_lines, publish, user_error
from flows.retry import db_task
from flows.settings import resolve_database_url
from tasks import audit as checks
from tasks.db import Session, mask_url
from tasks.errors import InputError, UserFacingError, VerificationFailed
from tasks.runs import finish, open_run

run_checks = db_task(checks.run_checks, "run-checks")
fix_orphans = db_task(checks.fix_orphans, "fix-orphans")


@flow(name="audit", persist_result=True)
def audit(
    source: str | None = P.described(
        None, "The Phase 1 file to compare counts and checksums with (path on the worker)"
    ),
    fix: bool = P.described(False, "Move orphan rows to quarantine (undoable), then check again"),
    report_dir: str = P.report_dir(),
    database_secret: str | None = P.database_secret(),
) -> State:
    """Run the post-migration checks (and, with `fix`, quarantine orphans); fails when any check does."""
    started = time.monotonic()
    try:
        url = resolve_database_url(database_secret)
        with Session(url) as session:  # each step a unit: a lost session is replaced, the step rerun
            run_id = session.run(
                "audit:start", open_run, "audit", {"source": source, "fix_orphans": fix}, run_id=str(uuid.uuid4())
            )
            found = session.run("audit:checks", run_checks, source)
            moved = 0
            if fix and any(c.check == "orphan" and c.failed for c in found):
                moved = session.run("audit:fix", fix_orphans, run_id)
                found = session.run("audit:checks", run_checks, source)
            failed = sorted({c.check for c in found if c.failed})
            status = "failed" if failed else "passed"
            session.run("audit:finish", finish, run_id, status, {"failed": failed, "orphans_quarantined": moved})
    except UserFacingError as exc:
        return user_error(exc)
    rows = [c.as_row() for c in found]
    create_table_artifact(rows, key="audit-checks", description=f"Audit checks, run {run_id}")
    report: dict[str, Any] = {
        "title": "Post-migration audit",
        "kind": "audit",
        "run_id": run_id,
        "status": status,
        "database": mask_url(url),
        "failed": failed,
        "checks": rows,
        "counts": {"checks": len(rows), "failed": sum(c.failed for c in found), "orphans_quarantined": moved},
        "timing": {"duration_s": round(time.monotonic() - started, 3)},
        "notes": [
            f"{moved} orphan rows moved to quarantine; undo with: python -m flows.audit undo-fix {run_id}"
        ]
        if moved
        else [],
    }
    return publish(
        report,
        report_dir,
        name="audit",
        key="audit-report",
        description=f"Audit, run {run_id}",
        exit_code=VerificationFailed.exit_code if failed else 0,
        message=f"audit failed: {', '.join(failed)}" if failed else "audit passed",
    )


@flow(name="audit-undo-fix", persist_result=True)
def audit_undo_fix(
    run_id: str = P.described(..., "The audit run whose --fix-orphans to undo"),
    report_dir: str = P.report_dir(),
    database_secret: str | None = P.database_secret(),
) -> State:
    """Put back the rows an audit's --fix-orphans moved to quarantine."""
    try:
        url = resolve_database_url(database_secret)
        with Session(url) as session:
            restored = session.run("audit:undo-fix", checks.undo_fix, run_id)
    except UserFacingError as exc:
        return user_error(exc)
    report = {
        "title": f"Undo of audit run {run_id}'s --fix-orphans",
        "kind": "audit-undo-fix",
        "run_id": run_id,
        "status": "undone",
        "database": mask_url(url),
        "counts": {"rows_restored": restored},
        "notes": [f"{restored} rows restored from quarantine"],
    }
    return publish(
        report,
        report_dir,
        name="undo-fix",
        key="audit-undo-fix",
        description=report["title"],
        exit_code=0,
        message=report["notes"][0],
    )


def _summary(outcome: dict[str, Any]) -> str:
    r = outcome["report_data"]
    width = max(len(c["check"]) for c in r["checks"])
    lines = [f"{'check':{width}}  status  count  detail"]
    for c in r["checks"]:
        sample = f" (e.g. {c['sample']})" if c["sample"] else ""
        lines.append(f"{c['check']:{width}}  {c['status'].upper():6}  {c['count']:5}  {c['detail']}{sample}")
    lines.append(f"audit {'FAILED: ' + ', '.join(r['failed']) if r['failed'] else 'passed'}")
    return "\n".join(lines + closing_lines(outcome))


def main(argv: list[str] | None = None) -> int:
    from flows import cli

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["undo-fix"]:
        args = cli.run_id_command("python -m flows.audit undo-fix", audit_undo_fix.__doc__, argv[1:])
        if isinstance(args, int):
            return args
        return cli.run_flow(
            lambda: audit_undo_fix(args.run_id, report_dir=args.report_dir, return_state=True),
            as_json=args.json,
            summary=lambda outcome: "\n".join(closing_lines(outcome)),
        )
    parser = cli.Parser(
        prog="python -m flows.audit",
        description="Check the migrated data: orphans, NOT VALID constraints, required NULLs, duplicates, "
        "row schema, and (with --source) counts and checksums against the Phase 1 file.",
        epilog="Exit codes: 0 every check passed, 1 a check failed (named), 2 bad input, 3 database unavailable. "
        "Undo a --fix-orphans: python -m flows.audit undo-fix RUN_ID.",
    )
    parser.add_argument("--source", metavar="FILE", help="the Phase 1 file to compare the database with")
    parser.add_argument(
        "--fix-orphans",
        action="store_true",
        help="move orphan rows to quarantine (undoable), then check again",
    )
    cli.add_common(parser)
    args = parser.parse_args(argv)
    try:
        cli.apply_database_url(args.database_url)
        if args.source and not Path(args.source).is_file():
            raise InputError(f"{args.source}: no such file")
    except UserFacingError as exc:
        return cli.fail(str(exc), exc.exit_code)
    with cli.progress_bar(False):
        return cli.run_flow(
            lambda: audit(
                source=args.source, fix=args.fix_orphans, report_dir=args.report_dir, return_state=True
            ),
            as_json=args.json,
            summary=_summary,
        )


if __name__ == "__main__":
    from flows import cli

    cli.run_command(main)
