"""Rollback and recovery, each one verified by whole-table checksums against its source.

- `downgrade STEPS|REVISION`: take a checkpoint branch, downgrade the schema (the schema flow's
  rules: a data-losing downgrade needs --allow-data-loss), then prove the schema is at the target and
  every table holds exactly what the checkpoint holds, in every column that still exists;
- `restore --from-branch NAME`: main becomes the branch's content (its previous state is kept as
  `<main>-before-restore-<UTC time>`), proven equal to the branch table by table;
- `restore --timestamp T` (Neon): main becomes its own state at T (previous state preserved),
  proven equal to a branch taken of the preserved history at T.

Undoing one Phase 1 run precisely is `python -m flows.phase1 rollback RUN_ID`.
"""

from __future__ import annotations

if __name__ == "__main__":  # the command line, which answers --help without importing Prefect
    from flows.commands import rollback as command

    command.run()

import uuid
from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.states import Failed, State

from flows import params as P
from flows.outcome import publish, user_error
from flows.settings import resolve_database_url
from tasks import schema
from tasks.branching import provider
from tasks.db import connect, mask_url, retrying
from tasks.errors import InputError, UserFacingError, VerificationFailed
from tasks.verify import compare_fingerprints, table_columns, table_fingerprints


def steps_back(current: str | None, to: str) -> str:
    """`to` as a revision: a revision id, or a number N meaning N revisions below the current one."""
    known = {s.revision for s in schema.scripts().walk_revisions()}
    if to in known or not to.isdigit():
        return schema.resolve(to) or "base"
    n = int(to)
    _, down = schema.path(current, None)
    if n < 1 or n > len(down):
        raise InputError(
            f"cannot go {n} steps back from {current or 'base'} ({len(down)} revisions below it)"
        )
    return down[n - 1].down_revision or "base"


def fingerprints(url: str, columns: dict[str, list[str]] | None = None) -> dict[str, str]:
    """Every table (bookkeeping included unless columns are given) of the database at url."""

    def read() -> dict[str, str]:
        with connect(url, autocommit=True, step="rollback:verify") as conn:
            return table_fingerprints(
                conn, columns if columns is not None else table_columns(conn, bookkeeping=True)
            )

    return retrying(read, what="fingerprint the tables")


def columns_of(url: str) -> dict[str, list[str]]:
    def read() -> dict[str, list[str]]:
        with connect(url, autocommit=True, step="rollback:verify") as conn:
            return table_columns(conn)

    return retrying(read, what="read the columns")


def _publish(report: dict[str, Any], report_dir: str) -> State:
    ok = report["verification"]["ok"]
    return publish(
        report,
        report_dir,
        name="rollback",
        key="rollback-report",
        description=report["title"],
        exit_code=0 if ok else VerificationFailed.exit_code,
        message=report["title"]
        + (" verified" if ok else ": " + "; ".join(report["verification"]["problems"])),
    )


@flow(name="rollback-downgrade", persist_result=True)
@P.takes(P.RollbackDowngrade)
def rollback_downgrade(**params: Any) -> State:
    """Downgrade to a revision (or N steps back) and verify against a checkpoint taken first."""
    p = P.of(P.RollbackDowngrade, params)
    to, allow_data_loss, branch_provider, report_dir = p.to, p.allow_data_loss, p.branch_provider, p.report_dir
    from flows.schema import schema_downgrade

    try:
        url = resolve_database_url(p.database_secret)
        before = schema.current_revision(url)
        target = steps_back(before, to)
    except UserFacingError as exc:
        return user_error(exc)
    moved = schema_downgrade(
        target=target,
        allow_data_loss=allow_data_loss,
        checkpoint=True,
        branch_provider=branch_provider,
        report_dir=report_dir,
        return_state=True,
    )
    outcome = moved.result(raise_on_failure=False)
    if not moved.is_completed():  # refused or failed: the schema flow's outcome and report say why
        return Failed(message=moved.message, data=outcome)
    checkpoint = outcome["report_data"]["checkpoint"]
    after = schema.current_revision(url)
    branch_url = provider(branch_provider, url).url(checkpoint["name"])
    kept = columns_of(url)
    old = columns_of(branch_url)
    common = {t: [c for c in old[t] if c in kept[t]] for t in old if t in kept}
    problems = compare_fingerprints(fingerprints(branch_url, common), fingerprints(url, common))
    if (after or "base") != target:
        problems.insert(0, f"schema is at {after or 'base'}, not {target}")
    dropped = {t: [c for c in old[t] if c not in kept.get(t, [])] for t in old if t in kept}
    gone = sorted(t for t in old if t not in kept)
    report = {
        "title": f"Rollback: downgrade to {target}",
        "kind": "rollback",
        "run_id": str(uuid.uuid4()),
        "status": "verified" if not problems else "verification_failed",
        "database": mask_url(url),
        "schema": {"before": before, "after": after, "target": target},
        "checkpoint": checkpoint,
        "verification": {"ok": not problems, "problems": problems},
        "notes": [f"columns dropped by the downgrade: {t}.{', '.join(cs)}" for t, cs in dropped.items() if cs]
        + ([f"tables dropped by the downgrade: {', '.join(gone)}"] if gone else [])
        + [f"schema flow report: {outcome['report']}"],
    }
    return _publish(report, report_dir)


@flow(name="rollback-restore", persist_result=True)
@P.takes(P.RollbackRestore)
def rollback_restore(**params: Any) -> State:
    """Make main the content of a branch (or, on Neon, of its own past at a timestamp) and verify."""
    try:
        p = P.of(P.RollbackRestore, params)  # exactly one of from_branch and timestamp
        from_branch, timestamp, branch_provider, report_dir = p.from_branch, p.timestamp, p.branch_provider, p.report_dir
        url = resolve_database_url(p.database_secret)
        branches = provider(branch_provider, url)
        branches.check_main(url)
        main = branches.main
        preserved = f"{main}-before-restore-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
        if from_branch:
            source_url = branches.url(from_branch)
            expected = fingerprints(source_url)
            expected_revision = schema.current_revision(source_url)
            branches.restore(main, source_branch=from_branch, preserve_under_name=preserved)
            source = from_branch
        else:
            branches.restore(main, timestamp=timestamp, preserve_under_name=preserved)
            # The preserved branch holds main's old history: a branch of it at T is main as it was at T.
            probe = f"{main}-verify-{uuid.uuid4().hex[:6]}"
            branches.create(probe, preserved, at=timestamp)
            try:
                probe_url = branches.url(probe)
                expected, expected_revision = fingerprints(probe_url), schema.current_revision(probe_url)
            finally:
                branches.delete(probe)
            source = f"{main} at {timestamp}"
        actual = fingerprints(url)
        revision = schema.current_revision(url)
    except UserFacingError as exc:
        return user_error(exc)
    problems = compare_fingerprints(expected, actual)
    if revision != expected_revision:
        problems.insert(0, f"schema is at {revision}, the source at {expected_revision}")
    report = {
        "title": f"Restore of {main} from {source}",
        "kind": "rollback",
        "run_id": str(uuid.uuid4()),
        "status": "verified" if not problems else "verification_failed",
        "database": mask_url(url),
        "schema": {"after": revision, "source": expected_revision},
        "checkpoint": {"name": preserved, "parent": main},
        "counts": {t: int(v.split(":")[0]) for t, v in actual.items()},
        "verification": {"ok": not problems, "problems": problems},
        "notes": [f"main's previous state is kept as branch {preserved}"]
        + list(getattr(branches, "notes", [])),
    }
    return _publish(report, report_dir)
