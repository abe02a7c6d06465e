"""Backfill: fill a column wherever it IS NULL, in small batches, while the application keeps writing.

The story of a run:
1. name the work: a backfill a revision declares (`tasks.priority`, `tasks.status`…) or `--table/--column/--value`,
   checked against the live catalog;
2. resume the checkpoint of an unfinished run of the same backfill, or start at the first key;
3. walk the primary key in batches, each its own short transaction with its checkpoint, the batch
   size adapting to stay near the target duration; rows others hold locked are visited again later;
4. stop when no NULL is left (or cleanly at `max_runtime`: the next scheduled run carries on);
5. report: rows done, rows/s, batches as `backfill-progress` while it runs, `backfill-report` and
   `runs/<run_id>/report.json` at the end.

`python -m flows.backfill --help` for the command line.
"""

from __future__ import annotations

import signal
import sys
import uuid
from typing import Any

from prefect import flow
from prefect.states import State

from flows import params as P
from flows import progress as progress_events
from flows.outcome import interrupted, interruption, publish, user_error
from flows.retry import db_task
from flows.settings import resolve_database_url
from tasks.backfill import BackfillSpec, Progress, Result, Settings, check, named, run_backfill
from tasks.db import Session, database_url, mask_url
from tasks.errors import InputError, UserFacingError, first_line
from tasks.runs import finish, open_run

run_engine = db_task(run_backfill, "run-backfill")


def spec_for(name: str | None, table: str | None, column: str | None, value: str | None) -> BackfillSpec:
    if name and (table or column or value is not None):
        raise InputError("give a backfill name or --table/--column/--value, not both")
    if name:
        return named(name)
    if not (table and column and value is not None):
        raise InputError("say what to fill: a backfill name, or all of --table, --column and --value")
    return BackfillSpec(table, column, value)


@flow(name="backfill", persist_result=True)
def backfill(
    name: str | None = P.described(
        None, "A backfill a revision declares (tasks.priority, tasks.status); or give table/column/value"
    ),
    table: str | None = P.described(None, "Table to fill (checked against the catalog)"),
    column: str | None = P.described(None, "Column to set where it IS NULL"),
    value: str | None = P.described(
        None, "The value, as PostgreSQL text for the column's type (e.g. {} for text[])"
    ),
    batch_size: int = P.described(2_000, "First batch size; it adapts from there", ge=1),
    target_batch_seconds: float = P.described(0.05, "The batch size adapts to keep a batch near this", gt=0),
    pause: float = P.described(0.0, "Seconds to sleep between batches", ge=0),
    max_runtime: float | None = P.described(
        None, "Stop cleanly after this many seconds; the next run resumes", gt=0
    ),
    lock_timeout: str = P.lock_timeout(),
    report_dir: str = P.report_dir(),
    database_secret: str | None = P.database_secret(),
) -> State:
    """Set a column to a value where it is NULL, in resumable batches; returns the outcome."""
    try:
        spec = spec_for(name, table, column, value)
        settings = Settings(
            batch_size=batch_size,
            target_seconds=target_batch_seconds,
            pause=pause,
            max_runtime=max_runtime,
            lock_timeout=lock_timeout,
        )
        settings.check()
        url = resolve_database_url(database_secret)
        with Session(url) as session:  # its steps are units: a lost session is replaced, the step rerun
            run_id = session.run(
                "backfill:open",
                open_run,
                "backfill",
                {"name": spec.name, "value": spec.value},
                source_name=spec.name,
                run_id=str(uuid.uuid4()),
            )
            reporter = BatchReporter(spec.name)
            try:
                result = run_engine(url, spec, settings, run_id=run_id, on_batch=reporter)
            except BaseException as exc:  # resumable: the batches committed so far stay
                signum = interruption(exc)
                why = f"interrupted by {signal.Signals(signum).name}" if signum is not None else first_line(exc)
                session.once("backfill:interrupted", finish, run_id, "interrupted", {}, error=why)
                if signum is not None:
                    interrupted({"title": f"Backfill {spec.name}", "kind": "backfill", "run_id": run_id,
                                 "notes": [f"{why}; the same command resumes it"]}, report_dir)  # fmt: skip
                raise
            finally:
                reporter.close()
            stats = _counts(result.progress)
            session.run("backfill:finish", finish, run_id, result.status, stats)
    except UserFacingError as exc:
        return user_error(exc)
    report = _report(run_id, spec, result, url)
    return publish(
        report,
        report_dir,
        key="backfill-report",
        description=f"Backfill {spec.name}, run {run_id}",
        exit_code=0,
        message=f"{spec.name}: {result.status}, {result.progress.rows_done:,} rows",
    )


def _counts(p: Progress) -> dict[str, int]:
    return {
        "rows_done": p.rows_done,
        "batches": p.batches,
        "passes": p.passes,
        "rows_still_null": p.remaining,
    }


class BatchReporter:
    """Per-batch progress: the local bar, and the `backfill-progress` artifact (percent done, with
    rows done, rows/s and batches in its description), sent without holding the batches up."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.artifact = progress_events.ProgressArtifact(
            key="backfill-progress", description=f"Backfill {name}"
        )

    def __call__(self, p: Progress) -> None:
        progress_events.emit("backfill", p.rows_done, max(p.total, p.rows_done))
        percent = 100.0 * p.rows_done / p.total if p.total else 100.0
        text = f"Backfill {self.name}: {p.rows_done:,} rows done, {p.rows_per_s:,.0f} rows/s, {p.batches:,} batches"
        self.artifact.update(percent, text)

    def close(self) -> None:
        self.artifact.close()


def _report(run_id: str, spec: BackfillSpec, result: Result, url: str) -> dict[str, Any]:
    p = result.progress
    sizes = sorted(p.batch_sizes)
    notes = [f"Resumed from the checkpoint of an earlier run of {spec.name}."] if result.resumed else []
    if result.status == "paused":
        notes.append(f"Stopped at max runtime with {p.remaining:,} rows still NULL; the next run carries on.")
    return {
        "title": f"Backfill {spec.name}",
        "kind": "backfill",
        "run_id": run_id,
        "status": result.status,
        "resumed": result.resumed,
        "backfill": {
            "table": spec.table,
            "column": spec.column,
            "value": spec.value,
            "type": result.column_type,
        },
        "database": mask_url(url),
        "counts": _counts(p),
        "batch_size": {"min": sizes[0], "median": sizes[len(sizes) // 2], "max": sizes[-1]} if sizes else {},
        "timing": {"duration_s": round(p.elapsed, 3), "rows_per_s": round(p.rows_per_s, 1)},
        "notes": notes,
    }


def _summary(outcome: dict[str, Any]) -> str:
    r = outcome["report_data"]
    c, t = r["counts"], r["timing"]
    return (
        f"backfill {r['backfill']['table']}.{r['backfill']['column']} {r['status']}: {c['rows_done']:,} rows in "
        f"{c['batches']:,} batches, {t['duration_s']:.1f} s ({t['rows_per_s']:,.0f} rows/s), "
        f"{c['rows_still_null']:,} still NULL\nreport: {outcome['report']}"
    )


def main(argv: list[str] | None = None) -> int:
    from flows import cli

    parser = cli.Parser(
        prog="python -m flows.backfill",
        description="Set a column to a value where it IS NULL, in small resumable batches on a live table.",
        epilog="Exit codes: 0 done (or paused at --max-runtime), 2 bad input or usage, 3 database unavailable or busy.",
    )
    parser.add_argument("name", nargs="?", help="a backfill a revision declares, e.g. tasks.priority or tasks.status")
    parser.add_argument("--table", help="the table (schema-qualified or in the search path)")
    parser.add_argument("--column", help="the column to fill where it is NULL")
    parser.add_argument("--value", help="the value, as PostgreSQL text for the column's type (e.g. '{}')")
    parser.add_argument(
        "--batch-size", type=int, default=2_000, metavar="N", help="first batch size (default 2000)"
    )
    parser.add_argument(
        "--target-batch-seconds",
        type=float,
        default=0.05,
        metavar="S",
        help="the batch size adapts to keep a batch near this duration (default 0.05)",
    )
    parser.add_argument("--pause", type=float, default=0.0, metavar="S", help="sleep between batches")
    parser.add_argument(
        "--max-runtime",
        type=float,
        metavar="S",
        help="stop cleanly after this many seconds; the next run resumes",
    )
    parser.add_argument("--lock-timeout", default="2s", help="lock_timeout of every batch (default 2s)")
    cli.add_common(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cli.apply_database_url(args.database_url)
        spec = spec_for(args.name, args.table, args.column, args.value)
        Settings(
            batch_size=args.batch_size,
            pause=args.pause,
            max_runtime=args.max_runtime,
            lock_timeout=args.lock_timeout,
        ).check()
        check(database_url(), spec)  # bad names exit here, before the orchestrator is involved
    except UserFacingError as exc:
        return cli.fail(str(exc), exc.exit_code)
    with cli.progress_bar(not args.json):
        return cli.run_flow(
            lambda: backfill(
                name=args.name,
                table=args.table,
                column=args.column,
                value=args.value,
                batch_size=args.batch_size,
                target_batch_seconds=args.target_batch_seconds,
                pause=args.pause,
                max_runtime=args.max_runtime,
                lock_timeout=args.lock_timeout,
                report_dir=args.report_dir,
                return_state=True,
            ),
            as_json=args.json,
            summary=_summary,
        )


if __name__ == "__main__":
    from flows import cli

    cli.run_command(main)
