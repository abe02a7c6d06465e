"""Audit: prove after a migration (and every night) that the data still holds together.

The story of a run:
1. run every check against the live database: orphans, constraints left NOT VALID, invalid indexes,
   NULLs in required columns, duplicate legacy ids, and every `tasks` row through pandera in chunks;
2. given the Phase 1 file, compare row counts and per-record checksums with the run that migrated it;
3. with `fix_orphans`, move orphan rows into `quarantine` with the reason (one transaction; `undo-fix
   RUN_ID` puts them back) and check again;
4. report: the `audit-checks` table artifact, `audit-report`, and `runs/<run_id>/audit.json`.

A failing check fails the run and the command exits 1 naming it. `python -m flows.audit --help`
(flows/commands/audit.py).
"""

from __future__ import annotations

if __name__ == "__main__":  # the command line, which answers --help without importing Prefect
    from flows.commands import audit as command

    command.run()

import time
import uuid
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.states import State

from flows import params as P
from flows.outcome import publish, user_error
from flows.retry import db_task
from flows.settings import resolve_database_url
from tasks import audit as checks
from tasks.db import Session, mask_url
from tasks.errors import UserFacingError, VerificationFailed
from tasks.runs import finish, open_run

run_checks = db_task(checks.run_checks, "run-checks")
fix_orphans = db_task(checks.fix_orphans, "fix-orphans")


@flow(name="audit", persist_result=True)
@P.takes(P.Audit)
def audit(**params: Any) -> State:
    """Run the post-migration checks (and, with `fix`, quarantine orphans); fails when any check does."""
    p = P.of(P.Audit, params)
    source, fix, report_dir = p.source, p.fix, p.report_dir
    started = time.monotonic()
    try:
        url = resolve_database_url(p.database_secret)
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
@P.takes(P.AuditUndoFix)
def audit_undo_fix(**params: Any) -> State:
    """Put back the rows an audit's --fix-orphans moved to quarantine."""
    p = P.of(P.AuditUndoFix, params)
    run_id, report_dir = p.run_id, p.report_dir
    try:
        url = resolve_database_url(p.database_secret)
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
