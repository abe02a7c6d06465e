"""Sessions ended under every step of every flow (pg_terminate_backend, as an administrator, a
failover or a pooler's restart does): each step runs again on a fresh connection, the command ends
as if nothing had happened, and every record is there exactly once. A fault that does not go away
ends the command with exit 3 within the retry window (tasks/retry.py), never exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from bench.workload import seed_tasks
from tasks import schema
from tests.conftest import ROOT
from tests.faults import EndSessions, EndStep, branches_of

RECORDS = 2_000


def source(tmp_path: Path, n: int = RECORDS) -> Path:
    src = tmp_path / "tasks.json"
    src.write_text(json.dumps({"tasks": [{"id": i, "title": f"t{i}", "completed": i % 2 == 0} for i in range(1, n + 1)]}))
    return src


def exactly_once(url: str, n: int) -> None:
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT legacy_id) FROM tasks").fetchone() == (n, n)


# (step ended, what the flow run needs to begin with) for Phase 1: its pre-check (the lock), the
# checkpoint (its snapshot, the copy's verification, the server's maintenance session), the schema
# upgrade, each chunk's writer, the verification, the report and the run's bookkeeping.
PHASE1_STEPS = [
    "phase1:lock",
    "checkpoint:lock",
    "checkpoint:snapshot",
    "checkpoint:verify",
    "branches",
    "schema",
    "phase1:start",
    "phase1:load",
    "phase1:verify",
    "phase1:report",
    "phase1:finish",
]


@pytest.mark.parametrize("step", PHASE1_STEPS)
def test_phase1_survives_its_sessions_ended_at_each_step(
    step: str, flow_env: dict[str, str], pg_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.phase1 import phase1_migration

    url = flow_env["db_url"]
    if step == "schema":  # a revision to apply, so the upgrade step has sessions to lose
        schema.downgrade_to(url, "0010")
    fault = EndStep(pg_server, step, times=3 if step == "phase1:load" else 1).install(monkeypatch)
    state = phase1_migration(
        source=str(source(tmp_path)), chunk_size=200, report_dir=flow_env["report_dir"], return_state=True
    )
    assert fault.ended >= 1, f"no session of {step} was ended"
    assert state.is_completed(), state.message
    report = state.result()["report_data"]
    assert report["verification"]["ok"] and report["counts"]["inserted"] == RECORDS
    exactly_once(url, RECORDS)
    assert branches_of(url) == [report["checkpoint"]["name"]]


@pytest.mark.parametrize(
    "step", ["schema:check", "schema:journal", "schema", "backfill:prepare", "backfill:start", "backfill:batch",
             "backfill:count", "backfill:finish"]
)  # fmt: skip
def test_a_schema_upgrade_survives_its_sessions_ended_at_each_step(
    step: str, flow_env: dict[str, str], pg_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.schema import schema_upgrade

    url = flow_env["db_url"]
    schema.downgrade_to(url, "0002")
    seed_tasks(url, 3_000)
    fault = EndStep(pg_server, step, times=2).install(monkeypatch)
    state = schema_upgrade(complete=True, checkpoint=False, report_dir=flow_env["report_dir"], return_state=True)
    assert fault.ended >= 1, f"no session of {step} was ended"
    assert state.is_completed(), state.message
    assert schema.current_revision(url) == schema.head_revision() and schema.pending(url) is None
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM tasks WHERE tags IS NULL OR priority IS NULL").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM migration_runs WHERE kind = 'schema'").fetchone()[0] == 1


@pytest.mark.parametrize("step", ["backfill:open", "backfill:batch", "backfill:finish"])
def test_a_backfill_survives_its_sessions_ended(
    step: str, flow_env: dict[str, str], pg_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.backfill import backfill

    url = flow_env["db_url"]
    seed_tasks(url, 5_000, null_every=2)
    fault = EndStep(pg_server, step, times=3).install(monkeypatch)
    state = backfill(table="tasks", column="notes", value="", batch_size=500, report_dir=flow_env["report_dir"],
                     return_state=True)  # fmt: skip
    assert fault.ended >= 1 and state.is_completed(), state.message
    assert state.result()["report_data"]["counts"]["rows_done"] == 2_500
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM tasks WHERE notes IS NULL").fetchone()[0] == 0
        assert conn.execute("SELECT status FROM migration_runs WHERE kind = 'backfill'").fetchall() == [("done",)]


@pytest.mark.parametrize("step", ["audit:start", "audit:checks", "audit:finish"])
def test_an_audit_survives_its_sessions_ended(
    step: str, flow_env: dict[str, str], pg_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.audit import audit

    seed_tasks(flow_env["db_url"], 500)
    fault = EndStep(pg_server, step).install(monkeypatch)
    state = audit(report_dir=flow_env["report_dir"], return_state=True)
    assert fault.ended == 1 and state.is_completed(), state.message


@pytest.mark.parametrize("step", ["phase1:rollback", "rollback:verify", "branches"])
def test_rollbacks_survive_their_sessions_ended(
    step: str, flow_env: dict[str, str], pg_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.phase1 import phase1_migration, phase1_rollback
    from flows.rollback import rollback_restore

    url = flow_env["db_url"]
    done = phase1_migration(source=str(source(tmp_path)), chunk_size=500, report_dir=flow_env["report_dir"],
                            return_state=True).result()  # fmt: skip
    fault = EndStep(pg_server, step).install(monkeypatch)
    if step == "phase1:rollback":
        state = phase1_rollback(run_id=done["run_id"], report_dir=flow_env["report_dir"], return_state=True)
        assert state.is_completed(), state.message
        assert state.result()["report_data"]["counts"]["tasks_removed"] == RECORDS
    else:
        state = rollback_restore(from_branch=done["report_data"]["checkpoint"]["name"],
                                 report_dir=flow_env["report_dir"], return_state=True)  # fmt: skip
        assert state.is_completed(), state.message
    assert fault.ended == 1
    exactly_once(url, 0)


def test_a_load_whose_sessions_are_ended_again_and_again_lands_every_record_once(
    flow_env: dict[str, str], pg_server: str, tmp_path: Path
) -> None:
    """The symptom of the issue: sessions ended a few times during a big load, from outside, through
    the command as a user runs it; it used to end with exit 1."""
    n = 60_000
    url = flow_env["db_url"]
    env = {**os.environ, "PREFECT_API_URL": flow_env["api_url"], "DATABASE_URL": url}
    ender = EndSessions(pg_server, make_url(url).database, times=4, every=0.7, wait_for="todo-migrations/phase1:load")
    ender.start()
    out = subprocess.run(
        [sys.executable, "-m", "flows.phase1", "--source", str(source(tmp_path, n)), "--chunk-size", "1000",
         "--report-dir", str(tmp_path / "runs"), "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    ender.stop()
    assert ender.rounds >= 2, "the sessions must be ended during the load"
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["counts"]["inserted"] == n
    exactly_once(url, n)


def test_a_fault_that_does_not_go_away_ends_with_exit_3_within_the_retry_window(
    flow_env: dict[str, str], pg_server: str, tmp_path: Path
) -> None:
    """Every session of the command is ended as soon as it appears, for good: the command gives up
    after MIGRATION_RETRY_WINDOW (here 3 s) plus one attempt, with one line, and the run resumes."""
    window = 3.0
    url = flow_env["db_url"]
    env = {**os.environ, "PREFECT_API_URL": flow_env["api_url"], "DATABASE_URL": url,
           "MIGRATION_RETRY_WINDOW": str(window)}  # fmt: skip
    src = source(tmp_path, 20_000)
    args = ["--source", str(src), "--chunk-size", "500", "--workers", "1", "--report-dir", str(tmp_path / "runs")]
    proc = subprocess.Popen([sys.executable, "-m", "flows.phase1", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    ender = EndSessions(pg_server, make_url(url).database, times=0, every=0.01, wait_for="todo-migrations/phase1:load")
    ender.start()
    while not ender.rounds and proc.poll() is None:
        time.sleep(0.01)
    began = time.monotonic()
    _, err = proc.communicate(timeout=300)
    took = time.monotonic() - began
    ender.stop()
    assert proc.returncode == 3, err
    said = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(said) == 1 and "still failed after" in said[0] and "Traceback" not in err, err
    assert took < window + 10 + 5, f"gave up after {took:.1f} s"  # window + one connect_timeout + exit
    with psycopg.connect(url) as conn:  # marked interrupted if the database let it; either resumes
        assert conn.execute("SELECT status FROM migration_runs").fetchone()[0] in ("interrupted", "running")
    again = subprocess.run([sys.executable, "-m", "flows.phase1", *args, "--json"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["resumed"]
    exactly_once(url, 20_000)
