"""Schema: roll a revision out while the application keeps running, old and new versions side by side.

The story of a run (migrations/ops has what each operation does in each phase):
1. plan: `upgrade` starts each revision and runs its backfills, completing those another one
   follows unless they break the previous application version; `complete` contracts the revision
   rolling out once every application instance runs it; `rollback` undoes its start, leaving no
   trace; `downgrade` undoes completed revisions;
2. refuse a role that may not alter the tables, before anything is written; take a checkpoint
   branch `<db>-backup-<UTC time>` (by default; online, the application's sessions go on: a
   snapshot copy locally, instant on Neon), then the migration lock;
3. each action is a Prefect task and one unit of the retry policy (tasks/retry.py: a lock timeout
   or a lost session runs it again within the retry window), recorded in `migration_runs`; an
   upgrade that fails in a start or backfill rolls that revision back and downgrades what the run
   had completed, newest first; SIGTERM or Ctrl-C marks the run interrupted (the action in flight
   commits or rolls back whole) and exits 143 or 130;
4. check (invalid indexes, NOT VALID constraints, at a completed head the models against the
   schema) and report: `schema-report` and `runs/<run_id>/report.json`.

Exit codes follow the exception's type (tasks/errors.py). `python -m flows.schema --help` (flows/commands/schema.py).
"""

from __future__ import annotations

if __name__ == "__main__":  # the command line, which answers --help without importing Prefect
    from flows.commands import schema as command

    command.run()

import signal
import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.states import State

from flows import params as P
from flows.backfill import BatchReporter
from flows.checkpoint import take_checkpoint
from flows.outcome import interrupted, interruption, publish, user_error
from flows.settings import resolve_database_url
from tasks import privileges, schema
from tasks.audit import snapshot
from tasks.db import Session, mask_url, refuse_pooler
from tasks.errors import InputError, UserFacingError, VerificationFailed
from tasks.schema_runs import Journal


@task(
    name="schema-action",
    task_run_name="{action.label}",
    cache_policy=NONE,
    persist_result=False,  # no retries here: the action is a unit of tasks/retry.py's policy
)
def run_action(url: str, action: schema.Action, lock_timeout: str, statement_timeout: str) -> None:
    """One start, backfill, complete, rollback or downgrade, as a task the UI shows by name."""
    runner = schema.engine_backfill(url, BatchReporter)
    schema.run(url, action, runner, lock_timeout=lock_timeout, statement_timeout=statement_timeout)


@flow(name="schema-upgrade", persist_result=True)
@P.takes(P.SchemaUpgrade)
def schema_upgrade(**params: Any) -> State:
    """Start (and backfill) each revision up to `target`; the target stays live beside the previous
    version until `complete`."""
    p = P.of(P.SchemaUpgrade, params)

    def plan(url: str, current: str | None, live: str | None) -> tuple[list[schema.Action], str | None]:
        return schema.plan_upgrade(current, live, schema.resolve(p.target), p.complete)

    return _run("upgrade", p.target, plan, p)


@flow(name="schema-complete", persist_result=True)
@P.takes(P.SchemaRun)
def schema_complete(**params: Any) -> State:
    """Complete the revision rolling out: the previous version's schema and columns go."""

    def plan(url: str, current: str | None, live: str | None) -> tuple[list[schema.Action], str | None]:
        if live is None:
            raise InputError(f"nothing is rolling out (the database is at {current or 'base'})")
        s = schema.step(live)
        return [*(schema.Action(s, "backfill", b) for b in s.backfills), schema.Action(s, "complete")], None

    return _run("complete", "live", plan, P.of(P.SchemaRun, params))


@flow(name="schema-rollback", persist_result=True)
@P.takes(P.SchemaRun)
def schema_rollback(**params: Any) -> State:
    """Undo the start of the revision rolling out (before complete), leaving no trace of it."""

    def plan(url: str, current: str | None, live: str | None) -> tuple[list[schema.Action], str | None]:
        if live is None:
            raise InputError(
                f"nothing is rolling out (the database is at {current or 'base'}); a completed "
                "revision is downgraded"
            )
        return [schema.Action(schema.step(live), "rollback")], None

    return _run("rollback", "live", plan, P.of(P.SchemaRun, params))


@flow(name="schema-downgrade", persist_result=True)
@P.takes(P.SchemaDowngrade)
def schema_downgrade(**params: Any) -> State:
    """Downgrade completed revisions to `target`; refuses a data-losing one without allow_data_loss."""
    p = P.of(P.SchemaDowngrade, params)

    def plan(url: str, current: str | None, live: str | None) -> tuple[list[schema.Action], str | None]:
        if live is not None:
            raise InputError(f"{live} is rolling out: roll it back (python -m flows.schema rollback) first")
        way, steps = schema.path(current, schema.resolve(p.target))
        if steps and way != "down":
            raise InputError(f"the database is at {current or 'base'}; reaching {p.target} is an upgrade")
        losing = [s for s in steps if s.downgrade_loses]
        if losing and not p.allow_data_loss:
            lost = "; ".join(f"{s.revision} {s.downgrade_loses}" for s in losing)
            raise InputError(
                f"downgrading to {p.target} loses data ({lost}); run again with --allow-data-loss "
                "(a checkpoint branch is taken first)"
            )
        return [schema.Action(s, "downgrade") for s in steps], None

    return _run("downgrade", p.target, plan, p, force_checkpoint=p.allow_data_loss)


def _run(kind: str, target: str, plan: Any, p: P.SchemaRun, force_checkpoint: bool = False) -> State:
    started = time.monotonic()
    options = p.model_dump()  # validated: the durations are durations
    try:
        url = resolve_database_url(options["database_secret"])
        with Session(url) as check:  # a pooled URL is named before anything is planned
            check.run("schema:check", refuse_pooler)
            before, live = schema.current_revision(url), schema.pending(url)
            actions, stopped = plan(url, before, live)
            if actions:  # refused before anything is written when the role may not alter the tables
                privileges.require_schema_change(check.run("schema:check", privileges.of))
        branch, notes = None, [stopped] if stopped else []
        if actions and (options["checkpoint"] or force_checkpoint):
            branch, taken = take_checkpoint(url, options["branch_provider"], options["lock_wait_seconds"])
            notes += taken
            if not options["checkpoint"]:  # the report says why a run told not to took one
                notes.append(
                    f"checkpoint branch {branch['name']} taken although checkpoints were turned off: "
                    f"this {kind} loses data, and the branch keeps it"
                )
        # each step a unit on this session: a lost one is replaced and the run lock taken again
        with Session(url, lock_wait=options["lock_wait_seconds"]) as control:
            journal = Journal(control, {"action": kind, "from": before, "target": target}, f"{kind} {target}")
            pre = control.run("schema:check", snapshot)
            try:
                done, failure = _carry_out(url, journal, actions, options)
            except BaseException as exc:
                signum = interruption(exc)
                if signum is not None:  # the action in flight committed or rolled back whole
                    journal.interrupted(f"interrupted by {signal.Signals(signum).name}")
                    interrupted({"title": f"Schema {kind} to {target}", "kind": "schema", "run_id": journal.run_id,
                                 "notes": [f"{journal.why}; the same command resumes it from where it stopped"]},
                                options["report_dir"])  # fmt: skip
                raise
            if failure is not None:
                notes.append(f"{failure}; {_undo(url, kind, actions, done, options)}")
            after, live_after = schema.current_revision(url), schema.pending(url)
            post = control.run("schema:check", snapshot)
            problems = _post_check(url, pre, post, after, live_after, failure)
            status = _status(actions, failure, problems)
            journal.finish(
                status, {"done": [a.label for a in done], "problems": problems}, str(failure or "") or None
            )
    except UserFacingError as exc:
        return user_error(exc)
    report = {
        "title": f"Schema {kind} to {target}",
        "kind": "schema",
        "run_id": journal.run_id,
        "status": status,
        "database": mask_url(url),
        "schema": {"before": before, "after": after, "live": live_after, "target": target},
        "checkpoint": branch,
        "steps": [_row(i, a, len(done), failure) for i, a in enumerate(actions)],
        "sql": [{"revision": a.label, "sql": step_sql(a)} for a in actions if a.verb != "backfill"],
        "integrity": {"before": pre, "after": post},
        "verification": {"ok": not problems and failure is None, "problems": problems},
        "timing": {"duration_s": round(time.monotonic() - started, 3)},
        "notes": notes + ([f"nothing to do: the database is at {before or 'base'}"] if not actions else []),
    }
    code = failure.exit_code if failure else VerificationFailed.exit_code if problems else 0
    return publish(
        report,
        options["report_dir"],
        key="schema-report",
        description=report["title"],
        exit_code=code,
        message=str(failure or "")
        or "; ".join(problems)
        or f"at {after}" + (f", {live_after} live" if live_after else ""),
    )


def _status(actions: list[schema.Action], failure: UserFacingError | None, problems: list[str]) -> str:
    if not actions:
        return "noop"
    return "failed" if failure else "check_failed" if problems else "completed"


def _carry_out(
    url: str, journal: Journal, actions: list[schema.Action], options: dict[str, Any]
) -> tuple[list[schema.Action], UserFacingError | None]:
    """Each action as a task, recorded; returns (actions done, the typed failure or None)."""
    logger = get_run_logger()
    done: list[schema.Action] = []
    for a in actions:
        step_id = journal.start_step(a.step.revision, a.label)
        began = time.monotonic()
        try:
            run_action(url, a, options["lock_timeout"], options["statement_timeout"])
        except Exception as exc:
            failure = schema.typed(exc, a.label)
            journal.end_step(step_id, "failed", {"seconds": round(time.monotonic() - began, 3)}, str(failure))
            logger.error("%s", failure)
            return done, failure
        journal.end_step(step_id, "completed", {"seconds": round(time.monotonic() - began, 3)})
        done.append(a)
    return done, None


def _undo(
    url: str, kind: str, actions: list[schema.Action], done: list[schema.Action], options: dict[str, Any]
) -> str:
    """After an upgrade failed in a start or a backfill: roll that revision back and downgrade what
    this run completed, newest first. A failed complete leaves its revision rolling out (complete
    again once the cause is fixed, or roll back); other runs leave the database as the failure did."""
    failed = actions[len(done)]
    if kind != "upgrade" or failed.verb == "complete":
        live = schema.pending(url)
        return (
            f"{live} is still rolling out"
            if live
            else f"the database is at {schema.current_revision(url) or 'base'}"
        )
    timeouts = {"lock_timeout": options["lock_timeout"], "statement_timeout": options["statement_timeout"]}
    try:
        if schema.pending(url) == failed.step.revision:  # started, then a backfill failed
            schema.rollback(url, failed.step, options["lock_timeout"])
        finished = [a.step for a in done if a.verb == "complete" or (a.verb == "start" and not a.step.online)]
        for s in reversed(finished):
            schema.downgrade(url, s, **timeouts)
    except UserFacingError as exc:
        get_run_logger().error("returning failed: %s", exc)
        return f"returning failed ({exc}); the database is at {schema.current_revision(url) or 'base'}"
    return f"returned to {schema.current_revision(url) or 'base'}"


def _post_check(
    url: str, pre: dict, post: dict, after: str | None, live: str | None, failure: UserFacingError | None
) -> list[str]:
    problems = [f"index {i} is invalid" for i in post["invalid_indexes"]]
    newly = sorted(set(post["not_valid"]) - set(pre["not_valid"]))
    settled = after == schema.head_revision() and live is None
    if settled and post["not_valid"]:
        problems.append(f"at head, constraints are still NOT VALID: {', '.join(post['not_valid'])}")
    elif newly and failure and live is None:
        problems.append(f"left NOT VALID by the failed step: {', '.join(newly)}")
    if settled and failure is None:
        problems += [f"models differ from the schema: {d}" for d in schema.model_drift(url)]
    return problems


def _row(i: int, a: schema.Action, done: int, failure: UserFacingError | None) -> dict[str, Any]:
    status = "done" if i < done else "FAILED" if failure and i == done else "not run"
    return {"action": a.label, "revision": a.step.revision, "status": status, "doc": a.step.title}


def step_sql(a: schema.Action) -> str:
    s = a.step
    if a.verb == "downgrade":
        return schema.offline_sql(s.revision, s.down_revision, "down")
    if not s.online:
        return schema.offline_sql(s.down_revision, s.revision)
    return schema.phase_sql(s, a.verb)
