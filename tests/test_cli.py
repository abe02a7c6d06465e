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
        (b'{"tasks": []}', ["--chunk-size", "0"], "--chunk-size: Input should be greater than or equal to 1"),
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
    printed = json.loads(out.stdout)
    assert printed["counts"]["inserted"] == 9
    assert printed == json.loads((tmp_path / printed["run_id"] / "report.json").read_text())  # all of it
    assert "precheck" in printed["timing"]["before_flow_s"]  # the command's, beside the server's boot


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
        "inserted": n,
        "updated": 0,
        "unchanged": 0,
        "conflicts": 0,
        "duplicates": 0,
        "quarantined": 0,
        "disappeared": 0,
        "deleted": 0,
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
        (["--table", "tasks", "--column", "title", "--value", "x", "--pause", "-1"], "--pause: Input should be greater than or equal to 0"),
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
