"""The audit on a real PostgreSQL: every check passes on a clean database and finds its breakage;
--fix-orphans quarantines orphans in one undoable step."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psycopg
import pytest

from bench.workload import seed_tasks
from tasks.audit import fix_orphans, run_checks, undo_fix
from tasks.runs import open_run
from tests.conftest import ROOT, artifact_keys, table_checksums

EXAMPLE = ROOT / "examples" / "tasks.json"


def failing(url: str, source: Path | None = None) -> dict[str, list]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {c.check: c.sample for c in run_checks(conn, source) if c.failed}


BREAKAGES = {
    "orphan": [
        "ALTER TABLE tasks DROP CONSTRAINT fk_tasks_user_id",
        "INSERT INTO tasks (id, user_id, title, status) VALUES "
        "('00000000-0000-0000-0000-0000000000aa', gen_random_uuid(), 'lost', 'todo')",
    ],
    "not valid": [
        "ALTER TABLE tasks ADD CONSTRAINT ck_title_short CHECK (length(title) < 5) NOT VALID",
    ],
    "required null": [
        "ALTER TABLE tasks ALTER COLUMN status DROP NOT NULL",
        "UPDATE tasks SET status = NULL WHERE legacy_id = 7",
    ],
    "duplicate legacy id": [
        "ALTER TABLE tasks DROP CONSTRAINT uq_tasks_legacy",
        "INSERT INTO tasks (id, user_id, legacy_source, legacy_id, title, status) "
        "SELECT gen_random_uuid(), user_id, legacy_source, legacy_id, title, status FROM tasks WHERE legacy_id = 3",
    ],
    "row schema": ["UPDATE tasks SET title = '   ' WHERE legacy_id = 5"],
}


def test_clean_database_passes_every_check(db_url: str) -> None:
    seed_tasks(db_url, 500)
    with psycopg.connect(db_url, autocommit=True) as conn:
        found = run_checks(conn)
    assert {c.check for c in found} >= {"orphan", "not valid", "invalid index", "required null", "row schema"}
    assert [c for c in found if c.failed] == []


@pytest.mark.parametrize("check", sorted(BREAKAGES))
def test_each_check_finds_its_breakage(db_url: str, check: str) -> None:
    seed_tasks(db_url, 200)
    with psycopg.connect(db_url, autocommit=True) as conn:
        for statement in BREAKAGES[check]:
            conn.execute(statement)
    found = failing(db_url)
    assert check in found, found
    expected_extra = {"required null": {"row schema"}, "row schema": set()}.get(check, set())
    assert set(found) - {check} <= expected_extra, found  # and nothing unrelated fails
    assert found[check], "the failure names a sample"


def test_an_index_a_failed_concurrent_build_left_is_found(db_url: str) -> None:
    seed_tasks(db_url, 50)
    with psycopg.connect(db_url, autocommit=True) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("CREATE UNIQUE INDEX CONCURRENTLY ix_tasks_status ON tasks (status)")
    assert failing(db_url) == {"invalid index": ["ix_tasks_status"]}


def test_fix_orphans_quarantines_them_in_one_step_and_undo_restores(db_url: str) -> None:
    seed_tasks(db_url, 100)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE tasks DROP CONSTRAINT fk_tasks_user_id")
        conn.execute("DELETE FROM users")
        before = table_checksums(db_url)["tasks"]
        run_id = open_run(conn, "audit", {})
        assert fix_orphans(conn, run_id) == 100
        assert failing(db_url) == {}
        reasons = conn.execute(
            "SELECT DISTINCT reasons[1] FROM quarantine WHERE run_id = %s", (run_id,)
        ).fetchall()
        assert len(reasons) == 1 and reasons[0][0].startswith("orphan: tasks.user_id = ")
        assert undo_fix(conn, run_id) == 100
    assert table_checksums(db_url)["tasks"] == before
    assert "orphan" in failing(db_url)


def test_source_checks_name_a_missing_row_and_a_changed_title(
    flow_env: dict[str, str], tmp_path: Path
) -> None:
    from flows.audit import audit
    from flows.phase1 import phase1_migration

    source = tmp_path / "tasks.json"
    shutil.copy(EXAMPLE, source)
    assert phase1_migration(
        source=str(source), report_dir=flow_env["report_dir"], return_state=True
    ).is_completed()
    url = flow_env["db_url"]
    assert failing(url, source) == {}
    with psycopg.connect(url, autocommit=True) as conn:
        ids = [
            r[0] for r in conn.execute("SELECT legacy_id FROM tasks ORDER BY legacy_id LIMIT 2").fetchall()
        ]
        conn.execute("DELETE FROM tasks WHERE legacy_id = %s", (ids[0],))
        conn.execute("UPDATE tasks SET title = 'changed' WHERE legacy_id = %s", (ids[1],))
    found = failing(url, source)
    assert set(found) == {"source rows", "source checksum"}
    problems = " | ".join(found["source checksum"])
    assert f"(id {ids[0]}): missing from tasks" in problems and f"(id {ids[1]}): content differs" in problems

    state = audit(source=str(source), report_dir=flow_env["report_dir"], return_state=True)
    assert state.is_failed()
    out = state.result(raise_on_failure=False)
    assert out["exit_code"] == 1 and out["report_data"]["failed"] == ["source checksum", "source rows"]
    saved = json.loads((Path(flow_env["report_dir"]) / out["run_id"] / "audit.json").read_text())
    assert saved["status"] == "failed"
    assert artifact_keys(state.state_details.flow_run_id) == {"audit-checks", "audit-report"}


def test_source_checks_hold_after_a_resync_counted_the_file_unchanged(
    flow_env: dict[str, str], tmp_path: Path
) -> None:
    from flows.phase1 import phase1_migration

    source = tmp_path / "tasks.json"
    source.write_text(json.dumps([{"id": i, "title": f"task {i}", "completed": i % 2 == 0} for i in range(1, 40)]))
    for _ in range(2):
        state = phase1_migration(source=str(source), report_dir=flow_env["report_dir"], return_state=True)
    assert state.result()["report_data"]["files"][0]["status"] == "unchanged"  # counted, not read
    url = flow_env["db_url"]
    assert failing(url, source) == {}  # checked against the run that read it
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE tasks SET title = 'changed' WHERE legacy_id = '7'")
    assert set(failing(url, source)) == {"source checksum"}
    with psycopg.connect(url, autocommit=True) as conn:  # the application deletes a task
        conn.execute("DELETE FROM tasks WHERE legacy_id = '8'")
    assert set(failing(url, source)) == {"source checksum", "source rows"}
    # a re-sync reads the file again and leaves the row deleted (its record a conflict, in quarantine):
    # checked against that run, nothing is missing
    state = phase1_migration(source=str(source), report_dir=flow_env["report_dir"], return_state=True)
    assert state.result()["counts"]["conflicts"] == 1, state.result()["counts"]
    assert set(failing(url, source)) == {"source checksum"}  # only the title the application changed


def test_audit_flow_fix_orphans_then_passes(flow_env: dict[str, str]) -> None:
    from flows.audit import audit

    url = flow_env["db_url"]
    seed_tasks(url, 30)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE tasks DROP CONSTRAINT fk_tasks_user_id")
        conn.execute("DELETE FROM users")
    state = audit(fix=True, report_dir=flow_env["report_dir"], return_state=True)
    assert state.is_completed(), state.message
    out = state.result()
    assert out["counts"]["orphans_quarantined"] == 30 and out["report_data"]["failed"] == []
    with psycopg.connect(url) as conn:  # moved by the audit, not deleted by the application
        assert conn.execute("SELECT count(*) FROM migration_deleted").fetchone()[0] == 0


def test_audit_cli_prints_the_table_and_names_what_failed(flow_env: dict[str, str], capsys) -> None:
    from flows.commands.audit import main

    url = flow_env["db_url"]
    seed_tasks(url, 20)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE tasks DROP CONSTRAINT fk_tasks_user_id")
        conn.execute("DELETE FROM users")
    assert main(["--report-dir", flow_env["report_dir"]]) == 1
    out = capsys.readouterr().out
    assert "orphan               FAIL" in out and "audit FAILED: orphan" in out
    assert main(["--fix-orphans", "--report-dir", flow_env["report_dir"]]) == 0
    out = capsys.readouterr().out
    assert "audit passed" in out
    run_id = out.split("python -m flows.audit undo-fix ")[1].split()[0]
    assert main(["undo-fix", run_id, "--report-dir", flow_env["report_dir"]]) == 0
    assert "20 rows restored from quarantine" in capsys.readouterr().out
    assert main(["--report-dir", flow_env["report_dir"]]) == 1  # the orphans are back
    assert main(["undo-fix", "not-a-run"]) == 2
