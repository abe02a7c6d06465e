"""Interruptions as production delivers them: SIGTERM (a deploy) or Ctrl-C during a Phase 1 load, a
backfill and a schema upgrade; the PostgreSQL server restarted mid-load and mid-backfill; a report
directory that cannot be written, or a disk that fills up. Nothing is lost or doubled, the run says
it was interrupted, the command exits promptly with nothing of its own left running, and running
it again finishes the job exactly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from bench.workload import seed_tasks
from tasks import schema
from tasks.db import create_database, drop_database
from tests.conftest import ROOT
from tests.faults import branches_of, own_server, restart_when, start_server


def one(url: str, query: str, *params: object):
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchone()[0]


def big_source(tmp_path: Path, n: int) -> Path:
    src = tmp_path / "big.json"
    with src.open("w") as f:
        f.write('{"tasks": [')
        f.write(", ".join(json.dumps({"id": i, "title": f"task {i}", "completed": i % 3 == 0}) for i in range(1, n + 1)))
        f.write("]}")
    return src


def command(module: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def interrupt(
    module: str, args: list[str], env: dict[str, str], when: Callable[[], bool], signum: int
) -> tuple[int, str, float, dict[int, str]]:
    """Start the command, send it `signum` once when() holds; returns (exit code, stderr, seconds from
    the signal to the exit, the pids of its children when it was signalled)."""
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not when():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the moment to interrupt never came"
        time.sleep(0.02)
    children = {c.pid: " ".join(c.cmdline()) for c in psutil.Process(proc.pid).children(recursive=True)}
    os.kill(proc.pid, signum)  # to the command alone, as a deploy's SIGTERM is sent
    sent = time.monotonic()
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err, time.monotonic() - sent, children


def assert_interrupted(code: int, err: str, took: float, children: dict[int, str], signum: int) -> None:
    assert code == 128 + signum, err
    said = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(said) == 1 and f"interrupted by {signal.Signals(signum).name}" in said[0], err
    assert "Traceback" not in err, err
    assert took < 15, f"exited {took:.1f} s after the signal"
    alive = [p for p in children if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"left running: {alive}"


def report_of(report_dir: Path, run_id: str) -> dict:
    return json.loads((report_dir / run_id / "report.json").read_text())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_phase1_load_stops_it_cleanly_and_the_next_run_resumes(
    signum: int, flow_env: dict[str, str], tmp_path: Path
) -> None:
    """On its own temporary Prefect server (no PREFECT_API_URL), so that one is seen to stop too."""
    n, url = 100_000, flow_env["db_url"]
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"DATABASE_URL": url, "PREFECT_HOME": str(tmp_path / "home"), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    runs = tmp_path / "runs"
    args = ["--source", str(big_source(tmp_path, n)), "--chunk-size", "1000", "--workers", "1", "--report-dir", str(runs)]
    code, err, took, children = interrupt(
        "flows.phase1", args, env, lambda: one(url, "SELECT count(*) FROM migration_checkpoints") >= 5, signum
    )
    assert_interrupted(code, err, took, children, signum)
    assert any("prefect server start" in line for line in children.values()), children  # and it is gone
    run_id, status = psycopg.connect(url).execute("SELECT id::text, status FROM migration_runs").fetchone()
    assert status == "interrupted" and report_of(runs, run_id)["status"] == "interrupted"
    chunks = one(url, "SELECT count(*) FROM migration_checkpoints")
    assert one(url, "SELECT count(*) FROM tasks") == chunks * 1000  # whole chunks only
    env["PREFECT_API_URL"] = flow_env["api_url"]
    again = command("flows.phase1", [*args, "--json"], env)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["run_id"] == run_id and report["resumed"] and report["chunks_skipped"] >= chunks
    assert report["counts"]["inserted"] == n and report["verification"]["ok"]
    assert one(url, "SELECT count(DISTINCT legacy_id) FROM tasks") == n


def test_sigterm_during_a_backfill(flow_env: dict[str, str], tmp_path: Path) -> None:
    url = flow_env["db_url"]
    seed_tasks(url, 60_000)
    env = {**os.environ, "PREFECT_API_URL": flow_env["api_url"], "DATABASE_URL": url}
    args = ["--table", "tasks", "--column", "notes", "--value", "filled", "--batch-size", "500",
            "--target-batch-seconds", "0.001", "--pause", "0.02", "--report-dir", str(tmp_path)]  # fmt: skip
    code, err, took, children = interrupt(
        "flows.backfill", args, env,
        lambda: one(url, "SELECT coalesce(max(batches), 0) FROM backfill_state") >= 5, signal.SIGTERM,
    )  # fmt: skip
    assert_interrupted(code, err, took, children, signal.SIGTERM)
    status, rows_done = psycopg.connect(url).execute(
        "SELECT status, rows_done FROM backfill_state WHERE name = 'tasks.notes'"
    ).fetchone()
    assert status == "interrupted"
    assert rows_done == one(url, "SELECT count(*) FROM tasks WHERE notes = 'filled'")  # whole batches
    run_id = one(url, "SELECT id::text FROM migration_runs WHERE kind = 'backfill'")
    assert one(url, "SELECT status FROM migration_runs WHERE kind = 'backfill'") == "interrupted"
    assert report_of(tmp_path, run_id)["status"] == "interrupted"
    again = command("flows.backfill", [*args, "--json"], env)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["resumed"] and report["counts"]["rows_done"] == 60_000
    assert one(url, "SELECT count(*) FROM tasks WHERE notes IS NULL") == 0


def test_sigterm_during_a_schema_upgrade(flow_env: dict[str, str], tmp_path: Path) -> None:
    """Mid-way through upgrade head (default command: the online checkpoint first): the revision in
    flight commits or rolls back whole, run and step are marked interrupted, the next run goes on."""
    url = flow_env["db_url"]
    schema.downgrade_to(url, "0002")
    seed_tasks(url, 60_000)
    env = {**os.environ, "PREFECT_API_URL": flow_env["api_url"], "DATABASE_URL": url}
    args = ["upgrade", "head", "--complete", "--report-dir", str(tmp_path)]
    code, err, took, children = interrupt(
        "flows.schema", args, env,
        lambda: one(url, "SELECT count(*) FROM migration_runs WHERE kind = 'schema-step'") >= 2, signal.SIGTERM,
    )  # fmt: skip
    assert_interrupted(code, err, took, children, signal.SIGTERM)
    with psycopg.connect(url) as conn:
        runs = dict(conn.execute("SELECT kind, status FROM migration_runs WHERE status <> 'completed'").fetchall())
        assert runs == {"schema": "interrupted", "schema-step": "interrupted"}
    stopped_at = schema.current_revision(url)
    assert stopped_at not in ("0002", schema.head_revision())
    again = command("flows.schema", [*args, "--no-checkpoint", "--json"], env)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["schema"]["before"] == stopped_at and report["verification"]["ok"]
    assert one(url, "SELECT count(*) FROM tasks WHERE tags IS NULL OR priority IS NULL") == 0
    assert len(branches_of(url)) == 1  # the checkpoint taken before, nothing half-made



# A command whose SIGTERM arrives while a finalizer runs: the handler's exception is raised where
# Python can only print it ("Exception ignored in ..."), the way Prefect's TerminationSignal was
# once lost inside an isinstance check mid-upgrade. In a flow run (Prefect's handler) or outside one (ours).
_FINALIZER_PROBE = """
import os, signal, sys, time
from prefect import flow
from flows import cli

class SignalledWhileFinalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        sum(range(10_000))  # the handler runs here, inside the finalizer

@flow(name="finalizer-probe")
def probe() -> dict:
    SignalledWhileFinalized()
    time.sleep(2)
    return {"exit_code": 0}

def main() -> int:
    if sys.argv[1] == "flow":
        return cli.run_flow(lambda: probe(return_state=True), as_json=False, summary=lambda _o: "went on to the end")
    SignalledWhileFinalized()
    time.sleep(2)
    print("went on to the end")
    return 0

cli.run_command(main)
"""


@pytest.mark.parametrize("where", ["flow", "command"])
def test_a_sigterm_raised_inside_a_finalizer_is_not_lost(flow_env: dict[str, str], tmp_path: Path, where: str) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(_FINALIZER_PROBE)
    env = {**os.environ, "PREFECT_API_URL": flow_env["api_url"], "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(probe), where], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 128 + signal.SIGTERM, done.stdout + done.stderr
    assert "went on to the end" not in done.stdout
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(said) == 1 and "interrupted by SIGTERM" in said[0], done.stderr

# --- the server restarted ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def restartable() -> Iterator[tuple[Path, str]]:
    """An embedded server of its own, which these tests stop and start."""
    data = ROOT / ".data" / "restart-postgres"
    server = own_server(data)
    yield data, server
    start_server(data)  # left running, like the other embedded servers


@pytest.fixture
def restartable_db(restartable: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    data, server = restartable
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = create_database(server, name)
    schema.upgrade(url)
    monkeypatch.setenv("DATABASE_URL", url)
    yield url
    start_server(data)
    drop_database(server, name)


def test_the_server_restarted_mid_load_is_ridden_through(
    restartable: tuple[Path, str], restartable_db: str, prefect_harness: str, tmp_path: Path
) -> None:
    from flows.phase1 import phase1_migration

    n = 100_000
    url = restartable_db
    loading = "SELECT count(*) >= 3 FROM migration_checkpoints"
    cycle = restart_when(url, loading, restartable[0], down=2.0)
    state = phase1_migration(source=str(big_source(tmp_path, n)), chunk_size=1000, workers=1,
                             checkpoint=False, report_dir=str(tmp_path), return_state=True)  # fmt: skip
    cycle.join()
    assert state.is_completed(), state.message
    report = state.result()["report_data"]
    assert report["counts"]["inserted"] == n and report["verification"]["ok"]
    assert one(url, "SELECT count(*), count(DISTINCT legacy_id) FROM tasks") == n


def test_a_server_down_past_the_retry_window_exits_3_and_the_rerun_finishes(
    restartable: tuple[Path, str], restartable_db: str, prefect_harness: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from flows.phase1 import phase1_migration

    n, url, data = 60_000, restartable_db, restartable[0]
    src = big_source(tmp_path, n)
    monkeypatch.setenv("MIGRATION_RETRY_WINDOW", "2")
    loading = "SELECT count(*) >= 3 FROM migration_checkpoints"
    stopped = restart_when(url, loading, data, down=None)  # started again below, past the window
    state = phase1_migration(source=str(src), chunk_size=1000, workers=1, checkpoint=False,
                             report_dir=str(tmp_path), return_state=True)  # fmt: skip
    stopped.join()
    out = state.result(raise_on_failure=False)
    assert out["exit_code"] == 3 and "still failed after" in out["error"], out
    start_server(data)
    again = phase1_migration(source=str(src), chunk_size=1000, workers=1, checkpoint=False,
                             report_dir=str(tmp_path), return_state=True)  # fmt: skip
    assert again.is_completed(), again.message
    assert again.result()["report_data"]["resumed"]
    assert one(url, "SELECT count(*), count(DISTINCT legacy_id) FROM tasks") == n


def test_the_server_restarted_mid_backfill_is_ridden_through(
    restartable: tuple[Path, str], restartable_db: str, prefect_harness: str, tmp_path: Path
) -> None:
    from flows.backfill import backfill

    url = restartable_db
    seed_tasks(url, 100_000)
    cycle = restart_when(url, "SELECT count(*) FROM backfill_state WHERE batches >= 3", restartable[0], down=2.0)
    state = backfill(table="tasks", column="notes", value="x", batch_size=1000, pause=0.005,
                     report_dir=str(tmp_path), return_state=True)  # fmt: skip
    cycle.join()
    assert state.is_completed(), state.message
    assert state.result()["report_data"]["counts"]["rows_done"] == 100_000
    assert one(url, "SELECT count(*) FROM tasks WHERE notes IS NULL") == 0


# --- the report directory ------------------------------------------------------------------------------


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chattr +i and mount need root")


@needs_root
def test_an_unwritable_report_dir_is_refused_before_anything_is_written(
    flow_env: dict[str, str], tmp_path: Path
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    subprocess.run(["chattr", "+i", str(locked)], check=True)  # unwritable even for root
    try:
        env = {**os.environ, "PREFECT_API_URL": flow_env["api_url"], "DATABASE_URL": flow_env["db_url"]}
        out = command("flows.phase1", ["--source", str(ROOT / "examples/tasks.json"), "--report-dir", str(locked)], env)
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "cannot write reports in" in out.stderr, out.stderr
    assert one(flow_env["db_url"], "SELECT count(*) FROM migration_runs") == 0


@needs_root
def test_a_full_disk_at_report_time_is_one_line_and_the_run_resumes_to_write_it(
    flow_env: dict[str, str], tmp_path: Path
) -> None:
    full = tmp_path / "full"
    full.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)]).returncode:
        pytest.skip("no tmpfs mount here")
    try:
        with (full / "filler").open("wb") as f, pytest.raises(OSError):
            f.write(b"x" * 200_000)  # the disk is full from here on
        env = {**os.environ, "PREFECT_API_URL": flow_env["api_url"], "DATABASE_URL": flow_env["db_url"]}
        args = ["--source", str(ROOT / "examples/tasks.json"), "--no-checkpoint"]
        out = command("flows.phase1", [*args, "--report-dir", str(full)], env)
    finally:
        subprocess.run(["umount", str(full)], check=True)
    assert out.returncode == 3, out.stderr
    said = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(said) == 1 and "No space left on device" in said[0] and "Traceback" not in out.stderr, out.stderr
    url = flow_env["db_url"]
    assert one(url, "SELECT status FROM migration_runs") == "interrupted"
    assert one(url, "SELECT count(*) FROM tasks") == 9  # the data is in, consistent
    again = command("flows.phase1", [*args, "--report-dir", str(tmp_path / "runs"), "--json"], env)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["resumed"] and report["counts"]["inserted"] == 9
    assert (tmp_path / "runs" / report["run_id"] / "report.json").exists()
    shutil.rmtree(full, ignore_errors=True)
