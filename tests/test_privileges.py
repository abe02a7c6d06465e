"""Every flow under the roles production has (tests/roles.py): (a) a Neon-like owner, (b) an owner
without CREATEDB, (c) an application role with DML grants only. Each works, or refuses before it
writes anything with one line naming the missing privilege and the way on (exit 2, never 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from bench.workload import seed_tasks
from flows.rollback import fingerprints
from tasks import schema
from tasks.branching.local import LocalBranches
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "tasks.json"


def cli(module: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def env_for(url: str, api_url: str) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": api_url, "DATABASE_URL": url}


def one(url: str, query: str):
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchone()[0]


def databases_like(url: str, suffix: str) -> list[str]:
    """This database's namesakes `<db><suffix>` (the server holds other tests' databases too)."""
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE current_database() || %s", (suffix,)
        )]  # fmt: skip


def test_the_roles_are_what_production_has(owner_db: str, nocreatedb_db: str, app_db: tuple[str, str]) -> None:
    with psycopg.connect(owner_db) as conn:
        row = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert row == (False, True, True, False)
        assert conn.execute(
            "SELECT bool_and(pg_get_userbyid(relowner) = current_user) FROM pg_class "
            "WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
        ).fetchone()[0]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SET session_replication_role = replica")
    assert one(nocreatedb_db, "SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user") is False
    with psycopg.connect(app_db[0]) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("ALTER TABLE tasks ADD COLUMN x int")


@pytest.mark.parametrize("role", ["superuser", "owner"])
def test_phase1_with_the_default_online_checkpoint_under_both_roles(
    role: str, db_url: str, owner_db: str, flow_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The superuser checks foreign keys once per chunk; role (a) may not skip the per-row triggers,
    so PostgreSQL checks every row. Both take the online checkpoint and verify."""
    from flows.phase1 import phase1_migration

    if role == "superuser" and os.environ.get("TEST_ROLE") == "owner":
        pytest.skip("TEST_ROLE=owner: db_url is role (a)'s, the other parameter")
    url = db_url if role == "superuser" else owner_db
    monkeypatch.setenv("DATABASE_URL", url)
    state = phase1_migration(source=str(EXAMPLE), report_dir=flow_env["report_dir"], chunk_size=4, return_state=True)
    assert state.is_completed(), state.message
    report = state.result()["report_data"]
    assert report["verification"]["ok"] and report["counts"]["inserted"] == 9
    chunks = report["foreign_keys_checked"]["per_chunk"] + report["foreign_keys_checked"]["per_row"]
    assert report["foreign_keys_checked"] == (
        {"per_chunk": chunks, "per_row": 0} if role == "superuser" else {"per_chunk": 0, "per_row": chunks}
    )
    assert report["checkpoint"]["copy"] == "online"
    branch = LocalBranches(url).url(report["checkpoint"]["name"])
    assert one(branch, "SELECT count(*) FROM tasks") == 0  # the state before the run
    if role == "owner":  # the copy is the role's own: a non-superuser restores as itself
        assert one(branch, "SELECT bool_and(pg_get_userbyid(relowner) = current_user) FROM pg_class "
                           "WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'")  # fmt: skip


@pytest.mark.parametrize("copy", ["online", "template"])
def test_local_branches_as_a_non_superuser_owner(owner_db: str, copy: str) -> None:
    seed_tasks(owner_db, 200)
    branches = LocalBranches(owner_db, copy=copy)
    dev = f"{branches.main}-dev"
    branches.create(dev)
    assert fingerprints(branches.url(dev)) == fingerprints(owner_db)
    with psycopg.connect(branches.url(dev)) as conn:
        conn.execute("DELETE FROM tasks WHERE legacy_id <= 20")
    before = fingerprints(owner_db)
    branches.restore(branches.main, source_branch=dev, preserve_under_name=f"{branches.main}-kept")
    assert one(owner_db, "SELECT count(*) FROM tasks") == 180
    assert fingerprints(branches.url(f"{branches.main}-kept")) == before
    branches.reset(dev)
    assert fingerprints(branches.url(dev)) == fingerprints(owner_db)
    branches.delete(dev)


def test_an_owner_without_createdb_is_refused_the_checkpoint_and_nothing_is_written(
    nocreatedb_db: str, flow_env: dict[str, str], tmp_path: Path
) -> None:
    env = env_for(nocreatedb_db, flow_env["api_url"])
    out = cli("flows.phase1", ["--source", str(EXAMPLE), "--report-dir", str(tmp_path)], env)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert "CREATEDB" in lines[0] and "--no-checkpoint" in lines[0] and "--provider neon" in lines[0]
    assert one(nocreatedb_db, "SELECT count(*) FROM migration_runs") == 0
    assert databases_like(nocreatedb_db, "-backup-%") == []
    schema_out = cli("flows.schema", ["downgrade", "0007", "--allow-data-loss", "--report-dir", str(tmp_path)], env)
    assert schema_out.returncode == 2 and "CREATEDB" in schema_out.stderr, schema_out.stderr
    assert schema.current_revision(nocreatedb_db) == schema.head_revision()
    ok = cli("flows.phase1", ["--source", str(EXAMPLE), "--report-dir", str(tmp_path), "--no-checkpoint", "--json"], env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["verification"]["ok"]


def test_an_application_role_with_dml_only(app_db: tuple[str, str], flow_env: dict[str, str], tmp_path: Path) -> None:
    """Schema changes are refused naming the owner's URL as the way on; what DML can do works."""
    app, owner = app_db
    schema.downgrade_to(owner, "0007")
    env = env_for(app, flow_env["api_url"])
    refused = cli("flows.schema", ["upgrade", "--no-checkpoint", "--report-dir", str(tmp_path)], env)
    assert refused.returncode == 2, refused.stderr
    said = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(said) == 1 and "may not change the schema" in said[0] and "owner" in said[0], refused.stderr
    assert schema.current_revision(owner) == "0007" and one(owner, "SELECT count(*) FROM migration_runs") == 0
    branch = cli("flows.branches", ["create", "dev", "--report-dir", str(tmp_path)], env)
    assert branch.returncode == 2 and "CREATEDB" in branch.stderr, branch.stderr
    schema.upgrade(owner, complete_breaking=True)
    seed_tasks(owner, 50, null_every=5)
    steps_ok = [
        ("flows.phase1", ["--source", str(EXAMPLE), "--no-checkpoint"]),
        ("flows.backfill", ["--table", "tasks", "--column", "notes", "--value", "x"]),
        ("flows.audit", []),
    ]
    for module, args in steps_ok:
        out = cli(module, [*args, "--report-dir", str(tmp_path), "--json"], env)
        assert out.returncode in (0, 1), (module, out.stderr)  # the audit may fail a check, not the role
        assert "permission denied" not in out.stderr, (module, out.stderr)
    assert one(owner, "SELECT count(*) FROM tasks WHERE notes IS NULL") == 0
    assert one(owner, "SELECT count(*) FROM tasks WHERE legacy_source = 'phase1'") == 9
