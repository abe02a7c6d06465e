"""End to end on a real Prefect server: `prefect server start` on loopback with its own PREFECT_HOME,
`python -m deployments.serve` serving every deployment, runs triggered through the REST API with
parameters, waited for, and their artifacts read back through the API. Everything started is stopped."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tasks import schema
from tasks.db import create_database, drop_database
from tests.conftest import ROOT
from tests.prefect_server import prefect_server, wait_for

EXAMPLE = ROOT / "examples" / "tasks.json"


@pytest.fixture(scope="module")
def served(pg_server: str) -> Iterator[dict[str, str]]:
    home = Path(tempfile.mkdtemp(prefix="prefect-e2e-"))
    name = f"t_e2e_{uuid.uuid4().hex[:8]}"
    db_url = create_database(pg_server, name)
    schema.upgrade(db_url)
    try:
        with prefect_server(home, {"DATABASE_URL": db_url}, ui=True) as server:
            server.spawn(["-m", "deployments.serve"], "serve.log")
            wait_for(
                "deployments",
                lambda: (
                    httpx.get(f"{server.api}/deployments/name/backfill/backfill-tasks-priority", timeout=2).status_code
                    == 200
                ),
            )
            yield {"api": server.api, "db_url": db_url, "home": str(home)}
    finally:
        drop_database(pg_server, name)
        with psycopg.connect(pg_server, autocommit=True) as conn:
            branches = [
                r[0]
                for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (name + "%",))
            ]
        for branch in branches:
            drop_database(pg_server, branch)
        shutil.rmtree(home, ignore_errors=True)


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    """One API call, retried on 502/503 as Prefect's own client does (a busy SQLite answers 503)."""
    for attempt in range(10):
        response = client.request(method, path, **kwargs)
        if response.status_code not in (502, 503) or attempt == 9:
            return response.raise_for_status().json()
        time.sleep(0.2 * 2 ** min(attempt, 4))
    raise AssertionError("unreachable")


def run(api: str, flow: str, deployment: str, parameters: dict) -> tuple[dict, set[str]]:
    """Trigger a deployment through the REST API, wait for a final state, return (flow run, artifact keys)."""
    with httpx.Client(base_url=api, timeout=30) as client:
        dep = call(client, "GET", f"/deployments/name/{flow}/{deployment}")
        created = call(
            client, "POST", f"/deployments/{dep['id']}/create_flow_run", json={"parameters": parameters}
        )
        final: dict = {}

        def finished() -> bool:
            final.update(call(client, "GET", f"/flow_runs/{created['id']}"))
            return final["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

        wait_for(f"{deployment} run", finished, timeout=240)
        artifacts = call(
            client,
            "POST",
            "/artifacts/filter",
            json={"artifacts": {"flow_run_id": {"any_": [created["id"]]}}},
        )
    return final, {a["key"] for a in artifacts if a.get("key")}


def test_phase1_deployment_runs_with_a_source_parameter(served: dict[str, str], tmp_path: Path) -> None:
    flow_run, keys = run(
        served["api"],
        "phase1-migration",
        "phase1-migration",
        {"source": str(EXAMPLE), "report_dir": str(tmp_path / "runs")},
    )
    assert flow_run["state"]["type"] == "COMPLETED", flow_run["state"]
    assert "database_url" not in flow_run["parameters"]
    assert {"phase1-report", "phase1-quarantine", "phase1-progress"} <= keys
    with psycopg.connect(served["db_url"]) as conn:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 9
    assert list((tmp_path / "runs").glob("*/report.json"))


def test_backfill_deployment_runs_and_reports(served: dict[str, str], tmp_path: Path) -> None:
    with psycopg.connect(served["db_url"]) as conn:
        conn.execute(
            "INSERT INTO users (id, email) VALUES (gen_random_uuid(), 'e2e@example.com') ON CONFLICT DO NOTHING"
        )
        conn.execute(
            "INSERT INTO tasks (id, user_id, title, status) "
            "SELECT gen_random_uuid(), (SELECT id FROM users WHERE email = 'e2e@example.com'), 'e2e ' || g, 'todo' "
            "FROM generate_series(1, 500) g"
        )
    flow_run, keys = run(
        served["api"],
        "backfill",
        "backfill-tasks-priority",
        {"name": None, "table": "tasks", "column": "notes", "value": "", "report_dir": str(tmp_path)},
    )
    assert flow_run["state"]["type"] == "COMPLETED", flow_run["state"]
    assert {"backfill-report", "backfill-progress"} <= keys
    with psycopg.connect(served["db_url"]) as conn:
        assert conn.execute("SELECT count(*) FROM tasks WHERE notes IS NULL").fetchone()[0] == 0
