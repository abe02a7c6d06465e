"""Schema: move a live database between Alembic revisions without stopping the application.

The story of an upgrade:
1. find the pending revisions and render their SQL (shown, and kept in the report);
2. take a checkpoint branch `<db>-backup-<UTC time>` (by default; locally this briefly ends other
   sessions on the database, on Neon it is instant), then the migration lock;
3. check integrity: row counts, constraints left NOT VALID, invalid indexes;
4. apply revision by revision, each step recorded in `migration_runs`; before a contract step its
   backfills run to completion (batched, resumable, see flows/backfill.py); lock timeouts are
   retried with backoff, then the step fails;
5. on failure, return to the revision it started from and say what failed;
6. check again (at head the models must match the schema) and report: `schema-report` and
   `runs/<run_id>/report.json`.

A downgrade whose revisions cannot give their data back (`downgrade_loses` in the revision) is
refused without `allow_data_loss`, and with it runs only after a checkpoint branch was taken.
`python -m flows.schema --help` for the command line.
"""

from __future__ import annotations

import signal
import sys
import time
import uuid
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import State

from flows import params as P
from flows.backfill import BatchReporter
from flows.checkpoint import take_checkpoint
from flows.outcome import closing_lines, exit_code_of, interrupted, interruption, publish, user_error
from flows.settings import resolve_database_url
from tasks import privileges, schema
from tasks.audit import snapshot
from tasks.db import Session, check_duration, is_transient, mask_url
from tasks.errors import InputError, UserFacingError, VerificationFailed, first_line
from tasks.runs import finish, has_bookkeeping, open_run


@flow(name="schema-upgrade", persist_result=True)
def schema_upgrade(
    target: str = P.described("head", "Revision to reach (head, or an id such as 0005)"),
    checkpoint: bool = P.checkpoint(),
    branch_provider: P.Provider | None = P.branch_provider(),
    lock_timeout: str = P.lock_timeout(),
    statement_timeout: str = P.described("15min", "statement_timeout of every statement"),
    lock_wait_seconds: float = P.described(30.0, "Seconds to wait for another migration run to finish", ge=0),
    report_dir: str = P.report_dir(),
    database_secret: str | None = P.database_secret(),
) -> State:
    """Upgrade to `target` (default head), expand → backfill → contract, and report."""
    return _move(
        "up",
        target,
        checkpoint,
        branch_provider,
        lock_timeout,
        statement_timeout,
        lock_wait_seconds,
        report_dir,
        database_secret,
        allow_data_loss=True,
    )


@flow(name="schema-downgrade", persist_result=True)
def schema_downgrade(
    target: str = P.described(..., "Revision to go back to (an id such as 0004, or base)"),
    allow_data_loss: bool = P.described(
        False, "Run a downgrade that drops data (a checkpoint is taken first)"
    ),
    checkpoint: bool = P.checkpoint(),
    branch_provider: P.Provider | None = P.branch_provider(),
    lock_timeout: str = P.lock_timeout(),
    statement_timeout: str = P.described("15min", "statement_timeout of every statement"),
    lock_wait_seconds: float = P.described(30.0, "Seconds to wait for another migration run to finish", ge=0),
    report_dir: str = P.report_dir(),
    database_secret: str | None = P.database_secret(),
) -> State:
    """Downgrade to `target`; refuses a data-losing downgrade without allow_data_loss."""
    return _move(
        "down",
        target,
        checkpoint,
        branch_provider,
        lock_timeout,
        statement_timeout,
        lock_wait_seconds,
        report_dir,
        database_secret,
        allow_data_loss=allow_data_loss,
    )


def _move(
    direction: str,
    target: str,
    checkpoint: bool,
    branch_provider: str | None,
    lock_timeout: str,
    statement_timeout: str,
    lock_wait: float,
    report_dir: str,
    database_secret: str | None,
    *,
    allow_data_loss: bool,
) -> State:
    started = time.monotonic()
    try:
        check_duration("lock_timeout", lock_timeout)
        check_duration("statement_timeout", statement_timeout)
        url = resolve_database_url(database_secret)
        before = schema.current_revision(url)
        way, steps = schema.path(before, schema.resolve(target))
        if steps and way != direction:
            verb = "downgrade" if way == "down" else "upgrade"
            raise InputError(
                f"the database is at {before or 'base'}; reaching {target} is an {verb}, not this"
            )
        losing = [s for s in steps if direction == "down" and s.downgrade_loses]
        if losing and not allow_data_loss:
            lost = "; ".join(f"{s.revision} {s.downgrade_loses}" for s in losing)
            raise InputError(
                f"downgrading to {target} loses data ({lost}); run again with --allow-data-loss "
                "(a checkpoint branch is taken first)"
            )
        if steps:  # refused before anything is written when the role may not alter the tables
            with Session(url) as check:
                privileges.require_schema_change(check.run("schema:check", privileges.of))
        branch = None
        notes: list[str] = []
        if steps and (checkpoint or losing):
            branch, notes = take_checkpoint(url, branch_provider, lock_wait)
        # each step a unit on this session: a lost one is replaced and the run lock taken again
        with Session(url, lock_wait=lock_wait) as control:
            journal = Journal(
                control,
                {"direction": direction, "from": before, "target": target},
                f"{before or 'base'}->{target}",
            )
            run_id = journal.run_id
            try:
                pre = control.run("schema:check", snapshot)
                applied, failure, code = _apply(url, journal, steps, direction, lock_timeout, statement_timeout)
            except BaseException as exc:
                signum = interruption(exc)
                if signum is not None:  # the revision in flight committed or rolled back whole
                    journal.interrupted(f"interrupted by {signal.Signals(signum).name}")
                    interrupted({"title": f"Schema {direction}grade to {target}", "kind": "schema",
                                 "run_id": run_id, "notes": [f"{journal.why}; the same command resumes it "
                                 "from the revision it reached"]}, report_dir)  # fmt: skip
                raise
            rolled_back = None
            if failure is not None and applied:
                rolled_back = _return_to(url, before, applied, direction, lock_timeout, statement_timeout)
            after = schema.current_revision(url)
            post = control.run("schema:check", snapshot)
            problems = _post_check(url, pre, post, after, failure)
            status = (
                "noop"
                if not steps
                else ("failed" if failure else ("completed" if not problems else "check_failed"))
            )
            journal.finish(status, {"applied": [s.revision for s in applied], "problems": problems}, failure)
    except UserFacingError as exc:
        return user_error(exc)
    report = {
        "title": f"Schema {'upgrade' if direction == 'up' else 'downgrade'} to {target}",
        "kind": "schema",
        "run_id": run_id,
        "status": status,
        "database": mask_url(url),
        "schema": {"before": before, "after": after, "target": schema.resolve(target)},
        "checkpoint": branch,
        "steps": applied_rows(steps, applied, failure),
        "sql": [{"revision": s.revision, "sql": _sql(s, direction)} for s in steps],
        "integrity": {"before": pre, "after": post},
        "verification": {"ok": not problems and failure is None, "problems": problems},
        "timing": {"duration_s": round(time.monotonic() - started, 3)},
        "notes": notes
        + ([f"nothing to do: the database is at {before or 'base'}"] if not steps else [])
        + ([f"failed at {failure}; returned to {rolled_back}"] if failure else []),
    }
    if not failure:
        code = VerificationFailed.exit_code if problems else 0
    return publish(
        report,
        report_dir,
        key="schema-report",
        description=report["title"],
        exit_code=code,
        message=failure or ("; ".join(problems) if problems else f"at {after}"),
    )


class Journal:
    """The run and each step in `migration_runs`, written from the moment the bookkeeping tables
    exist (an upgrade from base creates them in 0001; a downgrade to base removes them)."""

    def __init__(self, session: Session, parameters: dict[str, Any], source_name: str) -> None:
        self.session, self.parameters, self.source_name = session, parameters, source_name
        self.run_id = str(uuid.uuid4())
        self.opened = False
        self.step_id: str | None = None
        self.why = ""

    def _ready(self) -> bool:
        if not self.session.run("schema:journal", has_bookkeeping):
            return False
        if not self.opened:
            self.session.run(
                "schema:journal", open_run, "schema", self.parameters, self.source_name, run_id=self.run_id
            )
            self.opened = True
        return True

    def start_step(self, s: schema.Step, direction: str) -> str | None:
        if not self._ready():
            return None
        self.step_id = self.session.run(
            "schema:journal",
            open_run,
            "schema-step",
            {"run_id": self.run_id, "revision": s.revision, "direction": direction},
            source_name=s.revision,
            run_id=str(uuid.uuid4()),
        )
        return self.step_id

    def end_step(
        self, step_id: str | None, status: str, stats: dict[str, Any], error: str | None = None
    ) -> None:
        if step_id is not None and self.session.run("schema:journal", has_bookkeeping):
            self.session.run("schema:journal", finish, step_id, status, stats, error=error)
        self.step_id = None

    def finish(self, status: str, stats: dict[str, Any], error: str | None) -> None:
        if self._ready():
            self.session.run("schema:journal", finish, self.run_id, status, stats, error=error)

    def interrupted(self, why: str) -> None:
        """The run and its step in flight marked interrupted: one attempt each, the exit comes first."""
        self.why = why
        for run_id in (self.step_id, self.run_id if self.opened else None):
            if run_id is not None:
                self.session.once("schema:interrupted", finish, run_id, "interrupted", {}, error=why)


def _apply(
    url: str,
    journal: Journal,
    steps: list[schema.Step],
    direction: str,
    lock_timeout: str,
    statement_timeout: str,
) -> tuple[list[schema.Step], str | None, int]:
    """Apply step by step, each recorded in migration_runs; returns (steps applied, failure or None,
    its exit code: 3 for a fault still transient after the retries, 2 for a missing privilege, else 1)."""
    logger = get_run_logger()
    applied: list[schema.Step] = []
    for s in steps:
        step_id = journal.start_step(s, direction)
        began = time.monotonic()
        try:
            schema.apply(
                url,
                [s],
                direction,
                run_backfill=schema.engine_backfill(url, BatchReporter),
                lock_timeout=lock_timeout,
                statement_timeout=statement_timeout,
                on_step=lambda st, action: logger.info("%s %s (%s)", action, st.revision, st.phase),
            )
        except Exception as exc:
            reason = f"{direction}grade of {s.revision} failed: {first_line(exc)}"
            if is_transient(exc):
                reason += " (retried with backoff)"
            journal.end_step(step_id, "failed", {"seconds": round(time.monotonic() - began, 3)}, reason)
            logger.error(reason)
            return applied, reason, exit_code_of(exc)
        journal.end_step(step_id, "completed", {"seconds": round(time.monotonic() - began, 3)})
        applied.append(s)
    return applied, None, 0


def _return_to(
    url: str,
    before: str | None,
    applied: list[schema.Step],
    direction: str,
    lock_timeout: str,
    statement_timeout: str,
) -> str | None:
    """Undo the steps this run applied, newest first, back to where it started."""
    back = "down" if direction == "up" else "up"
    undo = list(reversed(applied))
    try:
        schema.apply(url, undo, back, lock_timeout=lock_timeout, statement_timeout=statement_timeout)
    except Exception as exc:
        get_run_logger().error("returning to %s failed: %s", before, first_line(exc))
        return f"{schema.current_revision(url)} (returning to {before or 'base'} failed: {first_line(exc)})"
    return schema.current_revision(url) or "base"


def _post_check(url: str, pre: dict, post: dict, after: str | None, failure: str | None) -> list[str]:
    problems = [f"index {i} is invalid" for i in post["invalid_indexes"]]
    newly = sorted(set(post["not_valid"]) - set(pre["not_valid"]))
    if after == schema.head_revision() and post["not_valid"]:
        problems.append(f"at head, constraints are still NOT VALID: {', '.join(post['not_valid'])}")
    elif newly and failure:
        problems.append(f"left NOT VALID by the failed step: {', '.join(newly)}")
    if after == schema.head_revision() and failure is None:
        problems += [f"models differ from the schema: {d}" for d in schema.model_drift(url)]
    return problems


def applied_rows(
    steps: list[schema.Step], applied: list[schema.Step], failure: str | None
) -> list[dict[str, Any]]:
    done = {s.revision for s in applied}
    rows = []
    for s in steps:
        status = (
            "applied"
            if s.revision in done
            else ("FAILED" if failure and s.revision in failure else "not run")
        )
        rows.append(
            {
                "revision": s.revision,
                "phase": s.phase,
                "backfills": ", ".join(s.backfills),
                "status": status,
                "doc": s.doc.splitlines()[0] if s.doc else "",
            }
        )
    return rows


def _sql(s: schema.Step, direction: str) -> str:
    if direction == "up":
        return schema.offline_sql(s.down_revision, s.revision)
    return schema.offline_sql(s.revision, s.down_revision, "down")


def _summary(outcome: dict[str, Any]) -> str:
    r = outcome["report_data"]
    lines = [
        f"{r['title']}: {r['status']} ({r['schema']['before'] or 'base'} -> {r['schema']['after'] or 'base'}, "
        f"{r['timing']['duration_s']:.1f} s)"
    ]
    lines += [f"  {s['revision']} {s['phase']:8} {s['status']:8} {s['doc']}" for s in r["steps"]]
    if r.get("checkpoint"):
        lines.append(f"checkpoint branch: {r['checkpoint']['name']}")
    return "\n".join(lines + closing_lines(outcome))


def status(url: str) -> dict[str, Any]:
    current = schema.current_revision(url)
    head = schema.head_revision()
    _, pending = schema.path(current, head)
    return {
        "database": mask_url(url),
        "current": current,
        "head": head,
        "pending": [
            {
                "revision": s.revision,
                "phase": s.phase,
                "backfills": list(s.backfills),
                "doc": s.doc.splitlines()[0],
            }
            for s in pending
        ],
    }


def main(argv: list[str] | None = None) -> int:
    import json

    from flows import cli
    from tasks.db import database_url

    parser = cli.Parser(
        prog="python -m flows.schema",
        description="Move the database between schema revisions without downtime (expand → backfill → contract).",
        epilog="Exit codes: 0 done, 1 a step or check failed (the database is back where it started), "
        "2 bad input, 3 database unavailable, busy, or a lock timeout outlasted the retries.",
    )
    commands = cli.subcommands(parser)
    for name, text in (
        ("status", "where the database stands and what is pending"),
        ("sql", "the SQL that would run, from the current revision to TARGET (default head)"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        if name == "sql":
            sub.add_argument("target", nargs="?", default="head")
        cli.add_common(sub)
    for name, text in (("upgrade", "upgrade to TARGET (default head)"), ("downgrade", "downgrade to TARGET")):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument(
            "target", nargs="?" if name == "upgrade" else None, default="head" if name == "upgrade" else None
        )
        if name == "downgrade":
            sub.add_argument(
                "--allow-data-loss",
                action="store_true",
                help="run a downgrade that drops data its revisions cannot give back (after a checkpoint)",
            )
        sub.add_argument(
            "--no-checkpoint", action="store_true", help="skip the checkpoint branch taken before writing"
        )
        cli.add_provider(sub)
        sub.add_argument("--lock-timeout", default="2s", help="lock_timeout of every statement (default 2s)")
        sub.add_argument("--statement-timeout", default="15min", help="statement_timeout (default 15min)")
        sub.add_argument(
            "--lock-wait",
            type=float,
            default=30.0,
            metavar="S",
            help="seconds to wait for another migration run to finish (default 30)",
        )
        cli.add_common(sub)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cli.apply_database_url(args.database_url)
        if args.command in ("status", "sql"):
            url = database_url()
            info = status(url)
            if args.command == "sql":
                way, steps = schema.path(info["current"], schema.resolve(args.target))
                print(
                    "".join(_sql(s, way) for s in steps)
                    or f"-- nothing to do: the database is at {info['current']}"
                )
            elif args.json:
                print(json.dumps(info, indent=2))
            else:
                print(f"database {info['database']}: at {info['current'] or 'base'}, head is {info['head']}")
                for p in info["pending"]:
                    extra = f" (backfills first: {', '.join(p['backfills'])})" if p["backfills"] else ""
                    print(f"  pending {p['revision']} {p['phase']:8} {p['doc']}{extra}")
            return 0
        check_duration("--lock-timeout", args.lock_timeout)
        check_duration("--statement-timeout", args.statement_timeout)
        schema.resolve(args.target)
    except UserFacingError as exc:
        return cli.fail(str(exc), exc.exit_code)
    common = {
        "checkpoint": not args.no_checkpoint,
        "branch_provider": args.provider,
        "lock_timeout": args.lock_timeout,
        "statement_timeout": args.statement_timeout,
        "lock_wait_seconds": args.lock_wait,
        "report_dir": args.report_dir,
        "return_state": True,
    }
    if args.command == "upgrade":
        call = lambda: schema_upgrade(target=args.target, **common)  # noqa: E731
    else:
        call = lambda: schema_downgrade(target=args.target, allow_data_loss=args.allow_data_loss, **common)  # noqa: E731
    with cli.progress_bar(not args.json):
        return cli.run_flow(call, as_json=args.json, summary=_summary)


if __name__ == "__main__":
    from flows import cli

    cli.run_command(main)
