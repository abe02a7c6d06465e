"""The disaster-recovery drill, for either branch provider: checkpoint, migrate, wreck the data
mid-way (kill -9, delete, overwrite), restore from the checkpoint, and prove main equals it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from bench.workload import seed_tasks
from flows.rollback import fingerprints
from tests.conftest import ROOT


def one(url: str, query: str) -> Any:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchone()[0]


def run_drill(
    url: str,
    env: dict[str, str],
    tmp_path: Path,
    provider: str,
    checkpoints: Callable[[], list[str]],
    url_of: Callable[[str], str],
) -> dict[str, Any]:
    """Runs the drill on main at `url` through the commands as an operator types them; returns the
    restore's report. `checkpoints()` names the checkpoint branches, `url_of(name)` one's URL."""
    seed_tasks(url, 2_000, email="app@example.com")  # what the application already had
    pristine = fingerprints(url)
    src = tmp_path / "tasks.json"
    src.write_text(
        json.dumps({"tasks": [{"id": i, "title": f"t{i}", "completed": False} for i in range(1, 40_001)]})
    )
    common = ["--provider", provider, "--report-dir", str(tmp_path / "runs")]
    args = ["--source", str(src), "--chunk-size", "500", "--workers", "1", *common]
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.phase1", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            if one(url, "SELECT count(*) FROM migration_checkpoints") >= 3:
                break
        except psycopg.OperationalError:  # a local checkpoint copy ends sessions on main for a moment
            continue
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM tasks WHERE legacy_id % 7 = 0")
        conn.execute("UPDATE tasks SET title = 'overwritten' WHERE legacy_id % 5 = 0")
    assert fingerprints(url) != pristine
    taken = checkpoints()
    assert len(taken) == 1, taken
    out = subprocess.run(
        [sys.executable, "-m", "flows.rollback", "restore", "--from-branch", taken[0], "--json", *common],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["status"] == "verified" and report["verification"]["problems"] == []
    assert fingerprints(url) == pristine == fingerprints(url_of(taken[0]))
    return report
