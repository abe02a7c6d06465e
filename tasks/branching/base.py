"""The branch interface every backend implements, and the choice of backend."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from tasks.errors import InputError


@dataclass(frozen=True)
class Branch:
    name: str
    parent: str | None
    created_at: datetime | None
    id: str = ""  # the backend's own id (Neon's br-…); the database name locally
    expires_at: datetime | None = None  # deleted by the backend after this (Neon's expires_at)

    def describe(self) -> dict[str, str | None]:
        return {
            "name": self.name,
            "parent": self.parent,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "id": self.id or self.name,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }


class BranchProvider(Protocol):
    """What rehearsals, checkpoints, rollback and recovery need from a backend."""

    kind: str
    main: str  # the name of the main branch (locally: the main database)

    def create(
        self, name: str, parent: str | None = None, *, at: str | None = None, expires_at: datetime | None = None
    ) -> Branch: ...

    def list(self) -> list[Branch]: ...

    def delete(self, name: str) -> None: ...

    def reset(self, name: str) -> Branch:
        """Make the branch a fresh copy of its parent again."""
        ...

    def restore(
        self,
        target: str,
        *,
        source_branch: str | None = None,
        timestamp: str | None = None,
        preserve_under_name: str | None = None,
    ) -> None:
        """The target's content becomes the source branch's (or its own at timestamp)."""
        ...

    def url(self, name: str) -> str:
        """The branch's direct URI, for the flows that are about to use it."""
        ...

    def connection_uri(
        self, name: str, *, pooled: bool = False, database: str | None = None, role: str | None = None
    ) -> str:
        """The branch's URI for a person or another environment (password included: mask it to show)."""
        ...

    def check_main(self, url: str) -> None:
        """Raise InputError unless `url` reaches the main branch, which checkpoints and restores act on."""
        ...


def checkpoint_prefix(database: str) -> str:
    """What the name of every checkpoint of `database` starts with."""
    return f"{database}-backup-"


def checkpoint_name(database: str, now: datetime | None = None) -> str:
    """`<db>-backup-<UTC timestamp>`: sortable, and unique to the second."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{checkpoint_prefix(database)}{moment:%Y%m%dT%H%M%SZ}"


_DURATION = re.compile(r"(\d+)([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def expiry(expires_in: str | None, now: datetime | None = None) -> datetime | None:
    """`7d`, `12h`, `30m`, `2w` from now, to the second (Neon takes RFC 3339 with seconds)."""
    if not expires_in:
        return None
    found = _DURATION.fullmatch(expires_in.strip())
    if not found or int(found[1]) == 0:
        raise InputError(f"--expires-in {expires_in!r} is not a duration such as 7d, 12h, 30m or 2w")
    moment = (now or datetime.now(UTC)) + timedelta(**{_UNITS[found[2]]: int(found[1])})
    return moment.astimezone(UTC).replace(microsecond=0)


def rfc3339(moment: datetime) -> str:
    """2026-11-24T01:00:00Z: what Neon's date-time fields take."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def point_in_time(text: str) -> str:
    """A user's timestamp as RFC 3339 in UTC; one without a time zone is refused, not guessed."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"{text!r} is not an ISO 8601 timestamp such as 2026-11-24T01:00:00Z") from None
    if moment.tzinfo is None:
        raise InputError(f"{text!r} has no time zone: write it in UTC, e.g. {text.strip()}Z")
    return rfc3339(moment)


def provider(kind: str | None, database_url: str | None) -> BranchProvider:
    """`local` (default) or `neon`, from the argument or $BRANCH_PROVIDER. Only the local provider
    needs the main database's URL (None: the usual default, which may start the embedded server)."""
    kind = (kind or os.environ.get("BRANCH_PROVIDER") or "local").lower()
    if kind == "local":
        from tasks.branching.local import LocalBranches
        from tasks.db import database_url as default_url

        return LocalBranches(database_url or default_url())
    if kind == "neon":
        from tasks.branching.neon import NeonBranches

        return NeonBranches.from_environment()
    raise InputError(f"unknown branch provider {kind!r} (local or neon)")
