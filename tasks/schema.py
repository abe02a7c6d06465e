"""Alembic, driven from code: where a database stands, what is pending, and moving it revision by
revision, with each contract step's backfills run to completion before it.

The connection is handed to env.py through `config.attributes["connection"]` (the cookbook
pattern), outside any transaction: env.py runs a transaction per revision, and revisions with
CONCURRENTLY or validation steps commit statement by statement (tasks/ddl.py).

Every revision module says what it is: `phase` ("expand" or "contract"), `backfills` (named
backfills that must leave no NULL before it runs) and `downgrade_loses` (None, or what its downgrade
cannot give back).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, pool

from tasks.db import PROJECT_ROOT, connect, retrying, sqlalchemy_url
from tasks.errors import InputError, first_line


@dataclass(frozen=True)
class Step:
    revision: str
    down_revision: str | None
    doc: str
    phase: str
    backfills: tuple[str, ...]
    downgrade_loses: str | None


def alembic_config(lock_timeout: str | None = None, statement_timeout: str | None = None) -> Config:
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(Path(PROJECT_ROOT / "migrations")))
    cfg.attributes["driven_from_code"] = True  # env.py leaves the caller's logging alone
    if lock_timeout:
        cfg.attributes["lock_timeout"] = lock_timeout
    if statement_timeout:
        cfg.attributes["statement_timeout"] = statement_timeout
    return cfg


def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    return scripts().get_current_head() or ""


def step(revision: str) -> Step:
    script = scripts().get_revision(revision)
    if script is None:
        raise InputError(f"no revision {revision!r}")
    module = script.module
    return Step(
        script.revision,
        script.down_revision if isinstance(script.down_revision, str) else None,
        (script.doc or "").strip(),
        getattr(module, "phase", "expand"),
        tuple(getattr(module, "backfills", ())),
        getattr(module, "downgrade_loses", None),
    )


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
    order = [s.revision for s in reversed(list(scripts().walk_revisions()))]  # base → head
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


def move(url: str, revision: str | None, direction: str, **timeouts: str | None) -> None:
    """One alembic upgrade/downgrade to `revision`, retried with backoff when a lock timeout (or
    another transient error) stops it; each revision is its own transaction (or idempotent
    statements), so a retry starts from where the database stands."""

    def attempt() -> None:
        engine = _engine(url)
        try:
            with engine.connect() as conn:
                _current(conn)
                cfg = alembic_config(**timeouts)
                cfg.attributes["connection"] = conn
                if direction == "up":
                    command.upgrade(cfg, revision or "base")
                else:
                    command.downgrade(cfg, revision or "base")
        finally:
            engine.dispose()

    retrying(attempt, what=f"{direction}grade to {revision or 'base'}")


StepListener = Callable[[Step, str], None]
BackfillRunner = Callable[[str], object]


def engine_backfill(url: str, listener: Callable[[str], Callable[..., None]] | None = None) -> BackfillRunner:
    """Run a named backfill with the engine's defaults (waiting for a scheduled run of it to finish);
    listener(name) gives the per-batch progress callback, closed afterwards if it has close()."""
    from tasks.backfill import named, run_backfill

    def run(name: str) -> object:
        on_batch = listener(name) if listener else None
        try:
            return run_backfill(url, named(name), lock_wait=60, on_batch=on_batch)
        finally:
            close = getattr(on_batch, "close", None)
            if close is not None:
                close()

    return run


def apply(
    url: str,
    steps: list[Step],
    direction: str,
    *,
    run_backfill: BackfillRunner | None = None,
    on_step: StepListener | None = None,
    lock_timeout: str | None = None,
    statement_timeout: str | None = None,
) -> None:
    """Move through `steps` (as path() returned them). Going up, a contract step's backfills run to
    completion first; going down, each step's downgrade runs."""
    run_backfill = run_backfill or engine_backfill(url)
    for s in steps:
        if direction == "up":
            for name in s.backfills:
                if on_step:
                    on_step(s, f"backfill {name}")
                run_backfill(name)
        if on_step:
            on_step(s, "upgrade" if direction == "up" else "downgrade")
        revision = s.revision if direction == "up" else s.down_revision
        move(url, revision, direction, lock_timeout=lock_timeout, statement_timeout=statement_timeout)


def upgrade(
    url: str,
    target: str = "head",
    *,
    run_backfill: BackfillRunner | None = None,
    on_step: StepListener | None = None,
    lock_timeout: str | None = None,
    statement_timeout: str | None = None,
) -> tuple[str | None, str | None]:
    """Upgrade to target revision by revision (see apply()). Returns (revision before, after)."""
    before = current_revision(url)
    direction, steps = path(before, resolve(target))
    if direction == "down":
        raise InputError(f"the database is at {before}, past {target}: that is a downgrade")
    apply(
        url,
        steps,
        "up",
        run_backfill=run_backfill,
        on_step=on_step,
        lock_timeout=lock_timeout,
        statement_timeout=statement_timeout,
    )
    return before, current_revision(url)


def offline_sql(start: str | None, target: str | None, direction: str = "up") -> str:
    """The SQL Alembic would run from start to target, rendered without a database."""
    buffer = io.StringIO()
    cfg = alembic_config()
    cfg.output_buffer = buffer
    spec = f"{start or 'base'}:{target or 'base'}"
    if direction == "up":
        command.upgrade(cfg, spec, sql=True)
    else:
        command.downgrade(cfg, spec, sql=True)
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
