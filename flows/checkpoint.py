"""The checkpoint branch a flow takes before it writes: `<db>-backup-<UTC time>`, named in its report.

The migration lock is probed first, so a run that would have to wait for another one says so
(exit 3) before anything is copied, and a local checkpoint never ends another migration's session.
Locally, copying a database needs a moment without other sessions on it: they are ended, and the
report says how many; on Neon a branch is instant and nobody is disconnected.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger

from tasks.branching import checkpoint_name, provider
from tasks.db import acquire_run_lock, connect, release_run_lock


def take_checkpoint(url: str, kind: str | None, lock_wait: float) -> tuple[dict[str, Any], list[str]]:
    """Returns (the branch, described; notes for the report)."""
    with connect(url, autocommit=True) as probe:
        acquire_run_lock(probe, wait_seconds=lock_wait)
        release_run_lock(probe)
    branches = provider(kind, url)
    branches.check_main(url)
    made = branches.create(checkpoint_name(branches.main), branches.main)
    get_run_logger().info("checkpoint branch %s taken", made.name)
    return made.describe(), [f"checkpoint branch {made.name}: {n}" for n in getattr(branches, "notes", [])]
