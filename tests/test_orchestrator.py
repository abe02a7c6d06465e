"""How a command gets its Prefect server when no API is configured: nothing happens on import, the
command's own temporary server (`prefect server start`) is started and stopped by the command, and
the whole Phase 1 path also runs on Prefect's standard ephemeral mode, without that shortcut."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tasks.errors import Unavailable
from tests.conftest import ROOT

FLOW_MODULES = sorted(
    f"flows.{p.stem}" for p in (ROOT / "flows").glob("*.py") if p.stem not in ("__init__", "__main__")
)


def command(
    args: list[str], env: dict[str, str], module: str = "flows.phase1"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def without_api(prefect_home: Path, db_url: str, **extra: str) -> dict[str, str]:
    """The environment of a user with no Prefect API configured."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return env | {"PREFECT_HOME": str(prefect_home), "DATABASE_URL": db_url, **extra}


def _servers_of(prefect_home: Path) -> list[int]:
    """Prefect servers (a command's, or Prefect's own ephemeral one) running with this PREFECT_HOME."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            line = " ".join(p.info["cmdline"] or [])
            if ("server start" in line or "prefect.server.api.server:create_app" in line) and p.environ().get(
                "PREFECT_HOME"
            ) == str(prefect_home):
                found.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_importing_the_flows_starts_nothing_and_leaves_the_interpreter_as_it_was() -> None:
    """`import flows.phase1` (and every other flow module) in a fresh interpreter: no child process,
    and the garbage collector and the GIL switch interval as Python set them."""
    probe = f"""
import gc, json, sys, psutil
before = (gc.isenabled(), gc.get_threshold(), gc.get_freeze_count(), sys.getswitchinterval())
import flows
for name in {FLOW_MODULES!r}:
    __import__(name)
after = (gc.isenabled(), gc.get_threshold(), gc.get_freeze_count(), sys.getswitchinterval())
print(json.dumps({{"before": before, "after": after, "children": len(psutil.Process().children())}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert "flows.phase1" in FLOW_MODULES and seen["children"] == 0
    assert seen["after"] == seen["before"]
    assert seen["before"][0] is True and seen["before"][2] == 0


def test_the_temporary_server_reports_a_failed_start_in_one_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its port taken, `prefect server start` refuses; wait() says so in Prefect's own words, as
    an Unavailable error (exit 3, one line)."""
    from flows import orchestrator

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setattr(orchestrator, "free_port", lambda: taken.getsockname()[1])
        server = orchestrator.TemporaryServer()
        try:
            with pytest.raises(
                Unavailable, match=r"^the temporary Prefect server exited \(\d+\): .*already in use"
            ):
                server.wait(120)
        finally:
            server.stop()
    assert server.process.poll() is not None


def test_a_command_without_a_prefect_api_runs_on_its_own_server_and_stops_it(
    tmp_path: Path, db_url: str
) -> None:
    """As a user runs it on a fresh machine: no PREFECT_API_URL, so the command starts `prefect
    server start` for its flow and leaves nothing running; bad input stops the server it started."""
    home = tmp_path / "prefect-home"
    env = without_api(home, db_url, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")
    out = command(
        ["--source", "examples/tasks.json", "--dry-run", "--json", "--report-dir", str(tmp_path)], env
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "dry_run"
    assert "Traceback" not in out.stderr and "rror" not in out.stderr  # nothing sent after the server stopped
    assert _flow_runs(home) == [("phase1-migration", "COMPLETED")]  # recorded by that server
    bad = command(["--source", str(tmp_path / "missing.json")], env)
    assert bad.returncode == 2 and bad.stderr.strip().endswith("no such file")
    assert _servers_of(home) == []


def _flow_runs(prefect_home: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(prefect_home / "prefect.db") as db:
        return db.execute(
            "SELECT flow.name, flow_run.state_type FROM flow_run JOIN flow ON flow.id = flow_run.flow_id"
        ).fetchall()


def test_phase1_runs_end_to_end_on_prefects_standard_ephemeral_mode(tmp_path: Path, db_url: str) -> None:
    """The project never depends on its shortcut: with MIGRATION_TEMPORARY_SERVER=prefect the command
    starts no server of its own, Prefect starts its ephemeral one on the first flow call, and the
    whole Phase 1 path (checkpoint, load, verify, report, artifacts) runs on it."""
    home = tmp_path / "prefect-home"
    env = without_api(
        home,
        db_url,
        MIGRATION_TEMPORARY_SERVER="prefect",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        PREFECT_LOGGING_LEVEL="INFO",  # for Prefect's own line about the server it starts
    )
    out = command(["--source", "examples/tasks.json", "--json", "--report-dir", str(tmp_path / "runs")], env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["counts"]["inserted"] == 9 and report["verification"]["ok"]
    assert "Starting temporary server on http://127.0.0.1:" in out.stderr  # Prefect's ephemeral server
    assert _flow_runs(home) == [("phase1-migration", "COMPLETED")]
    with sqlite3.connect(home / "prefect.db") as db:
        keys = {k for (k,) in db.execute("SELECT key FROM artifact WHERE key IS NOT NULL")}
    assert {"phase1-report", "phase1-quarantine", "phase1-progress"} <= keys
    assert _servers_of(home) == []
