"""The checkpoint branch a flow takes before it writes: `<db>-backup-<UTC time>`, named in its report.

The migration lock is taken first, so a run that would have to wait for another one says so (exit
3) before anything is copied. Locally the copy is online by default: the lock is held while a
consistent snapshot is copied, the application goes on working and nobody is disconnected, and the
copy is verified against the source table by table (tasks/branching/snapshot.py). `--template-copy`
copies with CREATE DATABASE … TEMPLATE, which ends every other session on the database, this
command's own included, so the lock is released first and the report says how many were ended. On
Neon a branch is instant and nobody is disconnected. A role that may not take the checkpoint is
refused before anything is written (exit 2, naming the privilege and the ways on).
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger

from tasks.branching import checkpoint_name, provider
from tasks.db import Session


def take_checkpoint(url: str, kind: str | None, lock_wait: float) -> tuple[dict[str, Any], list[str]]:
    """Returns (the branch, described; notes for the report)."""
    branches = provider(kind, url)
    branches.check_main(url)
    method = getattr(branches, "copy", "branch")  # local: online or template; Neon: its own branch
    with Session(url, lock_wait=lock_wait) as lock:
        lock.run("checkpoint:lock", lambda _conn: None)
        if method == "template":
            lock.close()  # the template copy ends every session on the database, this one too
        made = branches.create(checkpoint_name(branches.main), branches.main)
    get_run_logger().info("checkpoint branch %s taken (%s)", made.name, method)
    notes = [f"checkpoint branch {made.name}: {n}" for n in getattr(branches, "notes", [])]
    if method == "online":
        notes.append(f"checkpoint branch {made.name}: copied online and verified table by table; nobody was disconnected")
    return {**made.describe(), "copy": method}, notes
