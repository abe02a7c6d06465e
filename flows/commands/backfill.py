"""`python -m flows.backfill`: fill a column where it IS NULL, in small resumable batches."""

from __future__ import annotations

import sys
from typing import Any

from flows import cli, orchestrator
from flows import params as P

EPILOG = "Exit codes: 0 done (or paused at --max-runtime), 2 bad input or usage, 3 database unavailable or busy."


def main(argv: list[str] | None = None) -> int:
    parser = cli.Parser(
        prog="python -m flows.backfill",
        description="Set a column to a value where it IS NULL, in small resumable batches on a live table.",
        epilog=EPILOG,
    )
    cli.add_parameters(parser, P.Backfill, positional=("name",))
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    params = cli.parameters(parser, P.Backfill, args)
    server = orchestrator.start()  # it boots while the flow's modules load
    from flows.backfill import backfill, preflight
    from tasks.backfill import check
    from tasks.db import database_url
    from tasks.errors import UserFacingError

    try:
        cli.apply_database_url(args.database_url)
        spec, _ = preflight(params)
        check(database_url(), spec)  # bad names exit here, before the flow runs
    except UserFacingError as exc:
        return cli.refuse(exc, server)
    with cli.progress_bar(not args.json):
        return cli.run_flow(
            lambda: backfill(**params.model_dump(), return_state=True),
            as_json=args.json,
            summary=summary,
            server=server,
        )


def summary(outcome: dict[str, Any]) -> str:
    r = outcome["report_data"]
    c, t = r["counts"], r["timing"]
    return (
        f"backfill {r['backfill']['table']}.{r['backfill']['column']} {r['status']}: {c['rows_done']:,} rows in "
        f"{c['batches']:,} batches, {t['duration_s']:.1f} s ({t['rows_per_s']:,.0f} rows/s), "
        f"{c['rows_still_null']:,} still NULL\nreport: {outcome['report']}"
    )


def run() -> None:
    cli.run_command(main)
