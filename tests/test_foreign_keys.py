"""Foreign keys checked once per chunk (tasks/foreign_keys.py), on real PostgreSQL: taken only when
it is the same guarantee, and every other case falls back to PostgreSQL's per-row triggers."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import errors as pgerrors

from tasks import foreign_keys
from tasks.load import LoadSummary, load
from tests.conftest import started_run


def _load(db_url: str, tmp_path: Path, records: int = 250) -> LoadSummary:
    src = tmp_path / "t.json"
    src.write_text(
        json.dumps([{"id": i, "title": f"t{i}", "completed": False} for i in range(1, records + 1)])
    )
    info, run_id, ctx = started_run(db_url, src)
    return load(db_url, info, ctx, run_id=run_id, chunk_size=100)


def _superuser(db_url: str) -> bool:
    with psycopg.connect(db_url) as conn:
        return bool(conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0])


def test_a_load_checks_keys_per_chunk_where_the_role_may(db_url: str, tmp_path: Path) -> None:
    summary = _load(db_url, tmp_path)
    assert summary.inserted == 250
    # a superuser may (the embedded server's role); another role loads with per-row triggers
    assert summary.keys_checked_per_chunk == (3 if _superuser(db_url) else 0)


def _load_counting_inserts(db_url: str, tmp_path: Path, enable: str = "") -> int:
    """A load beside a trigger of the application's that counts the rows inserted into tasks
    (`ALTER TABLE tasks ENABLE <enable> TRIGGER` first, if given): how many it counted. Every chunk
    keeps its triggers firing (keys checked per row)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE seen (n int)")
        conn.execute(
            "CREATE FUNCTION count_task() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO seen VALUES (1); RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER count_task AFTER INSERT ON tasks FOR EACH ROW EXECUTE FUNCTION count_task()"
        )
        if enable:
            conn.execute(f"ALTER TABLE tasks ENABLE {enable} TRIGGER count_task")
    summary = _load(db_url, tmp_path)
    assert (summary.inserted, summary.keys_checked_per_chunk) == (250, 0)
    with psycopg.connect(db_url) as conn:
        return int(conn.execute("SELECT count(*) FROM seen").fetchone()[0])


def test_an_application_trigger_keeps_every_trigger_firing(db_url: str, tmp_path: Path) -> None:
    """The replica role would skip the application's trigger too: that chunk goes per row."""
    assert _load_counting_inserts(db_url, tmp_path) == 250


def test_a_trigger_enabled_for_replicas_only_stays_silent(db_url: str, tmp_path: Path) -> None:
    """A replicator's trigger (ENABLE REPLICA) fires only under the replica role: the chunks go per
    row, so it stays as silent as it would be without this module."""
    assert _load_counting_inserts(db_url, tmp_path, enable="REPLICA") == 0


def test_a_missing_user_fails_the_insert_as_the_foreign_key_would(db_url: str) -> None:
    """No row to lock: the chunk keeps per-row checks, and PostgreSQL's own check refuses the row."""
    if not _superuser(db_url):
        pytest.skip("the role may not set session_replication_role: every chunk is per row already")
    ghost, run_id = uuid.uuid4().hex, str(uuid.uuid4())
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO migration_runs (id, kind, status, parameters) VALUES (%s, 'phase1', 'running', '{}')",
            (run_id,),
        )
        assert foreign_keys.may_batch(conn)
        with conn.transaction():
            assert not foreign_keys.check_per_chunk(conn, [ghost], run_id)
            assert conn.execute("SHOW session_replication_role").fetchone()[0] == "origin"
            with pytest.raises(pgerrors.ForeignKeyViolation):
                conn.execute(
                    "INSERT INTO tasks (id, user_id, title, status) VALUES (%s, %s, 't', 'todo')",
                    (uuid.uuid4(), ghost),
                )


def test_the_referenced_rows_stay_locked_until_the_chunk_commits(db_url: str) -> None:
    """What the per-row check guarantees, per chunk: the user cannot be deleted under the insert."""
    if not _superuser(db_url):
        pytest.skip("the role may not set session_replication_role: every chunk is per row already")
    user, run_id = uuid.uuid4().hex, str(uuid.uuid4())
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (id, email) VALUES (%s, 'x@example.com')", (user,))
        conn.execute(
            "INSERT INTO migration_runs (id, kind, status, parameters) VALUES (%s, 'phase1', 'running', '{}')",
            (run_id,),
        )
    with psycopg.connect(db_url, autocommit=True) as loader, psycopg.connect(db_url, autocommit=True) as app:
        with loader.transaction():
            assert foreign_keys.check_per_chunk(loader, [user], run_id)
            assert loader.execute("SHOW session_replication_role").fetchone()[0] == "replica"
            app.execute("SET lock_timeout = '200ms'")
            with pytest.raises(pgerrors.LockNotAvailable):
                app.execute("DELETE FROM users WHERE id = %s", (user,))
        assert loader.execute("SHOW session_replication_role").fetchone()[0] == "origin"  # SET LOCAL ended


def test_a_role_without_the_privilege_is_told_no(db_url: str) -> None:
    if not _superuser(db_url):
        with psycopg.connect(db_url, autocommit=True) as conn:
            assert not foreign_keys.may_batch(conn)
        return
    role = f"loader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role}")
        try:
            conn.execute(f"SET ROLE {role}")
            assert not foreign_keys.may_batch(conn)
            conn.execute("RESET ROLE")
        finally:
            conn.execute(f"DROP ROLE {role}")


def test_a_resync_fires_the_applications_update_triggers_on_the_rows_it_updates(
    flow_env: dict[str, str], tmp_path: Path
) -> None:
    """A re-sync's chunk updates rows and writes their history: the replica role that stands in for
    the per-row key checks would skip an application's UPDATE trigger (an audit log here) too, so
    such a chunk keeps every trigger firing."""
    from flows.phase1 import phase1_migration

    url = flow_env["db_url"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE audit (op text, legacy_key text, title text)")
        conn.execute(
            "CREATE FUNCTION audit_task() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO audit VALUES (TG_OP, NEW.legacy_key, NEW.title); RETURN NEW; END $$"
        )
        conn.execute("CREATE TRIGGER audit_task AFTER UPDATE ON tasks FOR EACH ROW EXECUTE FUNCTION audit_task()")
    src = tmp_path / "tasks.json"
    records = [{"id": i, "title": f"t{i}", "completed": False} for i in range(1, 4)]

    def migrate() -> dict[str, int]:
        src.write_text(json.dumps({"tasks": records}), encoding="utf-8")
        state = phase1_migration(source=str(src), report_dir=flow_env["report_dir"], checkpoint=False, return_state=True)
        assert state.is_completed(), state.result(raise_on_failure=False)
        return state.result()["counts"]

    assert migrate()["inserted"] == 3
    records[0]["title"] = "t1, edited in the CLI"
    records.append({"id": 4, "title": "t4", "completed": False})
    counts = migrate()
    assert (counts["inserted"], counts["updated"], counts["unchanged"]) == (1, 1, 2)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT op, legacy_key, title FROM audit").fetchall() == [
            ("UPDATE", "1", "t1, edited in the CLI")
        ]


def test_keys_checked_once_for_a_statement_are_checked_per_row_again_after_it(db_url: str) -> None:
    """checked_once() covers the block alone: later in the same transaction a row that names no run
    is refused by PostgreSQL's own check, and a probe inside an open transaction leaves nothing on."""
    run_id = str(uuid.uuid4())
    with psycopg.connect(db_url) as conn:  # not autocommit: everything below is one transaction
        conn.execute(
            "INSERT INTO migration_runs (id, kind, status, parameters) VALUES (%s, 'phase1', 'running', '{}')",
            (run_id,),
        )
        may = foreign_keys.may_batch(conn)
        assert may == _superuser(db_url)
        assert conn.execute("SHOW session_replication_role").fetchone()[0] == "origin"
        with foreign_keys.checked_once(conn, (), run_id) as off:
            assert off == may
            assert conn.execute("SHOW session_replication_role").fetchone()[0] == ("replica" if may else "origin")
            conn.execute(
                "INSERT INTO migration_files (run_id, file_no, part, legacy_source, path, status) "
                "VALUES (%s, 0, 0, 'phase1:a', 'a', 'unchanged')",
                (run_id,),
            )
        assert conn.execute("SHOW session_replication_role").fetchone()[0] == "origin"
        with pytest.raises(pgerrors.ForeignKeyViolation):
            conn.execute(
                "INSERT INTO migration_files (run_id, file_no, part, legacy_source, path, status) "
                "VALUES (%s, 1, 0, 'phase1:b', 'b', 'unchanged')",
                (str(uuid.uuid4()),),
            )


def test_an_application_trigger_on_migration_files_fires_for_every_unchanged_file(
    flow_env: dict[str, str], tmp_path: Path
) -> None:
    """A re-sync records the files it need not read in one statement; with a trigger of the
    application's on migration_files there, that statement keeps every trigger firing."""
    from flows.phase1 import phase1_migration

    url = flow_env["db_url"]
    for user in ("ann", "bob"):
        (tmp_path / "in" / user).mkdir(parents=True)
        (tmp_path / "in" / user / "tasks.json").write_text(
            json.dumps({"tasks": [{"id": 1, "title": f"{user}'s", "completed": False}]}), encoding="utf-8"
        )

    def migrate() -> dict[str, object]:
        state = phase1_migration(
            source=str(tmp_path / "in"), report_dir=flow_env["report_dir"], checkpoint=False, return_state=True
        )
        assert state.is_completed(), state.result(raise_on_failure=False)
        return state.result()

    migrate()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE seen_files (path text, status text)")
        conn.execute(
            "CREATE FUNCTION see_file() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO seen_files VALUES (NEW.path, NEW.status); RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER see_file AFTER INSERT ON migration_files FOR EACH ROW EXECUTE FUNCTION see_file()"
        )
    again = migrate()
    assert again["report_data"]["source"]["unchanged"] == 2, again["report_data"]["source"]
    with psycopg.connect(url) as conn:
        seen = sorted(conn.execute("SELECT path, status FROM seen_files").fetchall())
    assert seen == sorted((str(tmp_path / "in" / u / "tasks.json"), "unchanged") for u in ("ann", "bob"))
