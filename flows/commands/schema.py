"""`python -m flows.schema`: roll schema revisions out without downtime, old and new application
versions side by side. upgrade, complete, rollback and downgrade are the flows of flows/schema.py
(their flags built from their parameters); status, sql and search-path only read."""

from __future__ import annotations

import json
from typing import Any

from flows import cli, orchestrator
from flows import params as P

DESCRIPTION = "Roll schema revisions out without downtime: old and new application versions side by side."
EPILOG = (
    "Exit codes: 0 done, 1 a step or check failed (what it did was undone), 2 bad input or a step that "
    "must wait (rows still NULL, another revision rolling out), 3 database unavailable, busy, or a lock "
    "timeout outlasted the retries."
)
RUNS = {
    "upgrade": cli.Command(P.SchemaUpgrade, "start and backfill each revision up to TARGET (default head)", ("target",)),
    "complete": cli.Command(P.SchemaRun, "complete the revision rolling out, once every application instance runs it"),
    "rollback": cli.Command(P.SchemaRun, "undo the start of the revision rolling out, leaving no trace of it"),
    "downgrade": cli.Command(P.SchemaDowngrade, "downgrade completed revisions to TARGET", ("target",)),
}
READS = {
    "search-path": cli.Command(
        None,
        "the search_path an application built against REVISION sets",
        extra=lambda p: p.add_argument("revision", nargs="?", default="head"),
    ),
    "status": cli.Command(None, "where the database stands, the live versions, what is pending", extra=cli.add_common),
    "sql": cli.Command(
        None,
        "the SQL from the current revision to TARGET (start, backfill, complete)",
        extra=lambda p: (p.add_argument("target", nargs="?", default="head"), cli.add_common(p)),
    ),
}


def main(argv: list[str] | None = None) -> int:
    name, params, args = cli.parse("python -m flows.schema", DESCRIPTION, EPILOG, {**READS, **RUNS}, argv)
    return _read(args) if params is None else _run(args, params)


def _run(args: Any, params: P.Parameters) -> int:
    server = orchestrator.start()  # it boots while the flow's modules load
    from flows import schema as flows_schema
    from tasks import schema
    from tasks.errors import UserFacingError

    try:
        cli.apply_database_url(args.database_url)
        if isinstance(params, P.SchemaUpgrade | P.SchemaDowngrade):
            schema.resolve(params.target)  # an unknown revision exits here, before the flow runs
    except UserFacingError as exc:
        return cli.refuse(exc, server)
    flow = getattr(flows_schema, f"schema_{args.command}")
    with cli.progress_bar(not args.json):
        return cli.run_flow(
            lambda: flow(**params.model_dump(), return_state=True), as_json=args.json, summary=summary, server=server
        )


def _read(args: Any) -> int:
    from tasks import schema
    from tasks.db import database_url
    from tasks.errors import UserFacingError

    try:
        if args.command == "search-path":
            print(schema.search_path(schema.resolve(args.revision)))
            return 0
        cli.apply_database_url(args.database_url)
        url = database_url()
        info = status(url)
        if args.command == "sql":
            from flows.schema import step_sql

            actions, _ = schema.plan_upgrade(info["current"], schema.pending(url), schema.resolve(args.target), True)
            text = "".join(f"-- {a.label}\n{step_sql(a)}" for a in actions if a.verb != "backfill")
            print(text or f"-- nothing to do: the database is at {info['current']}")
        elif args.json:
            print(json.dumps(info, indent=2))
        else:
            _print_status(info)
        return 0
    except UserFacingError as exc:
        return cli.fail(str(exc), exc.exit_code)


def summary(outcome: dict[str, Any]) -> str:
    from flows.outcome import closing_lines

    r = outcome["report_data"]
    at = r["schema"]
    live = f", {at['live']} live beside the previous version" if at.get("live") else ""
    lines = [
        f"{r['title']}: {r['status']} ({at['before'] or 'base'} -> {at['after'] or 'base'}{live}, "
        f"{r['timing']['duration_s']:.1f} s)"
    ]
    lines += [f"  {s['action']:28} {s['status']:8} {s['doc']}" for s in r["steps"]]
    if r.get("checkpoint"):
        lines.append(f"checkpoint branch: {r['checkpoint']['name']}")
    return "\n".join(lines + closing_lines(outcome))


def status(url: str) -> dict[str, Any]:
    from tasks import schema
    from tasks.db import mask_url

    current, live = schema.current_revision(url), schema.live_versions(url)
    _, pending = schema.path(current, schema.head_revision())
    return {
        "database": mask_url(url),
        "current": current,
        "head": schema.head_revision(),
        "versions": [
            {"revision": r, "state": state, "search_path": schema.search_path(r)} for r, state in live.items()
        ],
        "pending": [
            {"revision": s.revision, "breaking": s.breaking, "backfills": [b.name for b in s.backfills], "doc": s.title}
            for s in pending
        ],
    }


def _print_status(info: dict[str, Any]) -> None:
    print(f"database {info['database']}: at {info['current'] or 'base'}, head is {info['head']}")
    for v in info["versions"]:
        state = "rolling out (complete or rollback)" if v["state"] == "started" else "live"
        print(f"  version {v['revision']} {state}: search_path={v['search_path']}")
    for p in info["pending"]:
        extra = f" (backfills: {', '.join(p['backfills'])})" if p["backfills"] else ""
        print(f"  pending {p['revision']} {'breaking' if p['breaking'] else 'additive':8} {p['doc']}{extra}")


def run() -> None:
    cli.run_command(main)
