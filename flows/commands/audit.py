"""`python -m flows.audit`: check the migrated data; `undo-fix RUN_ID` puts back what --fix-orphans moved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flows import cli, orchestrator
from flows import params as P
from tasks.errors import UserFacingError

DESCRIPTION = (
    "Check the migrated data: orphans, NOT VALID constraints, required NULLs, duplicates, row schema, "
    "and (with --source) counts and checksums against the Phase 1 file."
)
EPILOG = "Exit codes: 0 every check passed, 1 a check failed (named), 2 bad input, 3 database unavailable."
COMMANDS = {
    None: cli.Command(P.Audit, "run every check"),
    "undo-fix": cli.Command(P.AuditUndoFix, "put back the rows an audit's --fix-orphans moved", ("run_id",)),
}


def main(argv: list[str] | None = None) -> int:
    name, params, args = cli.parse("python -m flows.audit", DESCRIPTION, EPILOG, COMMANDS, argv)
    assert params is not None
    try:
        cli.apply_database_url(args.database_url)
        source = getattr(params, "source", None)
        if source and not Path(source).is_file():
            return cli.fail(f"{source}: no such file")
    except UserFacingError as exc:
        return cli.fail(str(exc), exc.exit_code)
    server = orchestrator.start()
    from flows.audit import audit, audit_undo_fix
    from flows.outcome import closing_lines

    flow, shown = (audit, summary) if name is None else (audit_undo_fix, lambda o: "\n".join(closing_lines(o)))
    with cli.progress_bar(False):
        return cli.run_flow(
            lambda: flow(**params.model_dump(), return_state=True), as_json=args.json, summary=shown, server=server
        )


def summary(outcome: dict[str, Any]) -> str:
    from flows.outcome import closing_lines

    r = outcome["report_data"]
    width = max(len(c["check"]) for c in r["checks"])
    lines = [f"{'check':{width}}  status  count  detail"]
    for c in r["checks"]:
        sample = f" (e.g. {c['sample']})" if c["sample"] else ""
        lines.append(f"{c['check']:{width}}  {c['status'].upper():6}  {c['count']:5}  {c['detail']}{sample}")
    lines.append(f"audit {'FAILED: ' + ', '.join(r['failed']) if r['failed'] else 'passed'}")
    return "\n".join(lines + closing_lines(outcome))


def run() -> None:
    cli.run_command(main)
