"""Identifiers users give (backfill names, tables, columns and values, branch names, owner-map
emails, Neon branch names) fed hostile strings: each is refused with one line, or reaches the
database as data, quoted or bound, never as SQL. (`--map` targets: tests/test_transform.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from bench.workload import seed_tasks
from tasks.backfill import BackfillSpec, named, run_backfill
from tasks.branching.local import LocalBranches
from tasks.branching.neon import NeonBranches
from tasks.errors import InputError
from tasks.mapping import read_owner_map
from tests.conftest import ROOT

HOSTILE = [
    'x"; DROP TABLE users; --',
    "x'); DROP TABLE users; --",
    "$$; DROP TABLE users; $$",
    "tasks; DELETE FROM tasks",
    "a\x00b",
    "a\nb",
    "\u202eelbat",
    "\ud800",
    "%s %(x)s {} {0}",
    "../../etc/passwd",
    "",
    "a" * 300,
]


def intact(url: str, tasks: int) -> None:
    with psycopg.connect(url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"users", "tasks", "quarantine", "migration_runs"} <= tables
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == tasks


@pytest.mark.parametrize("hostile", HOSTILE, ids=range(len(HOSTILE)))
def test_backfill_names_tables_and_columns(db_url: str, hostile: str) -> None:
    seed_tasks(db_url, 20)
    with pytest.raises(InputError, match="no backfill named"):
        named(hostile)
    with pytest.raises(InputError, match="no table|is not a PostgreSQL name"):
        run_backfill(db_url, BackfillSpec(hostile, "notes", "x"))
    with pytest.raises(InputError, match="has no column|is not a PostgreSQL name"):
        run_backfill(db_url, BackfillSpec("tasks", hostile, "x"))
    intact(db_url, 20)


@pytest.mark.parametrize("hostile", HOSTILE, ids=range(len(HOSTILE)))
def test_backfill_values_are_data(db_url: str, hostile: str) -> None:
    """A value is a bound parameter cast by PostgreSQL: stored as written, or refused as a value."""
    seed_tasks(db_url, 20, null_every=2)
    try:
        run_backfill(db_url, BackfillSpec("tasks", "notes", hostile))
    except InputError as exc:
        assert "\n" not in str(exc) and "is not text PostgreSQL can store" in str(exc)
        intact(db_url, 20)
        return
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM tasks WHERE notes = %s", (hostile,)).fetchone()[0] == 10
    intact(db_url, 20)


@pytest.mark.parametrize("hostile", HOSTILE, ids=range(len(HOSTILE)))
def test_branch_names_local_and_neon(db_url: str, hostile: str) -> None:
    local = LocalBranches(db_url)
    with pytest.raises(InputError, match="invalid branch name"):
        local.create(hostile)
    if hostile:  # an empty one means none given
        with pytest.raises(InputError, match="invalid branch name"):
            local.restore(local.main, source_branch="x", preserve_under_name=hostile)
    neon = NeonBranches("key", "project", base_url="http://127.0.0.1:9")  # nothing may be sent
    if 0 < len(hostile) <= 256 and hostile.isprintable():  # Neon's own rule: JSON carries it as data
        return
    with pytest.raises(InputError, match="invalid Neon branch name"):
        neon.create(hostile)
    if hostile:
        with pytest.raises(InputError, match="invalid Neon branch name"):
            neon.restore("main", source_branch="x", preserve_under_name=hostile)


@pytest.mark.parametrize("hostile", HOSTILE, ids=range(len(HOSTILE)))
def test_owner_map_emails(hostile: str, tmp_path: Path) -> None:
    csv = tmp_path / "owners.csv"
    csv.write_text(f'legacy_id,email\n1,"{hostile}@example.com"\n2,"{hostile}"\n', encoding="utf-8", errors="surrogatepass")
    with pytest.raises(InputError, match="is not an email address|not UTF-8") as refused:
        read_owner_map(csv)
    assert "\n" not in str(refused.value)


def test_a_hostile_but_well_formed_owner_email_is_stored_as_written(flow_env: dict[str, str], tmp_path: Path) -> None:
    """`x');DROP…@example.com` has the shape of an address: it becomes a user, and nothing else."""
    email = "x');drop-table-users;--@example.com"
    csv = tmp_path / "owners.csv"
    csv.write_text(f"legacy_id,email\n1,{email}\n")
    env = {**os.environ, "PREFECT_API_URL": flow_env["api_url"], "DATABASE_URL": flow_env["db_url"]}
    out = subprocess.run(
        [sys.executable, "-m", "flows.phase1", "--source", str(ROOT / "examples/tasks.json"), "--owner-map", str(csv),
         "--no-checkpoint", "--report-dir", str(tmp_path / "runs")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    with psycopg.connect(flow_env["db_url"]) as conn:
        assert conn.execute("SELECT count(*) FROM users WHERE email = %s", (email,)).fetchone()[0] == 1
    intact(flow_env["db_url"], 9)


def test_the_cli_refuses_hostile_identifiers_with_one_line(flow_env: dict[str, str], tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_API_URL": flow_env["api_url"], "DATABASE_URL": flow_env["db_url"]}
    bad_csv = tmp_path / "owners.csv"
    bad_csv.write_text('legacy_id,email\n1,"a b@example.com"\n')
    for module, args in (
        ("flows.backfill", ["tasks.priority; DROP TABLE users"]),
        ("flows.backfill", ["--table", 'tasks"; DROP TABLE users; --', "--column", "title", "--value", "x"]),
        ("flows.branches", ["create", "dev'; DROP DATABASE postgres; --"]),
        ("flows.phase1", ["--source", str(ROOT / "examples/tasks.json"), "--owner-map", str(bad_csv)]),
    ):
        out = subprocess.run([sys.executable, "-m", module, *args, "--report-dir", str(tmp_path)], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        said = [line for line in out.stderr.splitlines() if line.startswith("error:")]
        assert out.returncode == 2 and len(said) == 1 and "Traceback" not in out.stderr, (module, out.stderr)
    intact(flow_env["db_url"], 0)
