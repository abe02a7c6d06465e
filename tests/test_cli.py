"""`python -m flows.phase1` as a user runs it: exit codes, one-line errors, and kill -9 + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ROOT


def cli(
    args: list[str], env: dict[str, str], timeout: float = 180, module: str = "flows.phase1"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli_env(flow_env: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, "PREFECT_API_URL": flow_env["api_url"], "DATABASE_URL": flow_env["db_url"]}
    return env


@pytest.mark.parametrize(
    ("content", "args", "expected"),
    [
        (None, [], "no such file"),
        (b"", [], "file is empty"),
        (b'{"tasks": [{"id": 1, "title": "x"', [], "truncated"),
        (b'{"tasks": [{"id": 1} {"id": 2}]}', [], "line 1, column 22"),
        (b"\xff\xfe{}", [], "UTF-16"),
        (b'{"items": []}', ["--strict"], "no 'tasks' array"),
        (b'{"tasks": [{"id": 1}, // one\n {"id": 2}]}', [], "a comment, which JSON does not allow"),
        (b'{"tasks": []}', ["--mapping", "/nonexistent.yaml"], "no such file"),
        (b'{"tasks": []}', ["--map", "oops"], "SOURCE=TARGET"),
        (b'{"tasks": []}', ["--chunk-size", "0"], "at least 1"),
        (b'{"tasks": []}', ["--owner-map", "/nonexistent.csv"], "no such file"),
        (b'{"tasks": []}', ["--database-url", "mysql://x"], "not a PostgreSQL URL"),
        (b'{"tasks": []}', ["--no-such-flag"], "unrecognized arguments"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, cli_env: dict[str, str], content, args, expected
) -> None:
    src = tmp_path / "tasks.json"
    if content is not None:
        src.write_bytes(content)
    out = cli(["--source", str(src), "--report-dir", str(tmp_path / "runs"), *args], cli_env)
    assert out.returncode == 2, out.stderr
    assert expected in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    with psycopg.connect(cli_env["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT count(*) FROM migration_runs").fetchone()[0] == 0


def test_help_and_json(tmp_path: Path, cli_env: dict[str, str]) -> None:
    out = cli(["--help"], cli_env)
    assert out.returncode == 0 and "--owner-map" in out.stdout and "rollback RUN_ID" in out.stdout
    out = cli(
        ["--source", str(ROOT / "examples/tasks.json"), "--report-dir", str(tmp_path), "--json"], cli_env
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["counts"]["migrated"] == 9


def test_unreachable_database_is_one_line_without_password(tmp_path: Path, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "DATABASE_URL": "postgresql://bob:s3cret-pw@127.0.0.1:9/nothing"}
    out = cli(["--source", str(ROOT / "examples/tasks.json"), "--report-dir", str(tmp_path)], env)
    assert out.returncode == 3
    assert "s3cret-pw" not in out.stderr + out.stdout and "bob:***@" in out.stderr
    assert "Traceback" not in out.stderr


def test_kill_9_midway_then_resume_loses_and_doubles_nothing(tmp_path: Path, cli_env: dict[str, str]) -> None:
    n = 60_000
    src = tmp_path / "big.json"
    with src.open("w") as f:
        f.write('{"tasks": [')
        f.write(
            ", ".join(
                json.dumps({"id": i, "title": f"task {i}", "description": "d" * 50, "completed": i % 3 == 0})
                for i in range(1, n + 1)
            )
        )
        f.write("]}")
    args = [
        "--source",
        str(src),
        "--report-dir",
        str(tmp_path / "runs"),
        "--chunk-size",
        "500",
        "--workers",
        "1",
        "--no-checkpoint",  # a local checkpoint would end this test's watching session
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.phase1", *args],
        cwd=ROOT,
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = cli_env["DATABASE_URL"]
    deadline = time.monotonic() + 120
    committed = 0
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline and committed < 5:
            committed = conn.execute("SELECT count(*) FROM migration_checkpoints").fetchone()[0]
            time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with psycopg.connect(url) as conn:
        chunks = conn.execute("SELECT count(*) FROM migration_checkpoints").fetchone()[0]
        rows = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
    assert 5 <= chunks < n // 500, "the kill must land part-way"
    assert rows == chunks * 500  # whole chunks only: rows and checkpoints commit together
    out = cli(args + ["--json"], cli_env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["resumed"] and report["chunks_skipped"] == chunks
    assert report["counts"] == {
        "records_read": n,
        "migrated": n,
        "already_present": 0,
        "duplicates": 0,
        "quarantined": 0,
    }
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT legacy_id) FROM tasks").fetchone() == (n, n)
        assert conn.execute("SELECT count(*) FROM migration_runs").fetchone()[0] == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "say what to fill"),
        (["tasks.nope"], "no backfill named 'tasks.nope'"),
        (["--table", "tasks; DROP TABLE users", "--column", "x", "--value", "1"], "no table"),
        (["--table", "tasks", "--column", "legacy_id", "--value", "abc"], "not a valid integer"),
        (["--table", "tasks", "--column", "title", "--value", "x", "--pause", "-1"], "positive"),
    ],
)
def test_backfill_bad_input_exits_2_with_one_line(cli_env: dict[str, str], args, expected) -> None:
    out = cli(args, cli_env, module="flows.backfill")
    assert out.returncode == 2, out.stderr
    assert expected in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_backfill_cli_prints_json_for_scripts(cli_env: dict[str, str], tmp_path: Path) -> None:
    from bench.workload import seed_tasks

    seed_tasks(cli_env["DATABASE_URL"], 300, null_every=3)
    args = [
        "--table",
        "tasks",
        "--column",
        "notes",
        "--value",
        "",
        "--json",
        "--report-dir",
        str(tmp_path),
    ]
    out = cli(args, cli_env, module="flows.backfill")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["status"] == "done" and report["counts"]["rows_done"] == 100


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["python", "-m", "flows.phase1", "--source", "x.json"], True),
        (["python", "-m", "flows.phase1", "rollback", "RUN"], True),
        (["python", "-m", "flows.schema", "upgrade"], True),
        (["python", "-m", "flows.phase1", "--help"], False),
        (["python", "-m", "flows.schema", "status"], False),
        (["python", "-m", "flows.branches", "list"], False),
        (["python", "-m", "pytest", "-q"], False),
        (["python", "bench/phase1.py"], False),
        (["python", "-m"], False),
    ],
)
def test_which_commands_boot_the_server_before_their_imports(argv: list[str], expected: bool) -> None:
    from flows.orchestrator import runs_a_flow

    assert runs_a_flow(argv) is expected


def test_a_command_pauses_garbage_collection_until_its_imports_are_done() -> None:
    import gc

    from flows import startup

    threshold = gc.get_threshold()
    try:
        startup.begin(["python", "-m", "pytest"])  # not a command: nothing changes
        assert gc.isenabled() and gc.get_threshold() == threshold
        startup.begin(["python", "-m", "flows.schema", "status"])  # a command that runs no flow
        assert not gc.isenabled()
        frozen = gc.get_freeze_count()
        startup.imports_done()
        assert gc.isenabled()
        assert gc.get_freeze_count() > frozen
        assert gc.get_threshold()[0] == startup.YOUNG_THRESHOLD
        startup.imports_done()  # only once
        assert gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_the_temporary_server_reports_a_failed_start_in_one_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its port taken, the server exits; wait() says so with the server's own words."""
    import socket

    from flows import orchestrator

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setattr(orchestrator, "_free_port", lambda: taken.getsockname()[1])
        server = orchestrator.TemporaryServer()
        try:
            with pytest.raises(
                RuntimeError,
                match=r"^the temporary Prefect server exited \(\d+\): [^\n]*address already in use$",
            ):
                server.wait(60)
        finally:
            server.stop()
    assert server.process.poll() is not None


def _servers_of(prefect_home: Path) -> list[int]:
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if "__main__:create_app" in " ".join(p.info["cmdline"] or []) and p.environ().get(
                "PREFECT_HOME"
            ) == str(prefect_home):
                found.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_a_command_without_a_prefect_api_runs_on_its_own_server_and_stops_it(
    tmp_path: Path, flow_env: dict[str, str]
) -> None:
    """As a user runs it on a fresh machine: no PREFECT_API_URL, so the command boots a temporary
    server before its imports, adopts it for the flow, and leaves nothing running; bad input
    stops the server it had started too."""
    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"PREFECT_HOME": str(home), "DATABASE_URL": flow_env["db_url"]}
    out = cli(["--source", "examples/tasks.json", "--dry-run", "--json", "--report-dir", str(tmp_path)], env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "dry_run"
    assert (home / "prefect.db").exists()  # the flow ran against the temporary server
    bad = cli(["--source", str(tmp_path / "missing.json")], env)
    assert bad.returncode == 2 and bad.stderr.strip().endswith("no such file")
    assert _servers_of(home) == []
