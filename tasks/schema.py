"""Alembic, driven from code: where a database stands, which versions are live, and each revision's
phases (migrations/ops): start (expand), its backfills, complete (contract), rollback (before
complete) and downgrade (after it).

Everything a step is comes from the operations its revision declares: its backfills, whether it is
breaking (complete takes away what the previous version uses), and what a downgrade loses. Plain
Alembic revisions (0001, 0002) say what their downgrade loses in `downgrade_loses`.

The connection is handed to env.py through `config.attributes["connection"]` (the cookbook
pattern), outside any transaction. Complete and rollback run the revision's operations on a
connection of their own, each statement committing on its own (they are idempotent, so a retry
after a lock timeout starts from where the database stands).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, pool

from migrations.ops import Backfill, OnlineOperation, declared, versions
from tasks.db import LOCK_TIMEOUT, PROJECT_ROOT, STATEMENT_TIMEOUT, connect, retrying, sqlalchemy_url
from tasks.errors import InputError, LockTimedOut, StepFailed, StepRefused, UserFacingError, first_line
from tasks.privileges import PrivilegeMissing
from tasks.retry import RetriesExhausted


@dataclass(frozen=True)
class Step:
    revision: str
    down_revision: str | None
    doc: str
    operations: tuple[OnlineOperation, ...]
    plain_downgrade_loses: str | None = None  # for a revision written as plain Alembic

    @property
    def online(self) -> bool:
        return bool(self.operations)

    @property
    def backfills(self) -> tuple[Backfill, ...]:
        return tuple(b for o in self.operations for b in o.backfills())

    @property
    def breaking(self) -> bool:
        return any(o.breaking for o in self.operations)

    @property
    def downgrade_loses(self) -> str | None:
        lost = [o.loses for o in self.operations if o.loses]
        return "; ".join(lost) if lost else self.plain_downgrade_loses

    @property
    def title(self) -> str:
        return self.doc.splitlines()[0] if self.doc else ""


def alembic_config(lock_timeout: str | None = None, statement_timeout: str | None = None) -> Config:
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    cfg.attributes["driven_from_code"] = True  # env.py leaves the caller's logging alone
    if lock_timeout:
        cfg.attributes["lock_timeout"] = lock_timeout
    if statement_timeout:
        cfg.attributes["statement_timeout"] = statement_timeout
    return cfg


@cache
def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    return scripts().get_current_head() or ""


@cache
def step(revision: str) -> Step:
    script = scripts().get_revision(revision)
    if script is None:
        raise InputError(f"no revision {revision!r}")
    return Step(
        script.revision,
        script.down_revision if isinstance(script.down_revision, str) else None,
        (script.doc or "").strip(),
        tuple(declared(script.module)),
        getattr(script.module, "downgrade_loses", None),
    )


def revisions() -> list[str]:
    """Every revision, base to head."""
    return [s.revision for s in reversed(list(scripts().walk_revisions()))]


def declared_backfills() -> dict[str, Backfill]:
    """Every backfill the revisions declare, by name (`tasks.priority`): the backfill registry."""
    return {b.name: b for r in revisions() for b in step(r).backfills}


def search_path(revision: str | None) -> str:
    """The search_path an application built against `revision` sets."""
    return versions.search_path(revision)


def resolve(target: str) -> str | None:
    """A target as given (head, base, a revision or a unique prefix) -> a revision id (None = base)."""
    if target == "base":
        return None
    try:
        script = scripts().get_revision(target)
    except Exception as exc:  # alembic raises several kinds for unknown / ambiguous ids
        raise InputError(f"no revision {target!r} ({first_line(exc)})") from None
    if script is None:
        raise InputError(f"no revision {target!r}")
    return script.revision


def path(current: str | None, target: str | None) -> tuple[str, list[Step]]:
    """('up' or 'down', the steps from current to target in the order they run)."""
    order = revisions()
    pos = {rev: i for i, rev in enumerate(order)}
    here = pos[current] if current else -1
    there = pos[target] if target else -1
    if there >= here:
        return "up", [step(r) for r in order[here + 1 : there + 1]]
    return "down", [step(r) for r in reversed(order[there + 1 : here + 1])]


def _engine(url: str):
    # through tasks.db.connect: sessions in UTC, named, and lost ones told apart from a wrong URL
    return create_engine(sqlalchemy_url(url), poolclass=pool.NullPool, creator=lambda: connect(url, step="schema"))


def _current(conn: Connection) -> str | None:
    revision = MigrationContext.configure(conn).get_current_revision()
    conn.commit()  # hand env.py a connection outside any transaction
    return revision


def current_revision(url: str) -> str | None:
    def read() -> str | None:
        engine = _engine(url)
        try:
            with engine.connect() as conn:
                return _current(conn)
        finally:
            engine.dispose()

    return retrying(read, what="read the schema revision")


def live_versions(url: str) -> dict[str, str]:
    """revision -> 'started' or 'complete', for each version schema in the database."""

    def read() -> dict[str, str]:
        with connect(url, autocommit=True, step="schema") as conn:
            rows = conn.execute(
                "SELECT nspname, obj_description(oid, 'pg_namespace') FROM pg_namespace "
                "WHERE nspname LIKE 'public\\_%%' AND obj_description(oid, 'pg_namespace') = ANY(%s) ORDER BY 1",
                ([versions.STARTED, versions.COMPLETE],),
            ).fetchall()
        return {name.removeprefix("public_"): state for name, state in rows}

    return retrying(read, what="read the live versions")


def pending(url: str) -> str | None:
    """The revision started and not yet completed (at most one: a start waits for it)."""
    started = [r for r, state in live_versions(url).items() if state == versions.STARTED]
    return started[0] if started else None


def typed(exc: BaseException, what: str) -> UserFacingError:
    """A failure of a step as the exception its exit code follows: decided by type, not by text."""
    cause = exc.__cause__ if isinstance(exc, RetriesExhausted) else exc
    driver = getattr(cause, "orig", None) or cause  # SQLAlchemy wraps the driver's error
    if isinstance(driver, psycopg.errors.LockNotAvailable):
        return LockTimedOut(f"{what}: lock timeout, the application held the table ({first_line(exc)})")
    if isinstance(driver, psycopg.errors.InsufficientPrivilege):
        return PrivilegeMissing(f"{what}: {first_line(exc)}; run schema changes as the owner of the tables")
    if isinstance(exc, UserFacingError):
        return exc
    return StepFailed(f"{what} failed: {first_line(exc)}")


def _unit(what: str, attempt: Callable[[bool], None]) -> None:
    """A step as one unit of the retry policy (tasks/retry.py), its failure typed. attempt(retry)
    starts from where the database stands: retry says an earlier attempt may have gone through
    (its acknowledgement lost) or stopped part way."""
    tries: list[bool] = []

    def once() -> None:
        retry = bool(tries)
        tries.append(True)
        attempt(retry)

    try:
        retrying(once, what=what)
    except Exception as exc:
        raise typed(exc, what) from exc


def _alembic(url: str, verb: Callable[[Config], None], phase: str | None, **timeouts: str | None) -> None:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            _current(conn)
            cfg = alembic_config(**timeouts)
            cfg.attributes["connection"] = conn
            if phase:
                cfg.attributes["schema_phase"] = phase
            verb(cfg)
    finally:
        engine.dispose()


def _timeouts(lock_timeout: str | None = None) -> str:
    """Session limits of a complete or rollback (checked durations, as the flow's options are)."""
    return f"SET lock_timeout = '{lock_timeout or LOCK_TIMEOUT}'; SET statement_timeout = '{STATEMENT_TIMEOUT}'"


def _run_phase(url: str, s: Step, phase: str, lock_timeout: str | None = None) -> None:
    """Run a revision's operations in one phase (complete, rollback), each statement on its own."""
    module = scripts().get_revision(s.revision).module
    engine = _engine(url)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(_timeouts(lock_timeout))
            context = MigrationContext.configure(conn, opts={"schema_phase": phase, "autocommit": True})
            with Operations.context(context):
                module.upgrade()
    finally:
        engine.dispose()


def start(url: str, s: Step, **timeouts: str | None) -> None:
    """Expand: the revision's start (for a plain revision, its whole upgrade). Refused while another
    revision is still rolling out; a failure undoes what it did, so a retry starts clean."""

    def attempt(retry: bool) -> None:
        if retry and current_revision(url) == s.revision:
            return  # the earlier attempt went through
        if s.online and (live := pending(url)) is not None:
            raise StepRefused(f"{live} is still rolling out: complete or roll it back before {s.revision} starts")
        try:
            _alembic(url, lambda cfg: command.upgrade(cfg, s.revision), "start" if s.online else None, **timeouts)
        except Exception as exc:
            if s.online:
                try:
                    _run_phase(url, s, "rollback", timeouts.get("lock_timeout"))
                except Exception as cleanup:  # the first error is the one to report
                    exc.add_note(f"cleaning up after it failed too: {first_line(cleanup)}")
            raise

    _unit(f"start {s.revision}", attempt)


def complete(url: str, s: Step, lock_timeout: str | None = None) -> None:
    """Contract: the previous version's schema goes, then each operation's complete (idempotent
    statements: a retry carries on from where the database stands)."""
    if not s.online:
        return

    def attempt(retry: bool) -> None:
        state = live_versions(url).get(s.revision)
        if retry and state == versions.COMPLETE:
            return
        if state != versions.STARTED:
            raise StepRefused(f"{s.revision} is not rolling out: nothing to complete")
        _run_phase(url, s, "complete", lock_timeout)

    _unit(f"complete {s.revision}", attempt)


def rollback(url: str, s: Step, lock_timeout: str | None = None) -> None:
    """Undo start (before complete): the new version's schema, triggers and columns go, and the
    database is back at the previous revision as if the start had never run."""

    def attempt(retry: bool) -> None:
        if live_versions(url).get(s.revision) == versions.STARTED:
            _run_phase(url, s, "rollback", lock_timeout)
        elif not retry:
            raise StepRefused(
                f"{s.revision} is not rolling out: nothing to roll back (a completed revision is downgraded)"
            )
        _forget_backfills(url, s)
        if current_revision(url) == s.revision:
            _alembic(
                url,
                lambda cfg: command.stamp(cfg, s.down_revision or "base", purge=s.down_revision is None),
                None,
            )

    _unit(f"rollback {s.revision}", attempt)


def _forget_backfills(url: str, s: Step) -> None:
    """The backfill engine's checkpoints of a rolled-back revision go with it."""
    with connect(url, autocommit=True, step="schema") as conn:
        if conn.execute("SELECT to_regclass('backfill_state') IS NOT NULL").fetchone()[0]:
            conn.execute("DELETE FROM backfill_state WHERE name = ANY(%s)", ([b.name for b in s.backfills],))


def downgrade(url: str, s: Step, **timeouts: str | None) -> None:
    """Undo a completed revision (its operations' downgrade, newest first)."""

    def attempt(retry: bool) -> None:
        if retry and current_revision(url) == s.down_revision:
            return  # the earlier attempt went through
        if (live := pending(url)) is not None:
            raise StepRefused(f"{live} is still rolling out: roll it back first")
        _alembic(url, lambda cfg: command.downgrade(cfg, s.down_revision or "base"), None, **timeouts)

    _unit(f"downgrade {s.revision}", attempt)


BackfillRunner = Callable[[Backfill], Any]


def engine_backfill(url: str, listener: Callable[[str], Callable[..., None]] | None = None) -> BackfillRunner:
    """Run a declared backfill with the batched engine (waiting for a scheduled run of it to finish);
    listener(name) gives the per-batch progress callback, closed afterwards if it has close()."""
    from tasks.backfill import run_backfill, spec_of

    def run(b: Backfill) -> object:
        on_batch = listener(b.name) if listener else None
        try:
            return run_backfill(url, spec_of(b), lock_wait=60, on_batch=on_batch)
        finally:
            close = getattr(on_batch, "close", None)
            if close is not None:
                close()

    return run


@dataclass(frozen=True)
class Action:
    """One unit of a schema run: a phase of a revision, or one of its backfills."""

    step: Step
    verb: str  # start | backfill | complete | rollback | downgrade
    backfill: Backfill | None = None

    @property
    def label(self) -> str:
        return f"{self.verb} {self.backfill.name if self.backfill else self.step.revision}"


def plan_upgrade(
    current: str | None, live: str | None, target: str | None, complete_all: bool
) -> tuple[list[Action], str | None]:
    """What an upgrade to target does: each revision started and backfilled; each completed when
    another follows and it is not breaking, or when complete_all; a breaking one that is not the
    target stops the run there (completing it is the operator's word). A revision left rolling out
    is carried on with first. Returns (actions, why it stopped short or None)."""
    direction, steps = path(current, target)
    if direction == "down" and steps:
        raise StepRefused(f"the database is at {current}, past {target or 'base'}: that is a downgrade")
    todo = ([step(live)] if live else []) + steps
    actions: list[Action] = []
    for i, s in enumerate(todo):
        last = i == len(todo) - 1
        if s.revision != live:
            actions.append(Action(s, "start"))
        actions += [Action(s, "backfill", b) for b in s.backfills]
        if not s.online:
            continue
        if complete_all or (not last and not s.breaking):
            actions.append(Action(s, "complete"))
        elif not last:
            return actions, (
                f"stopped at {s.revision}: it breaks the previous application version; run `complete` once "
                "every instance runs it, then upgrade again"
            )
    return actions, None


def run(url: str, action: Action, run_backfill: BackfillRunner | None = None, **timeouts: str | None) -> Any:
    """Carry out one action (the flow runs each as a Prefect task)."""
    lock = timeouts.get("lock_timeout")
    if action.verb == "start":
        return start(url, action.step, **timeouts)
    if action.verb == "backfill":
        assert action.backfill is not None
        return (run_backfill or engine_backfill(url))(action.backfill)
    if action.verb == "complete":
        return complete(url, action.step, lock)
    if action.verb == "rollback":
        return rollback(url, action.step, lock)
    return downgrade(url, action.step, **timeouts)


def upgrade(
    url: str, target: str = "head", *, complete_breaking: bool | None = None, **timeouts: str | None
) -> tuple[str | None, str | None]:
    """Bring the database to target and complete every step, without Prefect. A breaking step is
    completed only from base (no application version to protect) or with complete_breaking; else
    it is refused before anything runs. Returns (revision before, after)."""
    before = current_revision(url)
    live = pending(url)
    actions, _ = plan_upgrade(before, live, resolve(target), complete_all=True)
    if complete_breaking is None:
        complete_breaking = before is None
    breaking = [a.step.revision for a in actions if a.verb == "complete" and a.step.breaking]
    if breaking and not complete_breaking:
        raise StepRefused(
            f"{', '.join(breaking)} breaks the previous application version: roll it out with "
            "`python -m flows.schema upgrade`, then `complete` once every instance runs it"
        )
    for a in actions:
        run(url, a, **timeouts)
    return before, current_revision(url)


def downgrade_to(url: str, target: str | None, **timeouts: str | None) -> None:
    """Downgrade step by step to target (a revision rolling out is rolled back first)."""
    if (live := pending(url)) is not None:
        rollback(url, step(live), timeouts.get("lock_timeout"))
    _, steps = path(current_revision(url), target)
    for s in steps:
        downgrade(url, s, **timeouts)


def offline_sql(start_at: str | None, target: str | None, direction: str = "up", phase: str | None = None) -> str:
    """The SQL Alembic would run from start to target (every phase, unless one is named), without
    a database."""
    buffer = io.StringIO()
    cfg = alembic_config()
    cfg.output_buffer = buffer
    if phase:
        cfg.attributes["schema_phase"] = phase
    spec = f"{start_at or 'base'}:{target or 'base'}"
    if direction == "up":
        command.upgrade(cfg, spec, sql=True)
    else:
        command.downgrade(cfg, spec, sql=True)
    return buffer.getvalue()


def phase_sql(s: Step, phase: str) -> str:
    """The SQL of one phase of a revision, without a database: start as Alembic runs it, complete
    and rollback as they run on their own connection, each statement committing on its own."""
    if phase == "start":
        return offline_sql(s.down_revision, s.revision, phase="start")
    buffer = io.StringIO()
    context = MigrationContext.configure(
        dialect_name="postgresql",
        opts={"as_sql": True, "output_buffer": buffer, "schema_phase": phase, "autocommit": True},
    )
    with Operations.context(context) as operations:
        operations.execute(_timeouts())  # as complete and rollback set them for their session
        scripts().get_revision(s.revision).module.upgrade()
    return buffer.getvalue()


def model_drift(url: str) -> list[str]:
    """Differences Alembic's autogenerate sees between the SQLModel models and the live schema."""
    from alembic.autogenerate import compare_metadata

    from models import metadata

    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return [str(d) for d in compare_metadata(MigrationContext.configure(conn), metadata)]
    finally:
        engine.dispose()
