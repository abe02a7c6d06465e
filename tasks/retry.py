"""The one retry policy: which faults are retried, where, and for how long.

Retries live at one depth, around *units*: work that commits or rolls back whole, or only reads, so
that running it again from its start is safe. The units are: a step of a flow on its control
session (start or resume a run, verify, finish: `tasks.db.Session.run`), a chunk of a load with its
checkpoint, a backfill batch with its checkpoint, one Alembic revision, a checkpoint copy, a branch
operation, one Neon API call. A unit that fails with a transient fault (the session ended, the
server shutting down or starting up, a serialization failure, a deadlock, a lock timeout; for Neon,
423 and 503) runs again from its start on a fresh connection, after an exponential backoff with
jitter, until RETRY_WINDOW seconds (60; `MIGRATION_RETRY_WINDOW`) have passed since its first
failure; then it fails as `RetriesExhausted` (exit 3), and the same command resumes the run.

Nothing else retries: `connect()` tries once, Prefect tasks have no retries of their own, and a unit
called inside another unit runs once (the outer one runs again whole). So a permanent fault ends a
command within the window plus one attempt (at most `connect_timeout`, 10 s, for a server that does
not answer). A server this process never reached is not waited for: a wrong URL fails at once.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg

from tasks.errors import Unavailable, first_line

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_WINDOW = 60.0  # seconds from a unit's first failure during which it is tried again
BASE_DELAY, MAX_DELAY = 0.25, 8.0

# SQLSTATEs that say "try again": serialization failure, deadlock, lock timeout, admin shutdown,
# crash shutdown, cannot connect now (starting up), and the whole connection-exception class 08.
TRANSIENT_SQLSTATES = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03"}


class RetriesExhausted(Unavailable):
    """A unit still failed with a transient fault when the retry window was spent (exit 3)."""


def window() -> float:
    return float(os.environ.get("MIGRATION_RETRY_WINDOW", RETRY_WINDOW))


def is_transient(exc: BaseException) -> bool:
    """True for faults a retry can cure; never for bad data, bad SQL or a missing privilege."""
    if getattr(exc, "transient", False):  # ours: e.g. a lost connection, wrapped with its message
        return True
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


def delay(attempt: int) -> float:
    """The pause before retry number attempt + 1: exponential, capped, with jitter."""
    return min(MAX_DELAY, BASE_DELAY * 2**attempt) * random.uniform(0.5, 1.0)


_inside = threading.local()


def retrying(
    fn: Callable[[], T],
    *,
    what: str,
    transient: Callable[[BaseException], bool] = is_transient,
    before_retry: Callable[[], None] | None = None,
) -> T:
    """Run the unit fn under the policy (see the module's docstring); before_retry() runs before
    each new attempt (to drop a broken connection, or what a failed attempt left)."""
    if getattr(_inside, "unit", None) is not None:
        return fn()  # the enclosing unit is the one that runs again
    _inside.unit = what
    first_failure: float | None = None
    attempt = 0
    try:
        while True:
            try:
                return fn()
            except Exception as exc:
                if not transient(exc):
                    raise
                now = time.monotonic()
                first_failure = first_failure if first_failure is not None else now
                pause = delay(attempt)
                if now + pause - first_failure > window():
                    raise RetriesExhausted(
                        f"{what} still failed after {attempt + 1} attempts over {now - first_failure:.0f} s "
                        f"({first_line(exc)}); run the same command again to resume"
                    ) from exc
                log.warning("%s failed (%s); retrying in %.2fs", what, first_line(exc), pause)
                time.sleep(pause)
                attempt += 1
                if before_retry is not None:
                    before_retry()
    finally:
        _inside.unit = None
