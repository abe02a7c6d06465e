"""How every flow ends: a report written to `<report-dir>/<run_id>/`, a markdown artifact under a
stable key, and a Completed or Failed state whose data is the outcome the CLI turns into an exit code
(the flow returns a state rather than raising, so a failed check is a Failed run with its report)."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, Failed, State

from tasks import report as reports
from tasks.errors import UserFacingError


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
    md_path = reports.write(report, report_dir, name=name)
    create_markdown_artifact(reports.markdown(report), key=key, description=description)
    outcome = {
        "exit_code": exit_code,
        "run_id": report["run_id"],
        "status": report["status"],
        "report": str(md_path),
        "counts": report.get("counts", {}),
        "report_data": report,
    }
    return (Failed if exit_code else Completed)(message=message, data=outcome)


def closing_lines(outcome: dict[str, Any]) -> list[str]:
    """The end of every command's summary: problems, notes, and where the report is."""
    r = outcome["report_data"]
    lines = [f"problem: {p}" for p in r.get("verification", {}).get("problems", [])]
    lines += [f"note: {n}" for n in r.get("notes", [])]
    return [*lines, f"report: {outcome['report']}"]
