"""Undo a Phase 1 run: remove exactly the rows it inserted, put back the rows a re-sync updated or
deleted as they were before (migration_row_history), in one transaction, and prove it."""

from __future__ import annotations

from typing import Any

import psycopg

from tasks.db import Session
from tasks.errors import InputError
from tasks.resync import CONTENT
from tasks.runs import STILL_DELETED, has_table


def rollback_run(url: str, run_id: str, *, force: bool = False, lock_wait: float = 0.0) -> dict[str, Any]:
    """Delete the run's tasks, quarantine rows and checkpoints, and the users it created that no
    task uses any more. Refuses (unless force) when the application changed the run's rows since.
    The removal is one transaction and one unit of the retry policy (tasks/retry.py)."""
    tries: list[bool] = []
    with Session(url, lock_wait=lock_wait) as session:
        done = session.run("phase1:rollback", _remove, run_id, force, tries)
        left = session.run(
            "phase1:rollback",
            lambda conn: conn.execute(
                "SELECT (SELECT count(*) FROM tasks WHERE migration_run_id = %(r)s), "
                "(SELECT count(*) FROM quarantine WHERE run_id = %(r)s), "
                "(SELECT count(*) FROM migration_checkpoints WHERE run_id = %(r)s)",
                {"r": run_id},
            ).fetchone(),
        )
    status, stats, tasks_removed, restored, users, kept, quarantine_removed, checkpoints_removed, changed, gone = done
    problems = []
    if any(left):
        problems.append(
            f"rows of the run remain after the rollback (tasks, quarantine, checkpoints: {tuple(left)})"
        )
    stats = stats or {}
    expected = stats.get("inserted", stats.get("migrated"))  # runs before re-syncs counted "migrated"
    if expected is not None and status == "completed" and expected != tasks_removed + gone:
        problems.append(
            f"the run inserted {expected} rows but {tasks_removed} were removed and {gone} had been deleted since"
        )
    return {
        "title": "Phase 1 rollback",
        "kind": "phase1-rollback",
        "run_id": run_id,
        "status": "rolled_back" if not problems else "rollback_unverified",
        "counts": {
            "tasks_removed": tasks_removed,
            "users_removed": len(users),
            "quarantine_removed": quarantine_removed,
            "checkpoints_removed": checkpoints_removed,
            "rows_restored": restored,
            "rows_deleted_since": gone,  # by the application, or by a later re-sync's --propagate-deletes
        },
        "users_removed": [u[0] for u in users],
        "users_kept_in_use": [u[0] for u in kept],
        "verification": {"ok": not problems, "problems": problems},
        "forced": bool(changed and force),
    }


def _remove(conn: psycopg.Connection, run_id: str, force: bool, tries: list[bool]) -> tuple[Any, ...]:
    """The rollback's transaction. `tries` says whether an earlier attempt may have committed (its
    acknowledgement lost): then a run found rolled back is that attempt's, its counts in its stats."""
    retry = bool(tries)
    tries.append(True)
    run = (
        conn.execute(
            "SELECT status, finished_at, started_at, stats FROM migration_runs WHERE id::text = %s AND kind = 'phase1'",
            (run_id,),
        ).fetchone()
        if _is_uuid(run_id)
        else None
    )
    if run is None:
        raise InputError(f"no Phase 1 run with id {run_id}")
    status, finished_at, started_at, stats = run
    if status == "rolled_back":
        if retry:
            return (stats.get("status_before"), stats, stats.get("rows_removed", 0), stats.get("rows_restored", 0),
                    [], [], 0, 0, 0, stats.get("rows_deleted_since", 0))  # fmt: skip
        raise InputError(f"run {run_id} was already rolled back")
    since = finished_at or started_at
    changed = conn.execute(
        "SELECT count(*) FROM tasks WHERE migration_run_id = %s AND updated_at > %s", (run_id, since)
    ).fetchone()[0]
    if changed and not force:
        raise InputError(
            f"{changed} rows of run {run_id} were changed after the run; rolling back would lose those changes "
            "(use --force to remove them anyway)"
        )
    # A later re-sync that changed again rows this one updated or deleted: putting back what this
    # run found would undo that one's changes too, which its own rollback could then not put back.
    later = conn.execute(
        "SELECT DISTINCT h2.run_id::text FROM migration_row_history h JOIN migration_row_history h2 "
        "ON h2.task_id = h.task_id AND h2.run_id <> h.run_id JOIN migration_runs r2 ON r2.id = h2.run_id "
        "WHERE h.run_id = %s AND r2.started_at > %s ORDER BY 1",
        (run_id, started_at),
    ).fetchall()
    if later:
        raise InputError(
            f"later run{'s' if len(later) > 1 else ''} {', '.join(r[0] for r in later)} changed again rows run "
            f"{run_id} updated or deleted; roll {'them' if len(later) > 1 else 'it'} back first"
        )
    with conn.transaction():
        noted = has_table(conn, "migration_deleted")  # revision 0012 on: the application's deletes
        deleted_since = _deleted_since(conn, run_id, noted)
        tasks_removed = conn.execute("DELETE FROM tasks WHERE migration_run_id = %s", (run_id,)).rowcount
        if noted:  # as if the run never was: its rows may be written again
            conn.execute("DELETE FROM migration_deleted WHERE migration_run_id = %s", (run_id,))
        restored = _restore_history(conn, run_id)
        users = conn.execute(
            "DELETE FROM users u WHERE u.migration_run_id = %s "
            "AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.user_id = u.id) RETURNING email",
            (run_id,),
        ).fetchall()
        kept = conn.execute("SELECT email FROM users WHERE migration_run_id = %s", (run_id,)).fetchall()
        quarantine_removed = conn.execute("DELETE FROM quarantine WHERE run_id = %s", (run_id,)).rowcount
        checkpoints_removed = conn.execute(
            "DELETE FROM migration_checkpoints WHERE run_id = %s", (run_id,)
        ).rowcount
        conn.execute("DELETE FROM migration_files WHERE run_id = %s", (run_id,))
        conn.execute("DELETE FROM migration_seen WHERE run_id = %s", (run_id,))
        conn.execute(
            "UPDATE migration_runs SET status = 'rolled_back', stats = stats || jsonb_build_object("
            "'rolled_back_at', now(), 'rows_removed', %s::int, 'rows_restored', %s::int, 'status_before', %s::text, "
            "'rows_deleted_since', %s::int) WHERE id = %s",
            (tasks_removed, restored, status, deleted_since, run_id),
        )
    return (status, stats, tasks_removed, restored, users, kept, quarantine_removed, checkpoints_removed, changed,
            deleted_since)  # fmt: skip


def _deleted_since(conn: psycopg.Connection, run_id: str, noted: bool) -> int:
    """Rows the run inserted that are gone already: deleted by the application (migration_deleted)
    or by a later re-sync's --propagate-deletes (its history keeps the row as it was)."""
    by_app = f"(SELECT count(*) FROM migration_deleted d WHERE d.migration_run_id = %(r)s AND {STILL_DELETED})"
    row = conn.execute(
        f"SELECT {by_app if noted else '0'} + (SELECT count(*) FROM "
        "migration_row_history WHERE op = 'delete' AND run_id <> %(r)s AND before->>'migration_run_id' = %(r)s::text)",
        {"r": run_id},
    ).fetchone()
    return int(row[0]) if row else 0


def _restore_history(conn: Any, run_id: str) -> int:
    """The rows a re-sync run updated get their content back; the ones it deleted come back whole."""
    columns = [*CONTENT.split(", "), "created_at", "updated_at", "legacy_checksum"]
    restored = conn.execute(
        f"UPDATE tasks t SET ({', '.join(columns)}) = ({', '.join('b.' + c for c in columns)}) "
        "FROM migration_row_history h, json_populate_record(NULL::tasks, h.before) b "
        "WHERE h.run_id = %s AND h.op = 'update' AND t.id = h.task_id",
        (run_id,),
    ).rowcount
    restored += conn.execute(
        "INSERT INTO tasks SELECT (json_populate_record(NULL::tasks, h.before)).* FROM migration_row_history h "
        "WHERE h.run_id = %s AND h.op = 'delete' ON CONFLICT (id) DO NOTHING",
        (run_id,),
    ).rowcount
    conn.execute("DELETE FROM migration_row_history WHERE run_id = %s", (run_id,))
    return restored


def _is_uuid(text: str) -> bool:
    import uuid

    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
