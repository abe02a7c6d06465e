"""Fanned out over Prefect workers: a real `prefect server start`, the `migrations` process work pool
and the phase1-shard deployment made from prefect.yaml (`prefect deploy`), two process workers on
this machine, and `python -m flows.phase1 --shards 2` splitting the files between them; the
aggregate it reports is checked against the database. Everything started is stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tasks import schema
from tasks.db import create_database, drop_database
from tests.conftest import ROOT
from tests.prefect_server import prefect_server

pytestmark = pytest.mark.workers


def prefect(args: list[str], env: dict[str, str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture(scope="module")
def pool(pg_server: str) -> Iterator[dict[str, str]]:
    home = Path(tempfile.mkdtemp(prefix="prefect-shards-"))
    db_url = create_database(pg_server, f"t_shards_{uuid.uuid4().hex[:8]}")
    schema.upgrade(db_url)
    try:  # the workers' environment names the database: no credential is stored in Prefect
        with prefect_server(home, {"DATABASE_URL": db_url}) as server:
            prefect(["work-pool", "create", "migrations", "--type", "process"], server.env)
            prefect(["--no-prompt", "deploy", "--name", "phase1-shard"], server.env)
            for n in range(2):
                server.spawn(
                    ["-m", "prefect", "worker", "start", "--pool", "migrations", "--name", f"worker-{n}", "--limit", "1"],
                    f"worker-{n}.log",
                )
            yield {"api": server.api, "db_url": db_url, **{k: server.env[k] for k in ("PREFECT_HOME", "PREFECT_API_URL")}}
    finally:
        drop_database(pg_server, db_url.rsplit("/", 1)[1].split("?")[0])


def test_a_sharded_run_splits_the_files_over_two_workers_and_reports_them_as_one(
    pool: dict[str, str], tmp_path: Path
) -> None:
    base = tmp_path / "uploads"
    total = 0
    for i in range(40):
        records = [{"id": j, "title": f"user {i} task {j}", "done": j % 3 == 0} for j in range(1, 2 + i % 5)]
        total += len(records)
        (base / f"user{i:02d}@example.com").mkdir(parents=True)
        (base / f"user{i:02d}@example.com" / "tasks.json").write_text(json.dumps(records))
    (base / "bad@example.com").mkdir()
    (base / "bad@example.com" / "tasks.json").write_text("[{")
    env = {
        **os.environ,
        **{k: pool[k] for k in ("PREFECT_HOME", "PREFECT_API_URL")},
        "DATABASE_URL": pool["db_url"],
    }
    out = subprocess.run(
        [sys.executable, "-m", "flows.phase1", "--source", str(base), "--owner-from-path", f"{base}/{{email}}/tasks.json",
         "--shards", "2", "--no-checkpoint", "--json", "--report-dir", str(tmp_path / "runs")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 4, out.stderr  # done, and the bad file refused
    report = json.loads(out.stdout)
    assert [s["status"] for s in report["shards"]] == ["completed", "completed"]
    assert sum(s["files"] for s in report["shards"]) == 41 and all(s["files"] for s in report["shards"])
    assert report["counts"]["records_read"] == report["counts"]["inserted"] == total
    assert report["files"][0]["status"] == "rejected" and len(report["files"]) == 41
    with psycopg.connect(pool["db_url"]) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT user_id) FROM tasks").fetchone() == (total, 40)
        shards = conn.execute(
            "SELECT stats ->> 'shard', status FROM migration_runs WHERE kind = 'phase1' ORDER BY 1"
        ).fetchall()
    assert shards == [("0", "completed"), ("1", "completed")]  # two runs, never the same file twice
    with httpx.Client(base_url=pool["api"], timeout=30) as client:
        runs = client.post(
            "/flow_runs/filter", json={"work_pools": {"name": {"any_": ["migrations"]}}}
        ).json()
    assert len(runs) == 2 and {r["state_type"] for r in runs} <= {"COMPLETED", "FAILED"}  # FAILED: exit 4
