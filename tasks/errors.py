"""Failures a user can cause or fix, each with its exit code; their messages are one line and
safe to show (no passwords, no tracebacks)."""


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (the driver's, when SQLAlchemy wraps one), else its type."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip()
    return text.splitlines()[0] if text else type(inner).__name__


class UserFacingError(Exception):
    exit_code = 2


class InputError(UserFacingError):
    """Bad input or usage: the file, a flag, a mapping (exit 2)."""

    exit_code = 2


class VerificationFailed(UserFacingError):
    """The run finished but could not prove that nothing was lost (exit 1)."""

    exit_code = 1


class Unavailable(UserFacingError):
    """The database cannot be used right now: unreachable, or another run holds the lock (exit 3)."""

    exit_code = 3


class ReportNotWritten(Unavailable):
    """The run is in the database but its report could not be written (disk full, say): exit 3;
    the same command, run again, resumes the run and writes it."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that what cleans up
    after one does after both (psycopg cancels the running query, an interrupted run is marked so);
    the command exits 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
class FilesRefused(UserFacingError):
    """A run of many files loaded the ones it could and refused others whole (exit 4)."""

    exit_code = 4


class StepRefused(InputError):
    """A schema step that must not run yet: rows still NULL for a contract, a revision still
    rolling out when another would start, nothing to complete or roll back (exit 2)."""


class StepFailed(VerificationFailed):
    """A schema step failed on the database; what it had done was undone (exit 1)."""


class LockTimedOut(Unavailable):
    """A schema step waited for its lock longer than lock_timeout, retries included (exit 3)."""
