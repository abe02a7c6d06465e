"""`python -m flows.branches`: branches of the main database (--database-url names main). create,
delete, reset and rehearse are the flows of flows/branches.py; list and connection-string only ask
the provider (on Neon no local database is needed, nor a Prefect server)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from flows import cli, orchestrator
from flows import params as P

DESCRIPTION = (
    "Branches of the main database (--database-url names main): create, list, delete, reset, rehearse, "
    "connection-string."
)
EPILOG = "Exit codes: 0 done, 1 rehearsal failed (the branch is kept), 2 bad input, 3 database or API unavailable."


def _provider_flags(parser: Any) -> None:
    cli.add_provider(parser)
    cli.add_common(parser)


def _connection_flags(parser: Any) -> None:
    parser.add_argument("name")
    parser.add_argument("--pooled", action="store_true", help="the pooler's URI (Neon; not for migrations)")
    parser.add_argument("--database", metavar="D", help="database name (Neon; default $NEON_DATABASE or neondb)")
    parser.add_argument("--role", metavar="R", help="role name (default $NEON_ROLE or neondb_owner on Neon)")
    parser.add_argument("--reveal", action="store_true", help="print the password instead of ***")
    parser.add_argument("--env-file", metavar="PATH", help="write DATABASE_URL=… into this file, e.g. .env.dev")
    _provider_flags(parser)


COMMANDS = {
    "create": cli.Command(P.BranchCreate, "create a branch of main (or of --parent)", ("name",)),
    "list": cli.Command(None, "list the branches", extra=_provider_flags),
    "delete": cli.Command(P.BranchDelete, "delete a branch", ("name",)),
    "reset": cli.Command(P.BranchReset, "make a branch a fresh copy of its parent (e.g. refresh staging from main)", ("name",)),
    "rehearse": cli.Command(P.Rehearse, "rehearse a migration on a throwaway branch of main, then audit it", ("what",)),
    "connection-string": cli.Command(
        None, "print a branch's connection URI, or write it to an env file", extra=_connection_flags
    ),
}


def main(argv: list[str] | None = None) -> int:
    name, params, args = cli.parse("python -m flows.branches", DESCRIPTION, EPILOG, COMMANDS, argv)
    from tasks.branching import provider
    from tasks.errors import UserFacingError

    try:
        cli.apply_database_url(args.database_url)
        if params is None:
            branches = provider(args.provider, os.environ.get("DATABASE_URL"))
            return _connection_string(args, branches) if name == "connection-string" else _list(args, branches)
    except UserFacingError as exc:
        return cli.fail(str(exc), exc.exit_code)
    server = orchestrator.start()
    from flows import branches as flows_branches

    flow = {"create": flows_branches.branch_create, "delete": flows_branches.branch_delete,
            "reset": flows_branches.branch_reset, "rehearse": flows_branches.rehearse}[name]  # fmt: skip
    with cli.progress_bar(not args.json):
        return cli.run_flow(
            lambda: flow(**params.model_dump(), return_state=True), as_json=args.json, summary=summary, server=server
        )


def _list(args: Any, branches: Any) -> int:
    rows = [b.describe() for b in branches.list()]
    for note in getattr(branches, "notes", []):
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"main: {branches.main}")
        for b in rows:
            line = f"  {b['name']:40} parent {b['parent'] or '-':20} created {b['created_at'] or '-'}"
            print(line + (f" expires {b['expires_at']}" if b["expires_at"] else ""))
    return 0


def _connection_string(args: Any, branches: Any) -> int:
    from tasks.db import mask_url

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
        print("note: pooled is for the application; migrations need the direct URI (without --pooled)", file=sys.stderr)
    return 0


def write_env_file(path: Path, uri: str) -> None:
    """Set DATABASE_URL in a dotenv file (other lines kept), readable by its owner only."""
    from tasks.errors import InputError

    if "'" in uri or "\n" in uri:
        raise InputError("the connection URI cannot be written as one quoted dotenv line")
    lines = path.read_text().splitlines() if path.exists() else []
    lines = [line for line in lines if not line.startswith(("DATABASE_URL=", "export DATABASE_URL="))]
    lines.append(f"DATABASE_URL='{uri}'")  # quoted: the URI's & and ? are shell syntax
    fd, staged = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    os.replace(staged, path)


def summary(outcome: dict[str, Any]) -> str:
    from flows.outcome import closing_lines

    r = outcome["report_data"]
    lines = [f"{r['title']}: {r['status']}"]
    if r.get("branch"):
        b = r["branch"]
        expires = f", expires {b['expires_at']}" if b.get("expires_at") else ""
        lines.append(f"  branch {b['name']} (parent {b['parent']}, created {b['created_at']}{expires})")
    lines += [f"  {s['step']}: {s['status']} {s['message']} {s['report']}".rstrip() for s in r.get("steps", [])]
    return "\n".join(lines + closing_lines(outcome))


def run() -> None:
    cli.run_command(main)
