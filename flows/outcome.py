"""How every flow ends: a report written to `<report-dir>/<run_id>/`, a markdown artifact under a
stable key, and a Completed or Failed state whose data is the outcome the CLI turns into an exit code
(the flow returns a state rather than raising, so a failed check is a Failed run with its report)."""

from __future__ import annotations

import logging
import signal
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import TerminationSignal
from prefect.states import Completed, Failed, State

from tasks import report as reports
from tasks.errors import Interrupted, ReportNotWritten, Unavailable, UserFacingError
from tasks.retry import is_transient

log = logging.getLogger(__name__)


def interruption(exc: BaseException) -> int | None:
    """The signal that interrupted the command, if exc is how it arrived: Ctrl-C's KeyboardInterrupt,
    our Interrupted (SIGTERM outside a flow run), or Prefect's TerminationSignal (SIGTERM inside one)."""
    if isinstance(exc, Interrupted):
        return exc.signum
    if isinstance(exc, TerminationSignal):
        return exc.signal
    if isinstance(exc, KeyboardInterrupt):
        return signal.SIGINT
    return None


def exit_code_of(exc: BaseException) -> int:
    """What a failure means as an exit code: ours carry theirs; a privilege the role lacks (SQLSTATE
    42501) is 2; a fault still transient after the retries is 3; an interruption 128 + its signal;
    anything else is a step or a check that failed: 1."""
    if isinstance(exc, UserFacingError):
        return exc.exit_code
    signum = interruption(exc)
    if signum is not None:
        return 128 + signum
    driver = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's error
    if getattr(driver, "sqlstate", None) == "42501":
        return 2
    return 3 if is_transient(exc) else 1


def interrupted(report: dict[str, Any], report_dir: str, *, name: str = "report") -> None:
    """Write an interrupted run's report (best effort: the interruption is what must get through)."""
    try:
        reports.write({**report, "status": "interrupted"}, report_dir, name=name)
    except OSError as exc:
        log.warning("the interrupted run's report was not written: %s", exc)


def user_error(exc: UserFacingError) -> State:
    """A Failed state for something the user can fix: one line, its exit code, no traceback."""
    get_run_logger().error(str(exc))
    return Failed(message=str(exc), data={"exit_code": exc.exit_code, "error": str(exc)})


def publish(
    report: dict[str, Any],
    report_dir: str,
    *,
    key: str,
    description: str,
    exit_code: int,
    message: str,
    name: str = "report",
) -> State:
    """Write the report, attach it as an artifact, and end the flow with its outcome."""
    md_path = write(report, report_dir, name=name)
    create_markdown_artifact(reports.markdown(report), key=key, description=description)
    outcome = {
        "exit_code": exit_code,
        "run_id": report["run_id"],
        "status": report["status"],
        "report": str(md_path),
        "counts": report.get("counts", {}),
        "report_data": brief(report),
    }
    return (Failed if exit_code else Completed)(message=message, data=outcome)


OUTCOME_ROWS = 1000  # rows of a list the flow's result keeps (Prefect walks and stores it; report.json has all)


def brief(report: dict[str, Any]) -> dict[str, Any]:
    """The report as plain data with each long list (the per-file rows of 100,000 files) cut to
    OUTCOME_ROWS and its length in `rows_total`: a run's result stays small, and report.json keeps
    every row."""
    rows = {k: (v.head, v.total) for k, v in report.items() if isinstance(v, reports.Rows)}
    rows |= {k: (v, len(v)) for k, v in report.items() if isinstance(v, list) and len(v) > OUTCOME_ROWS}
    if not rows:
        return report
    long = {k: total for k, (_, total) in rows.items() if total > OUTCOME_ROWS}
    kept = {**report, **{k: head[:OUTCOME_ROWS] for k, (head, _) in rows.items()}}
    return {**kept, "rows_total": long} if long else kept


def write(report: dict[str, Any], report_dir: str, *, name: str = "report") -> Any:
    """reports.write, failing as ReportNotWritten (exit 3, one line) when the disk says no."""
    try:
        return reports.write(report, report_dir, name=name)
    except (OSError, Unavailable) as exc:  # Unavailable: its rows are read from the database as it is written
        why = (exc.strerror or exc) if isinstance(exc, OSError) else exc
        raise ReportNotWritten(
            f"the report of run {report['run_id']} could not be written to {report_dir}: {why}; the "
            "database is consistent, and the same command run again finishes the run and writes it"
        ) from exc


def closing_lines(outcome: dict[str, Any]) -> list[str]:
    """The end of every command's summary: problems, notes, and where the report is."""
    r = outcome["report_data"]
    lines = [f"problem: {p}" for p in r.get("verification", {}).get("problems", [])]
    lines += [f"note: {n}" for n in r.get("notes", [])]
    return [*lines, f"report: {outcome['report']}"]
