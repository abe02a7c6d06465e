"""`python -m flows.rollback`: roll the database back (schema downgrade) or restore it from a branch or
a point in time, verified."""

from __future__ import annotations

from typing import Any

from flows import cli, orchestrator
from flows import params as P

DESCRIPTION = "Roll the database back (schema downgrade) or restore it from a branch or a point in time, verified."
EPILOG = "Exit codes: 0 done and verified, 1 verification failed, 2 bad input, 3 database or API unavailable."
COMMANDS = {
    "downgrade": cli.Command(
        P.RollbackDowngrade, "downgrade to REVISION, or STEPS revisions back, verified against a checkpoint", ("to",)
    ),
    "restore": cli.Command(P.RollbackRestore, "main becomes a branch's content, or its own past at --timestamp (Neon)"),
}


def main(argv: list[str] | None = None) -> int:
    name, params, args = cli.parse("python -m flows.rollback", DESCRIPTION, EPILOG, COMMANDS, argv)
    assert params is not None
    from tasks.errors import UserFacingError

    try:
        cli.apply_database_url(args.database_url)
    except UserFacingError as exc:
        return cli.fail(str(exc), exc.exit_code)
    server = orchestrator.start()
    from flows import rollback

    flow = rollback.rollback_downgrade if name == "downgrade" else rollback.rollback_restore
    with cli.progress_bar(not args.json):
        return cli.run_flow(
            lambda: flow(**params.model_dump(), return_state=True), as_json=args.json, summary=summary, server=server
        )


def summary(outcome: dict[str, Any]) -> str:
    from flows.commands import schema
    from flows.outcome import closing_lines

    r = outcome["report_data"]
    if r["kind"] != "rollback":  # the schema flow refused or failed: its outcome
        return schema.summary(outcome)
    return "\n".join([f"{r['title']}: {r['status']}", *closing_lines(outcome)])


def run() -> None:
    cli.run_command(main)
