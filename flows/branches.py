"""Branches: copies of the main database for development, staging, rehearsals and checkpoints.

- `create NAME [--parent P] [--at T] [--expires-in 7d]`, `list`, `delete NAME`, `reset NAME` (a fresh
  copy of its parent again: how staging is refreshed from main);
- `connection-string NAME [--pooled] [--database D] [--role R] [--reveal] [--env-file .env.NAME]`:
  the branch's URI (password masked unless --reveal), or `DATABASE_URL=` written for an environment;
- `rehearse`: branch main, run the schema upgrade (or the Phase 1 migration) on the branch, audit the
  branch, report, and drop the branch on success; on failure keep it and say where it is.

`--provider local` (default: databases on the same server, CREATE DATABASE … TEMPLATE) or `neon`
(Neon's API v2). The branch's URL reaches the flows it runs in-process, never as a parameter.
"""

from __future__ import annotations

if __name__ == "__main__":  # the command line, which answers --help without importing Prefect
    from flows.commands import branches as command

    command.run()

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import State

from flows import params as P
from flows.outcome import publish, user_error
from flows.settings import database_override, resolve_database_url
from tasks.branching import Branch, BranchProvider, provider
from tasks.branching.base import expiry
from tasks.db import mask_url
from tasks.errors import UserFacingError, VerificationFailed


def _report(kind: str, title: str, status: str, url: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": title,
        "kind": kind,
        "run_id": str(uuid.uuid4()),
        "status": status,
        "database": mask_url(url),
        **extra,
    }


def _notes(branches: BranchProvider) -> list[str]:
    return list(getattr(branches, "notes", []))


def _branch_op(p: P.BranchRun, act: Callable[[BranchProvider], tuple[str, str, Branch | None]]) -> State:
    """Resolve the provider, do one branch operation, report it: act() returns (title, status, branch)."""
    report_dir = p.report_dir
    try:
        url = resolve_database_url(p.database_secret)
        branches = provider(p.branch_provider, url)
        title, status, made = act(branches)
    except UserFacingError as exc:
        return user_error(exc)
    extra = {"branch": made.describe()} if made else {}
    report = _report("branch", title, status, url, notes=_notes(branches), **extra)
    return publish(
        report, report_dir, name="branch", key="branch-report", description=title, exit_code=0, message=title
    )


@flow(name="branch-create", persist_result=True)
@P.takes(P.BranchCreate)
def branch_create(**params: Any) -> State:
    """Create branch `name` from `parent` (default main), optionally at a timestamp or LSN (Neon)."""
    p = P.of(P.BranchCreate, params)
    name, parent, at, expires_in = p.name, p.parent, p.at, p.expires_in

    def act(branches: BranchProvider) -> tuple[str, str, Branch | None]:
        made = branches.create(name, parent or branches.main, at=at, expires_at=expiry(expires_in))
        return f"Branch {name} created", "created", made

    return _branch_op(p, act)


@flow(name="branch-delete", persist_result=True)
@P.takes(P.BranchDelete)
def branch_delete(**params: Any) -> State:
    """Delete branch `name` (never main)."""
    p = P.of(P.BranchDelete, params)
    name = p.name

    def act(branches: BranchProvider) -> tuple[str, str, Branch | None]:
        branches.delete(name)
        return f"Branch {name} deleted", "deleted", None

    return _branch_op(p, act)


@flow(name="branch-reset", persist_result=True)
@P.takes(P.BranchReset)
def branch_reset(**params: Any) -> State:
    """Make branch `name` a fresh copy of its parent (the weekly staging refresh from main)."""
    p = P.of(P.BranchReset, params)
    name = p.name

    def act(branches: BranchProvider) -> tuple[str, str, Branch | None]:
        made = branches.reset(name)
        return f"Branch {name} reset from {made.parent}", "reset", made

    return _branch_op(p, act)


@flow(name="rehearse", persist_result=True)
@P.takes(P.Rehearse)
def rehearse(**params: Any) -> State:
    """Rehearse a migration on a fresh branch of main, audit the result, and report."""
    from flows.audit import audit
    from flows.phase1 import phase1_migration
    from flows.schema import schema_upgrade

    logger = get_run_logger()
    try:
        p = P.of(P.Rehearse, params)  # a phase1 rehearsal has its source
        what, target, source, keep, report_dir = p.what, p.target, p.source, p.keep, p.report_dir
        url = resolve_database_url(p.database_secret)
        branches = provider(p.branch_provider, url)
        name = f"{branches.main}-rehearsal-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
        made = branches.create(name, branches.main, expires_at=expiry(p.expires_in))
        branch_url = branches.url(name)
    except UserFacingError as exc:
        return user_error(exc)
    with database_override(branch_url):
        if what == "schema":
            migration = schema_upgrade(  # a throwaway branch: no application to wait for
                target=target, complete=True, checkpoint=False, report_dir=report_dir, return_state=True
            )
        else:
            migration = phase1_migration(
                source=source, checkpoint=False, report_dir=report_dir, return_state=True
            )
        checked = audit(source=source if what == "phase1" else None, report_dir=report_dir, return_state=True)
    results = {
        "migration": _outcome(migration),
        "audit": _outcome(checked),
    }
    ok = migration.is_completed() and checked.is_completed()
    notes = _notes(branches)
    if ok and not keep:
        branches.delete(name)
        notes.append(f"rehearsal passed; branch {name} dropped")
    else:
        where = f"branch {name} kept at {mask_url(branch_url)}"
        notes.append(where if ok else f"rehearsal FAILED; {where} for inspection")
        logger.warning(notes[-1])
    report = _report(
        "rehearsal",
        f"Rehearsal of the {'schema upgrade to ' + target if what == 'schema' else 'Phase 1 migration'} on a branch",
        "passed" if ok else "failed",
        url,
        branch=made.describe(),
        steps=[{"step": k, **v} for k, v in results.items()],
        verification={
            "ok": ok,
            "problems": [f"{k}: {v['message']}" for k, v in results.items() if v["status"] != "COMPLETED"],
        },
        notes=notes,
    )
    return publish(
        report,
        report_dir,
        name="rehearsal",
        key="rehearsal-report",
        description=report["title"],
        exit_code=0 if ok else VerificationFailed.exit_code,
        message=report["title"] + (" passed" if ok else " failed"),
    )


def _outcome(state: State) -> dict[str, Any]:
    data = state.result(raise_on_failure=False)
    report = data.get("report") if isinstance(data, dict) else None
    return {"status": state.type.value, "message": state.message or "", "report": report or ""}
