"""The branch interface every backend implements, and the choice of backend."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from tasks.errors import InputError


@dataclass(frozen=True)
class Branch:
    name: str
    parent: str | None
    created_at: datetime | None
    id: str = ""  # the backend's own id (Neon's br-…); the database name locally

    def describe(self) -> dict[str, str | None]:
        return {
            "name": self.name,
            "parent": self.parent,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "id": self.id or self.name,
        }


class BranchProvider(Protocol):
    """What rehearsals, checkpoints, rollback and recovery need from a backend."""

    kind: str
    main: str  # the name of the main branch (locally: the main database)

    def create(self, name: str, parent: str | None = None, *, at: str | None = None) -> Branch: ...

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

    def url(self, name: str) -> str: ...


def checkpoint_name(database: str, now: datetime | None = None) -> str:
    """`<db>-backup-<UTC timestamp>`: sortable, and unique to the second."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{database}-backup-{moment:%Y%m%dT%H%M%SZ}"


def provider(kind: str | None, database_url: str) -> BranchProvider:
    """`local` (default) or `neon`, from the argument or $BRANCH_PROVIDER."""
    kind = (kind or os.environ.get("BRANCH_PROVIDER") or "local").lower()
    if kind == "local":
        from tasks.branching.local import LocalBranches

        return LocalBranches(database_url)
    if kind == "neon":
        from tasks.branching.neon import NeonBranches

        return NeonBranches.from_environment()
    raise InputError(f"unknown branch provider {kind!r} (local or neon)")
