"""The schema flow through the Prefect engine on real PostgreSQL: upgrade with backfills, a no-op
second run, failure returning to the start, refusal of a data-losing downgrade, and the online proof:
the old application keeps writing, unharmed, while `upgrade head` runs over a populated table."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from bench.workload import Writers, seed_tasks
from tasks import schema
from tasks.branching.local import LocalBranches
from tests.conftest import artifact_keys


def at(url: str, revision: str, rows: int = 0) -> None:
    """Put the (empty, test) database at revision, then seed it."""
    direction, steps = schema.path(schema.current_revision(url), revision)
    schema.apply(url, steps, direction)
    if rows:
        seed_tasks(url, rows)


def one(url: str, query: str, *params: object):
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchone()[0]


def test_upgrade_runs_backfills_records_steps_and_reports(flow_env: dict[str, str]) -> None:
    from flows.schema import schema_upgrade

    url = flow_env["db_url"]
    at(url, "0002", rows=3_000)
    state = schema_upgrade(report_dir=flow_env["report_dir"], return_state=True)
    assert state.is_completed(), state.message
    out = state.result()
    report = json.loads((Path(flow_env["report_dir"]) / out["run_id"] / "report.json").read_text())
    assert report["schema"] == {"before": "0002", "after": "0009", "target": "0009"}
    assert [s["status"] for s in report["steps"]] == ["applied"] * 7
    assert any("CREATE UNIQUE INDEX CONCURRENTLY" in block["sql"] for block in report["sql"])
    assert report["integrity"]["after"]["row_counts"]["tasks"] == 3_000
    assert one(url, "SELECT count(*) FROM tasks WHERE tags IS NULL OR priority IS NULL") == 0
    steps = one(
        url, "SELECT count(*) FROM migration_runs WHERE kind = 'schema-step' AND status = 'completed'"
    )
    assert steps == 7
    assert report["checkpoint"]["name"] in {b.name for b in LocalBranches(url).list()}
    assert artifact_keys(state.state_details.flow_run_id) == {"schema-report", "backfill-progress"}

    again = schema_upgrade(report_dir=flow_env["report_dir"], return_state=True, checkpoint=False)
    assert again.is_completed() and again.result()["status"] == "noop"


def test_a_failing_step_returns_the_database_to_where_it_started(flow_env: dict[str, str]) -> None:
    from flows.schema import schema_upgrade

    url = flow_env["db_url"]
    at(url, "0005", rows=200)
    with psycopg.connect(url) as conn:  # a value the CHECK forbids, slipped in while it was off
        conn.execute("ALTER TABLE tasks DROP CONSTRAINT ck_tasks_priority")
        conn.execute("UPDATE tasks SET priority = 'urgent' WHERE legacy_id = 7")
        conn.execute(
            "ALTER TABLE tasks ADD CONSTRAINT ck_tasks_priority CHECK (priority IN ('low', 'medium', 'high')) NOT VALID"
        )
    state = schema_upgrade(report_dir=flow_env["report_dir"], return_state=True, checkpoint=False)
    assert state.is_failed()
    out = state.result(raise_on_failure=False)
    assert out["exit_code"] == 1
    assert "upgrade of 0006 failed" in out["report_data"]["notes"][-1]
    assert schema.current_revision(url) == "0005"
    with psycopg.connect(url) as conn:  # the half-done step left nothing behind
        names = {
            r[0] for r in conn.execute("SELECT conname FROM pg_constraint WHERE conrelid = 'tasks'::regclass")
        }
    assert "ck_tasks_priority_not_null" not in names
    assert (
        one(url, "SELECT status FROM migration_runs WHERE kind = 'schema-step' AND source_name = '0006'")
        == "failed"
    )


def test_failure_after_some_steps_undoes_them(flow_env: dict[str, str]) -> None:
    from flows.schema import schema_upgrade

    url = flow_env["db_url"]
    at(url, "0002", rows=100)
    with psycopg.connect(url) as conn:  # 0007 will collide with this and fail
        conn.execute("CREATE TABLE ix_tasks_user_id_completed (x int)")
    state = schema_upgrade(report_dir=flow_env["report_dir"], return_state=True, checkpoint=False)
    out = state.result(raise_on_failure=False)
    assert state.is_failed() and "upgrade of 0007 failed" in out["report_data"]["notes"][-1]
    assert schema.current_revision(url) == "0002"
    assert (
        one(
            url,
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'tasks' AND column_name IN ('tags', 'priority')",
        )
        == 0
    )


def test_a_data_losing_downgrade_needs_consent_and_takes_a_checkpoint_first(flow_env: dict[str, str]) -> None:
    from flows.schema import schema_downgrade

    url = flow_env["db_url"]
    seed_tasks(url, 50)
    refused = schema_downgrade(target="0004", report_dir=flow_env["report_dir"], return_state=True)
    out = refused.result(raise_on_failure=False)
    assert (
        out["exit_code"] == 2
        and "0005 drops tasks.priority" in out["error"]
        and "--allow-data-loss" in out["error"]
    )
    assert schema.current_revision(url) == "0009"
    done = schema_downgrade(
        target="0004",
        allow_data_loss=True,
        checkpoint=False,
        report_dir=flow_env["report_dir"],
        return_state=True,
    )
    assert done.is_completed(), done.message
    report = done.result()["report_data"]
    assert schema.current_revision(url) == "0004" and report["checkpoint"] is not None  # taken anyway
    branch = LocalBranches(url).url(report["checkpoint"]["name"])
    assert (
        one(branch, "SELECT count(*) FROM tasks WHERE priority IS NOT NULL") == 50
    )  # the data is kept there


def test_old_application_keeps_writing_while_upgrade_head_runs(flow_env: dict[str, str]) -> None:
    """No write fails, none waits longer than the lock timeout, and no row is left NULL. The checkpoint
    is skipped: a local checkpoint ends other sessions on the database (a Neon one does not)."""
    from flows.schema import schema_upgrade

    url = flow_env["db_url"]
    at(url, "0002", rows=30_000)
    writers = Writers(url, 30_000, count=2, inserts=0.3).start()
    state = schema_upgrade(
        report_dir=flow_env["report_dir"], return_state=True, checkpoint=False, lock_timeout="2s"
    )
    writes = writers.stop()
    assert state.is_completed(), state.message
    assert writes.failures == 0, writes.errors[:3]
    assert len(writes.latencies) > 100 and writes.ms(1.0) < 2_000
    assert one(url, "SELECT count(*) FROM tasks WHERE tags IS NULL OR priority IS NULL") == 0
    assert one(url, "SELECT count(*) FROM tasks WHERE legacy_id IS NULL") > 0  # inserted during the upgrade


def test_status_and_sql_commands(flow_env: dict[str, str], capsys) -> None:
    from flows.schema import main

    url = flow_env["db_url"]
    at(url, "0004")
    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["current"] == "0004" and [p["revision"] for p in status["pending"]] == ["0005", "0006", "0007", "0008", "0009"]
    assert status["pending"][1]["backfills"] == ["tasks.priority"]
    assert main(["sql"]) == 0
    sql = capsys.readouterr().out
    assert "ADD COLUMN priority" in sql and "CREATE INDEX CONCURRENTLY" in sql and "0003" not in sql
    assert main(["upgrade", "nope"]) == 2
    assert "no revision 'nope'" in capsys.readouterr().err
