"""Branches on a real PostgreSQL server (the local provider), the rehearse and rollback flows, and the
disaster-recovery drill: checkpoint, migrate, wreck, restore, and prove main equals the checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from bench.workload import seed_tasks
from flows.rollback import fingerprints
from tasks import schema
from tasks.branching.local import LocalBranches
from tasks.errors import InputError
from tests.conftest import artifact_keys
from tests.drill import run_drill
from tests.faults import branches_of


def one(url: str, query: str):
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchone()[0]


def name_of(url: str) -> str:
    return LocalBranches(url).main


def test_create_list_reset_restore_delete(db_url: str) -> None:
    seed_tasks(db_url, 100)
    branches = LocalBranches(db_url)
    dev = f"{branches.main}-dev"
    made = branches.create(dev)
    assert made.parent == branches.main and made.created_at is not None
    assert [b.name for b in branches.list() if b.name.startswith(branches.main)] == [dev]
    dev_url = branches.url(dev)
    assert fingerprints(dev_url) == fingerprints(db_url)

    with psycopg.connect(dev_url) as conn:
        conn.execute("DELETE FROM tasks WHERE legacy_id <= 10")
    assert one(dev_url, "SELECT count(*) FROM tasks") == 90
    branches.reset(dev)  # a fresh copy of its parent again
    assert fingerprints(dev_url) == fingerprints(db_url)

    with psycopg.connect(dev_url) as conn:
        conn.execute("UPDATE tasks SET title = 'from dev'")
    before = fingerprints(db_url)
    branches.restore(branches.main, source_branch=dev, preserve_under_name=f"{branches.main}-old")
    assert fingerprints(db_url) == fingerprints(dev_url)
    assert fingerprints(branches.url(f"{branches.main}-old")) == before  # the previous main is kept
    branches.delete(dev)
    assert dev not in {b.name for b in branches.list()}


def test_branch_rules_give_one_line_errors(db_url: str) -> None:
    branches = LocalBranches(db_url)
    with pytest.raises(InputError, match="invalid branch name"):
        branches.create("bad name; drop")
    with pytest.raises(InputError, match="main database"):
        branches.delete(branches.main)
    with pytest.raises(InputError, match="no branch"):
        branches.delete("t_not_a_branch")
    with pytest.raises(InputError, match="needs --provider neon"):
        branches.create(f"{branches.main}-pitr", at="2026-11-24T00:00:00Z")
    branches.create(f"{branches.main}-x")
    with pytest.raises(InputError, match="already exists"):
        branches.create(f"{branches.main}-x")


def test_a_template_copy_of_a_busy_database_ends_its_sessions_and_says_so(db_url: str) -> None:
    branches = LocalBranches(db_url, copy="template")
    busy = psycopg.connect(db_url)
    branches.create(f"{branches.main}-copy")
    assert branches.notes and "ended 1 session(s)" in branches.notes[0]
    with pytest.raises(psycopg.OperationalError):  # that session was ended
        busy.execute("SELECT 1")


def test_rehearsal_passes_on_a_branch_and_leaves_main_alone(flow_env: dict[str, str]) -> None:
    from flows.branches import rehearse

    url = flow_env["db_url"]
    schema.downgrade_to(url, "0002")
    seed_tasks(url, 500)
    before = fingerprints(url)
    state = rehearse(report_dir=flow_env["report_dir"], return_state=True)
    assert state.is_completed(), state.message
    report = state.result()["report_data"]
    assert [s["status"] for s in report["steps"]] == ["COMPLETED", "COMPLETED"]
    assert schema.current_revision(url) == "0002" and fingerprints(url) == before
    assert report["branch"]["name"] not in {b.name for b in LocalBranches(url).list()}  # dropped
    assert "rehearsal-report" in artifact_keys(state.state_details.flow_run_id)


def test_a_failed_rehearsal_keeps_its_branch_and_says_where(flow_env: dict[str, str]) -> None:
    from flows.branches import rehearse

    url = flow_env["db_url"]
    seed_tasks(url, 50)
    with psycopg.connect(url) as conn:  # an orphan the audit will find on the branch
        conn.execute("ALTER TABLE tasks DROP CONSTRAINT fk_tasks_user_id")
        conn.execute("DELETE FROM users")
    state = rehearse(report_dir=flow_env["report_dir"], return_state=True)
    assert state.is_failed()
    report = state.result(raise_on_failure=False)["report_data"]
    kept = report["branch"]["name"]
    assert kept in {b.name for b in LocalBranches(url).list()}
    assert f"branch {kept} kept at" in report["notes"][-1] and "FAILED" in report["notes"][-1]


def test_rollback_downgrade_is_verified_against_its_checkpoint(flow_env: dict[str, str]) -> None:
    from flows.rollback import rollback_downgrade

    url = flow_env["db_url"]
    seed_tasks(url, 300)
    lossy = rollback_downgrade(to="7", allow_data_loss=True, report_dir=flow_env["report_dir"], return_state=True)
    # 0013 gives its seen ids back as rows, 0012 forgets the application's deletes, 0011 drops the
    # re-sync bookkeeping, 0009 loses in_progress, 0008 legacy_key: consent given
    assert lossy.is_completed(), lossy.message
    state = rollback_downgrade(to="2", report_dir=flow_env["report_dir"], return_state=True)
    assert state.is_completed(), state.message
    report = state.result()["report_data"]
    assert report["schema"]["after"] == "0005" and report["verification"]["ok"]
    refused = rollback_downgrade(to="0004", report_dir=flow_env["report_dir"], return_state=True)
    assert refused.result(raise_on_failure=False)["exit_code"] == 2  # 0005 would drop priority
    lossy = rollback_downgrade(
        to="0004", allow_data_loss=True, report_dir=flow_env["report_dir"], return_state=True
    )
    report = lossy.result()["report_data"]
    assert report["verification"]["ok"] and "tasks.priority" in report["notes"][0]


def test_disaster_recovery_drill(flow_env: dict[str, str], tmp_path: Path) -> None:
    """Checkpoint, migrate, wreck the data mid-way (kill -9, delete, overwrite), restore, prove."""
    url = flow_env["db_url"]
    env = {**os.environ, "PREFECT_API_URL": flow_env["api_url"], "DATABASE_URL": url}
    run_drill(
        url,
        env,
        tmp_path,
        "local",
        lambda: [name for name in branches_of(url) if "-backup-" in name],
        LocalBranches(url).url,
    )
