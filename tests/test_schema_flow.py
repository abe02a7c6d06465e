"""The schema flows through the Prefect engine on real PostgreSQL: upgrade (start and backfill,
stopping at a breaking revision), complete, rollback leaving no trace, failures undone, a
data-losing downgrade refused without consent, and the online proof: the previous and the new
application versions keep writing, unharmed, while a breaking revision rolls out."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from bench.workload import Writers, seed_tasks
from tasks import schema
from tasks.branching.local import LocalBranches
from tests.conftest import artifact_keys
from tests.ops_cycle import catalog, data


def at(url: str, revision: str, rows: int = 0) -> None:
    """Put the (test) database at revision, completed, as if it had never been further, then seed it."""
    schema.downgrade_to(url, revision)
    with psycopg.connect(url) as conn:  # the backfills of the template's way up to head
        conn.execute("DELETE FROM backfill_state")
    if rows:
        seed_tasks(url, rows)


def one(url: str, query: str, *params: object):
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchone()[0]


def test_upgrade_stops_at_a_breaking_revision_and_complete_finishes_it(flow_env: dict[str, str]) -> None:
    from flows.schema import schema_complete, schema_upgrade

    url = flow_env["db_url"]
    at(url, "0002", rows=3_000)
    state = schema_upgrade(report_dir=flow_env["report_dir"], return_state=True)
    assert state.is_completed(), state.message
    out = state.result()
    report = json.loads((Path(flow_env["report_dir"]) / out["run_id"] / "report.json").read_text())
    assert report["schema"] == {"before": "0002", "after": "0009", "live": "0009", "target": "head"}
    assert "stopped at 0009: it breaks the previous application version" in report["notes"][0]
    assert [s["action"] for s in report["steps"]][-3:] == [
        "complete 0008",
        "start 0009",
        "backfill tasks.status",
    ]
    assert {s["status"] for s in report["steps"]} == {"done"}
    assert any("CREATE UNIQUE INDEX CONCURRENTLY" in s["sql"] for s in report["sql"])
    assert (
        one(url, "SELECT count(*) FROM tasks WHERE tags IS NULL OR priority IS NULL OR status IS NULL") == 0
    )
    assert one(
        url, "SELECT count(*) FROM migration_runs WHERE kind = 'schema-step' AND status = 'completed'"
    ) == len(report["steps"])
    assert report["checkpoint"]["name"] in {b.name for b in LocalBranches(url).list()}
    assert artifact_keys(state.state_details.flow_run_id) == {"schema-report", "backfill-progress"}

    done = schema_complete(report_dir=flow_env["report_dir"], return_state=True)
    assert done.is_completed(), done.message
    assert schema.live_versions(url) == {"0009": "complete"}
    assert one(url, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'completed'") == 0

    last = schema_upgrade(
        report_dir=flow_env["report_dir"], return_state=True, checkpoint=False, complete=True
    )
    assert last.is_completed(), last.message
    assert last.result()["report_data"]["verification"]["ok"]  # at head, the models match the schema
    again = schema_upgrade(report_dir=flow_env["report_dir"], return_state=True, checkpoint=False)
    assert again.is_completed() and again.result()["status"] == "noop"


def test_rollback_before_complete_leaves_no_trace(flow_env: dict[str, str]) -> None:
    from flows.schema import schema_rollback, schema_upgrade

    url = flow_env["db_url"]
    at(url, "0008", rows=500)
    before = catalog(url), data(url)
    started = schema_upgrade(
        target="0009", report_dir=flow_env["report_dir"], return_state=True, checkpoint=False
    )
    assert started.is_completed() and schema.pending(url) == "0009"
    with psycopg.connect(url, autocommit=True, options="-csearch_path=public_0009,public") as conn:
        conn.execute("UPDATE tasks SET status = 'in_progress' WHERE legacy_id = 1")  # a new-version write
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE tasks SET completed = completed WHERE legacy_id = 1")  # as it was
    state = schema_rollback(report_dir=flow_env["report_dir"], return_state=True, checkpoint=False)
    assert state.is_completed(), state.message
    assert schema.current_revision(url) == "0008" and catalog(url) == before[0]
    runs = {"migration_runs"}  # the runs' own records stay: the audit trail of what was done
    assert {t: d for t, d in data(url).items() if t not in runs} == {t: d for t, d in before[1].items() if t not in runs}
    refused = schema_rollback(report_dir=flow_env["report_dir"], return_state=True, checkpoint=False)
    assert refused.result(raise_on_failure=False) == {
        "exit_code": 2,
        "error": "nothing is rolling out (the database is at 0008); a completed revision is downgraded",
    }


def test_a_failing_complete_leaves_the_revision_rolling_out(flow_env: dict[str, str]) -> None:
    from flows.schema import schema_complete, schema_upgrade

    url = flow_env["db_url"]
    at(url, "0004", rows=200)
    assert schema_upgrade(
        target="0005", report_dir=flow_env["report_dir"], return_state=True, checkpoint=False
    ).is_completed()
    with psycopg.connect(url) as conn:  # a value the CHECK forbids, slipped in while it was off
        conn.execute("ALTER TABLE tasks DROP CONSTRAINT ck_tasks_priority")
        conn.execute("UPDATE tasks SET priority = 'urgent' WHERE legacy_id = 7")
        conn.execute(
            "ALTER TABLE tasks ADD CONSTRAINT ck_tasks_priority CHECK (priority IN ('low', 'medium', 'high')) NOT VALID"
        )
    state = schema_complete(report_dir=flow_env["report_dir"], return_state=True, checkpoint=False)
    assert state.is_failed()
    out = state.result(raise_on_failure=False)
    assert out["exit_code"] == 1
    assert (
        "complete 0005 failed" in out["report_data"]["notes"][-1]
        and "0005 is still rolling out" in out["report_data"]["notes"][-1]
    )
    assert schema.pending(url) == "0005"
    assert one(url, "SELECT convalidated FROM pg_constraint WHERE conname = 'ck_tasks_priority'") is False
    assert (
        one(url, "SELECT status FROM migration_runs WHERE kind = 'schema-step' AND parameters->>'action' = 'complete 0005'")
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
    assert state.is_failed() and out["exit_code"] == 1
    assert (
        "start 0007 failed" in out["report_data"]["notes"][-1]
        and "returned to 0002" in out["report_data"]["notes"][-1]
    )
    assert schema.current_revision(url) == "0002" and schema.live_versions(url) == {}
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
    assert schema.current_revision(url) == schema.head_revision()
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
    name = report["checkpoint"]["name"]
    assert any(n.startswith(f"checkpoint branch {name} taken although checkpoints were turned off") for n in report["notes"])
    branch = LocalBranches(url).url(report["checkpoint"]["name"])
    assert (
        one(branch, "SELECT count(*) FROM tasks WHERE priority IS NOT NULL") == 50
    )  # the data is kept there
    assert one(url, "SELECT count(*) FROM tasks WHERE completed") == 25  # status went back to completed


def test_both_application_versions_keep_writing_while_a_breaking_revision_rolls_out(
    flow_env: dict[str, str],
) -> None:
    """No write of either version fails, none waits longer than the lock timeout, and no row is
    left without its status: the default command, its checkpoint included (taken online: no session
    of the application is ended; with --template-copy some would be)."""
    from flows.schema import schema_complete, schema_upgrade

    url = flow_env["db_url"]
    at(url, "0008", rows=30_000)
    old = Writers(url, 30_000, count=2, inserts=0.3, search_path=schema.search_path("0008")).start()
    state = schema_upgrade(report_dir=flow_env["report_dir"], return_state=True, target="0009")
    assert state.is_completed(), state.message
    new = Writers(url, 30_000, count=2, inserts=0.3, search_path=schema.search_path("0009")).start()
    old_writes = old.stop()  # every instance of the previous version is gone: now complete
    done = schema_complete(report_dir=flow_env["report_dir"], return_state=True)
    new_writes = new.stop()
    assert done.is_completed(), done.message
    for writes in (old_writes, new_writes):
        assert writes.failures == 0, writes.errors[:3]
        assert len(writes.latencies) > 50 and writes.ms(1.0) < 2_000
    assert one(url, "SELECT count(*) FROM tasks WHERE status IS NULL") == 0
    assert one(url, "SELECT count(*) FROM tasks WHERE legacy_id IS NULL") > 0  # inserted while it ran


def test_status_sql_and_search_path_commands(flow_env: dict[str, str], capsys) -> None:
    from flows.commands.schema import main

    url = flow_env["db_url"]
    at(url, "0004")
    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["current"] == "0004" and [p["revision"] for p in status["pending"]] == [
        "0005", "0006", "0007", "0008", "0009", "0010", "0011", "0012", "0013", "0014"
    ]  # fmt: skip
    # back at 0004 as its own complete left it: 0004's schema is the live version again
    assert status["versions"] == [{"revision": "0004", "search_path": "public_0004, public", "state": "complete"}]
    assert status["pending"][0]["backfills"] == ["tasks.priority"] and status["pending"][4]["breaking"]
    assert main(["sql"]) == 0
    sql = capsys.readouterr().out
    assert "ADD COLUMN priority" in sql and "CREATE INDEX CONCURRENTLY" in sql and "-- start 0003" not in sql
    assert main(["search-path", "0009"]) == 0 and capsys.readouterr().out == "public_0009, public\n"
    assert main(["upgrade", "nope"]) == 2
    assert "no revision 'nope'" in capsys.readouterr().err
