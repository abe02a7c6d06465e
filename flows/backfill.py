"""Backfill: fill a column wherever it IS NULL, in small batches, while the application keeps writing.

The story of a run:
1. name the work: a backfill a revision declares (`tasks.priority`, `tasks.status`…) or `--table/--column/--value`,
   checked against the live catalog;
2. resume the checkpoint of an unfinished run of the same backfill, or start at the first page;
3. walk the table in page order (what a plain UPDATE reads), a range of pages per batch, each its own
   short transaction with its checkpoint, the batch size adapting to stay near the target duration;
   rows others hold locked, and rows moved or written behind the walk, are visited by the next pass;
4. stop when no NULL is left (or cleanly at `max_runtime`: the next scheduled run carries on);
5. report: rows done, rows/s, batches as `backfill-progress` while it runs, `backfill-report` and
   `runs/<run_id>/report.json` at the end.

`python -m flows.backfill --help` for the command line (flows/commands/backfill.py).
"""

from __future__ import annotations

if __name__ == "__main__":  # the command line, which answers --help without importing Prefect
    from flows.commands import backfill as command

    command.run()

import signal
import uuid
from typing import Any

from prefect import flow
from prefect.states import State

from flows import params as P
from flows import progress as progress_events
from flows.outcome import interrupted, interruption, publish, user_error
from flows.retry import db_task
from flows.settings import resolve_database_url
from tasks.backfill import BackfillSpec, Progress, Result, Settings, named, run_backfill
from tasks.db import Session, mask_url
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


def preflight(p: P.Backfill) -> tuple[BackfillSpec, Settings]:
    """What the run will fill and how, checked before anything is written."""
    spec = spec_for(p.name, p.table, p.column, p.value)
    settings = Settings(
        batch_size=p.batch_size,
        target_seconds=p.target_batch_seconds,
        pause=p.pause,
        max_runtime=p.max_runtime,
        lock_timeout=p.lock_timeout,
    )
    settings.check()
    return spec, settings


@flow(name="backfill", persist_result=True)
@P.takes(P.Backfill)
def backfill(**params: Any) -> State:
    """Set a column to a value where it is NULL, in resumable batches; returns the outcome."""
    p = P.of(P.Backfill, params)
    try:
        spec, settings = preflight(p)
        url = resolve_database_url(p.database_secret)
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
                                 "notes": [f"{why}; the same command resumes it"]}, p.report_dir)  # fmt: skip
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
        p.report_dir,
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
