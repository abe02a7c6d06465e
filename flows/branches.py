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

import os
import sys
import tempfile
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.states import State

from flows import params as P
from flows.outcome import closing_lines, publish, user_error
from flows.settings import database_override, resolve_database_url
from tasks.branching import Branch, BranchProvider, provider
from tasks.branching.base import expiry
from tasks.db import mask_url
from tasks.errors import InputError, UserFacingError, VerificationFailed


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


def _branch_op(
    branch_provider: str | None,
    report_dir: str,
    database_secret: str | None,
    act: Callable[[BranchProvider], tuple[str, str, Branch | None]],
) -> State:
    """Resolve the provider, do one branch operation, report it: act() returns (title, status, branch)."""
    try:
        url = resolve_database_url(database_secret)
        branches = provider(branch_provider, url)
        title, status, made = act(branches)
    except UserFacingError as exc:
        return user_error(exc)
    extra = {"branch": made.describe()} if made else {}
    report = _report("branch", title, status, url, notes=_notes(branches), **extra)
    return publish(
        report, report_dir, name="branch", key="branch-report", description=title, exit_code=0, message=title
    )


@flow(name="branch-create", persist_result=True)
def branch_create(
    name: str = P.described(..., "Name of the new branch"),
    parent: str | None = P.described(None, "Branch to copy (default: main)"),
    at: str | None = P.described(None, "Timestamp or LSN of the parent to branch at (Neon only)"),
    expires_in: str | None = P.described(None, "Delete the branch after this long: 7d, 12h, 30m, 2w"),
    branch_provider: P.Provider | None = P.branch_provider(),
    report_dir: str = P.report_dir(),
    database_secret: str | None = P.database_secret(),
) -> State:
    """Create branch `name` from `parent` (default main), optionally at a timestamp or LSN (Neon)."""

    def act(branches: BranchProvider) -> tuple[str, str, Branch | None]:
        made = branches.create(name, parent or branches.main, at=at, expires_at=expiry(expires_in))
        return f"Branch {name} created", "created", made

    return _branch_op(branch_provider, report_dir, database_secret, act)


@flow(name="branch-delete", persist_result=True)
def branch_delete(
    name: str = P.described(..., "The branch to delete (never main)"),
    branch_provider: P.Provider | None = P.branch_provider(),
    report_dir: str = P.report_dir(),
    database_secret: str | None = P.database_secret(),
) -> State:
    """Delete branch `name` (never main)."""

    def act(branches: BranchProvider) -> tuple[str, str, Branch | None]:
        branches.delete(name)
        return f"Branch {name} deleted", "deleted", None

    return _branch_op(branch_provider, report_dir, database_secret, act)


@flow(name="branch-reset", persist_result=True)
def branch_reset(
    name: str = P.described("staging", "The branch to make a fresh copy of its parent"),
    branch_provider: P.Provider | None = P.branch_provider(),
    report_dir: str = P.report_dir(),
    database_secret: str | None = P.database_secret(),
) -> State:
    """Make branch `name` a fresh copy of its parent (the weekly staging refresh from main)."""

    def act(branches: BranchProvider) -> tuple[str, str, Branch | None]:
        made = branches.reset(name)
        return f"Branch {name} reset from {made.parent}", "reset", made

    return _branch_op(branch_provider, report_dir, database_secret, act)


@flow(name="rehearse", persist_result=True)
def rehearse(
    what: Literal["schema", "phase1"] = P.described(
        "schema", "What to rehearse: the schema upgrade or the Phase 1 migration"
    ),
    target: str = P.described("head", "Schema revision to rehearse"),
    source: str | None = P.described(None, "The Phase 1 file, for a phase1 rehearsal (path on the worker)"),
    keep: bool = P.described(False, "Keep the branch even when the rehearsal passes"),
    expires_in: str | None = P.described(
        None, "Give the branch an expiry (7d, 12h…), so a kept one goes away on its own"
    ),
    branch_provider: P.Provider | None = P.branch_provider(),
    report_dir: str = P.report_dir(),
    database_secret: str | None = P.database_secret(),
) -> State:
    """Rehearse a migration on a fresh branch of main, audit the result, and report."""
    from flows.audit import audit
    from flows.phase1 import phase1_migration
    from flows.schema import schema_upgrade

    logger = get_run_logger()
    try:
        if what == "phase1" and not source:
            raise InputError("a Phase 1 rehearsal needs the source file (--source)")
        url = resolve_database_url(database_secret)
        branches = provider(branch_provider, url)
        name = f"{branches.main}-rehearsal-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
        made = branches.create(name, branches.main, expires_at=expiry(expires_in))
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


def _summary(outcome: dict[str, Any]) -> str:
    r = outcome["report_data"]
    lines = [f"{r['title']}: {r['status']}"]
    if r.get("branch"):
        b = r["branch"]
        expires = f", expires {b['expires_at']}" if b.get("expires_at") else ""
        lines.append(f"  branch {b['name']} (parent {b['parent']}, created {b['created_at']}{expires})")
    lines += [
        f"  {s['step']}: {s['status']} {s['message']} {s['report']}".rstrip() for s in r.get("steps", [])
    ]
    return "\n".join(lines + closing_lines(outcome))


def write_env_file(path: Path, uri: str) -> None:
    """Set DATABASE_URL in a dotenv file (other lines kept), readable by its owner only."""
    if "'" in uri or "\n" in uri:
        raise InputError("the connection URI cannot be written as one quoted dotenv line")
    lines = path.read_text().splitlines() if path.exists() else []
    lines = [line for line in lines if not line.startswith(("DATABASE_URL=", "export DATABASE_URL="))]
    lines.append(f"DATABASE_URL='{uri}'")  # quoted: the URI's & and ? are shell syntax
    fd, staged = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    os.replace(staged, path)


def _connection_string(args: Any, branches: BranchProvider) -> int:
    import json

    uri = branches.connection_uri(args.name, pooled=args.pooled, database=args.database, role=args.role)
    if args.env_file:
        write_env_file(Path(args.env_file), uri)
        print(f"DATABASE_URL of branch {args.name} written to {args.env_file}", file=sys.stderr)
    shown = uri if args.reveal else mask_url(uri)
    if args.json:
        print(json.dumps({"branch": args.name, "uri": shown, "pooled": args.pooled, "env_file": args.env_file}))
    else:
        print(shown)
    if args.pooled:
        print(
            "note: pooled is for the application; migrations need the direct URI (without --pooled)",
            file=sys.stderr,
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    import json

    from flows import cli

    parser = cli.Parser(
        prog="python -m flows.branches",
        description="Branches of the main database (--database-url names main): create, list, delete, reset, "
        "rehearse, connection-string.",
        epilog="Exit codes: 0 done, 1 rehearsal failed (the branch is kept), 2 bad input, 3 database or API unavailable.",
    )
    commands = cli.subcommands(parser)
    sub = {
        name: commands.add_parser(name, help=text, description=text)
        for name, text in (
            ("create", "create a branch of main (or of --parent)"),
            ("list", "list the branches"),
            ("delete", "delete a branch"),
            ("reset", "make a branch a fresh copy of its parent (e.g. refresh staging from main)"),
            ("rehearse", "rehearse a migration on a throwaway branch of main, then audit it"),
            ("connection-string", "print a branch's connection URI, or write it to an env file"),
        )
    }
    for name in ("create", "delete", "reset", "connection-string"):
        sub[name].add_argument("name")
    sub["create"].add_argument("--parent", help="the branch to copy (default: main)")
    sub["create"].add_argument("--at", help="a timestamp or LSN of the parent to branch at (Neon only)")
    for name in ("create", "rehearse"):
        sub[name].add_argument(
            "--expires-in", metavar="DURATION", help="delete the branch after 7d, 12h, 30m, 2w (Neon's expires_at)"
        )
    cs = sub["connection-string"]
    cs.add_argument("--pooled", action="store_true", help="the pooler's URI (Neon; not for migrations)")
    cs.add_argument("--database", metavar="D", help="database name (Neon; default $NEON_DATABASE or neondb)")
    cs.add_argument("--role", metavar="R", help="role name (default $NEON_ROLE or neondb_owner on Neon)")
    cs.add_argument("--reveal", action="store_true", help="print the password instead of ***")
    cs.add_argument("--env-file", metavar="PATH", help="write DATABASE_URL=… into this file, e.g. .env.dev")
    sub["rehearse"].add_argument("what", nargs="?", choices=["schema", "phase1"], default="schema")
    sub["rehearse"].add_argument(
        "--target", default="head", help="schema revision to rehearse (default head)"
    )
    sub["rehearse"].add_argument("--source", help="the Phase 1 file, for a phase1 rehearsal")
    sub["rehearse"].add_argument(
        "--keep", action="store_true", help="keep the branch even when the rehearsal passes"
    )
    for p in sub.values():
        cli.add_provider(p)
        cli.add_common(p)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cli.apply_database_url(args.database_url)
        if args.command in ("list", "connection-string"):
            # on Neon no local database is needed (nor the embedded server started) to ask the API
            branches = provider(args.provider, os.environ.get("DATABASE_URL"))
            if args.command == "connection-string":
                return _connection_string(args, branches)
            rows = [b.describe() for b in branches.list()]
            for note in _notes(branches):
                print(f"note: {note}", file=sys.stderr)
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                print(f"main: {branches.main}")
                for b in rows:
                    line = f"  {b['name']:40} parent {b['parent'] or '-':20} created {b['created_at'] or '-'}"
                    print(line + (f" expires {b['expires_at']}" if b["expires_at"] else ""))
            return 0
    except UserFacingError as exc:
        return cli.fail(str(exc), exc.exit_code)
    common = {"branch_provider": args.provider, "report_dir": args.report_dir, "return_state": True}
    calls = {
        "create": lambda: branch_create(
            args.name, parent=args.parent, at=args.at, expires_in=args.expires_in, **common
        ),
        "delete": lambda: branch_delete(args.name, **common),
        "reset": lambda: branch_reset(args.name, **common),
        "rehearse": lambda: rehearse(
            what=args.what,
            target=args.target,
            source=args.source,
            keep=args.keep,
            expires_in=args.expires_in,
            **common,
        ),
    }
    with cli.progress_bar(not args.json):
        return cli.run_flow(calls[args.command], as_json=args.json, summary=_summary)


if __name__ == "__main__":
    from flows import cli

    cli.run_command(main)
