"""The flows on `--provider neon`, end to end through the Prefect engine and the Neon test double
(tests/neon_double.py): the disaster-recovery drill, a rehearsal, the Phase 1 checkpoint and a
restore from it, each proving main equals what it should; and Neon's pitfalls: the pooler refused
for writers, a compute's cold start waited for and reported, neondb_owner's foreign-key path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

from bench.workload import seed_tasks
from flows.rollback import fingerprints
from tasks import schema
from tests import neon_double
from tests.conftest import ROOT
from tests.drill import run_drill
from tests.neon_double import NeonProject

neon_project = neon_double.neon_project
neon_flow_env = neon_double.neon_flow_env
EXAMPLE = str(ROOT / "examples" / "tasks.json")


def names(project: NeonProject) -> set[str]:
    return {b.name for b in project.double.projects[project.id].branches.values()}


def test_disaster_recovery_drill_on_neon(neon_project: NeonProject, neon_flow_env: dict, tmp_path: Path) -> None:
    url = neon_project.main_url
    env = {**os.environ, "PREFECT_API_URL": neon_flow_env["api_url"], "DATABASE_URL": url}
    report = run_drill(
        url,
        env,
        tmp_path,
        "neon",
        lambda: sorted(n for n in names(neon_project) if n.startswith("main-backup-")),
        neon_project.url,
    )
    preserved = report["checkpoint"]["name"]  # main's state before the restore, kept by Neon
    double = neon_project.double
    assert double.branch(neon_project.id, "main").parent_id == double.branch(neon_project.id, preserved).id


def test_rehearsal_on_neon_leaves_main_alone(neon_project: NeonProject, neon_flow_env: dict) -> None:
    from flows.branches import rehearse

    url = neon_project.main_url
    schema.downgrade_to(url, "0002")
    seed_tasks(url, 500)
    before = fingerprints(url)
    state = rehearse(branch_provider="neon", report_dir=neon_flow_env["report_dir"], return_state=True)
    assert state.is_completed(), state.message
    report = state.result()["report_data"]
    assert [s["status"] for s in report["steps"]] == ["COMPLETED", "COMPLETED"]
    assert schema.current_revision(url) == "0002" and fingerprints(url) == before
    assert names(neon_project) == {"main"}  # the rehearsal branch was dropped


def test_phase1_checkpoint_and_restore_on_neon(neon_project: NeonProject, neon_flow_env: dict, caplog) -> None:
    """The Phase 1 run takes its checkpoint on Neon and checks foreign keys per row (neondb_owner is
    no superuser); restoring from the checkpoint waits out a cold compute and says so; no
    API key or password anywhere a person or Prefect keeps."""
    from prefect.client.orchestration import get_client

    from flows.phase1 import phase1_migration
    from flows.rollback import rollback_restore

    url, report_dir = neon_project.main_url, neon_flow_env["report_dir"]
    seed_tasks(url, 300)
    before = fingerprints(url)
    state = phase1_migration(source=EXAMPLE, branch_provider="neon", report_dir=report_dir, return_state=True)
    assert state.is_completed(), state.message
    migrated = state.result()["report_data"]
    checkpoint = migrated["checkpoint"]["name"]
    assert checkpoint.startswith("main-backup-") and fingerprints(neon_project.url(checkpoint)) == before
    assert migrated["foreign_keys_checked"] == {"per_chunk": 0, "per_row": 1}
    assert fingerprints(url) != before

    neon_project.double.suspend(neon_project.id, checkpoint, cold_start=2.0)
    restored = rollback_restore(from_branch=checkpoint, branch_provider="neon", report_dir=report_dir, return_state=True)
    assert restored.is_completed(), restored.message
    report = restored.result()["report_data"]
    assert report["status"] == "verified" and fingerprints(url) == before
    assert any(f"compute of branch {checkpoint} answered" in n and "cold start" in n for n in report["notes"])

    texts = [p.read_text() for p in Path(report_dir).rglob("report.*")] + [caplog.text]
    with get_client(sync_client=True) as client:
        for flow_state in (state, restored):
            run = client.read_flow_run(flow_state.state_details.flow_run_id)
            texts.append(json.dumps(run.parameters, default=str))
        texts += [json.dumps(a.data, default=str) for a in client.read_artifacts()]
    secrets = (neon_project.double.api_key, neon_project.double.password)
    assert len(texts) > 4 and not [t for t in texts if any(s in t for s in secrets)]


def test_writers_refuse_the_pooler_and_name_the_direct_host(
    neon_project: NeonProject, neon_flow_env: dict, monkeypatch, tmp_path: Path
) -> None:
    from flows.audit import audit
    from flows.backfill import backfill
    from flows.schema import schema_downgrade

    double, direct = neon_project.double, neon_project.main_url
    pooled = double.uri(neon_project.id, "main", pooled=True)
    direct_host = double.branch(neon_project.id, "main").compute.host()
    env = {**os.environ, "PREFECT_API_URL": neon_flow_env["api_url"], "DATABASE_URL": pooled}
    out = subprocess.run(
        [sys.executable, "-m", "flows.phase1", "--source", EXAMPLE, "--provider", "neon", "--report-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"direct host {direct_host}" in errors[0] and "Traceback" not in out.stderr
    with psycopg.connect(direct) as conn:
        assert conn.execute("SELECT count(*) FROM migration_runs").fetchone()[0] == 0
    assert names(neon_project) == {"main"}  # refused before the checkpoint branch too

    revision = schema.current_revision(direct)
    monkeypatch.setenv("DATABASE_URL", pooled)
    report_dir = neon_flow_env["report_dir"]
    for flow_state in (
        schema_downgrade(
            target="0005", allow_data_loss=True, checkpoint=False, report_dir=report_dir, return_state=True
        ),
        backfill(name="tasks.priority", report_dir=report_dir, return_state=True),
    ):
        outcome = flow_state.result(raise_on_failure=False)
        assert outcome["exit_code"] == 2 and direct_host in outcome["error"], outcome
    assert schema.current_revision(direct) == revision
    assert audit(report_dir=report_dir, return_state=True).is_completed()  # reads may use the pooler



def test_checkpoints_and_restores_refuse_a_url_of_another_branch(
    neon_project: NeonProject, neon_flow_env: dict, monkeypatch
) -> None:
    """On Neon they act on the default branch: a DATABASE_URL of dev would restore main, unseen."""
    from flows.rollback import rollback_restore
    from tasks.branching.neon import NeonBranches

    NeonBranches.from_environment().create("dev")
    before = fingerprints(neon_project.main_url)
    monkeypatch.setenv("DATABASE_URL", neon_project.url("dev"))
    state = rollback_restore(
        from_branch="dev", branch_provider="neon", report_dir=neon_flow_env["report_dir"], return_state=True
    )
    outcome = state.result(raise_on_failure=False)
    assert outcome["exit_code"] == 2 and "not the endpoint of Neon's default branch main" in outcome["error"]
    assert fingerprints(neon_project.main_url) == before and names(neon_project) == {"main", "dev"}
