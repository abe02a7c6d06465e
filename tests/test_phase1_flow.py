"""The Phase 1 flow through the Prefect engine, on real PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from flows.phase1 import phase1_migration, phase1_rollback
from tasks.db import MIGRATION_LOCK_KEY
from tests.conftest import ROOT, table_checksums

EXAMPLE = str(ROOT / "examples" / "tasks.json")


def inference_defaults(target: str) -> str:
    from tasks.vocabulary import BUILTIN

    return BUILTIN.defaults[target]


def migrate(env: dict[str, str], **kwargs):
    state = phase1_migration(report_dir=env["report_dir"], return_state=True, **kwargs)
    return state, state.result(raise_on_failure=False)


def count(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchone()[0]


def test_example_file_is_migrated_reconciled_and_reported(flow_env: dict[str, str]) -> None:
    state, out = migrate(flow_env, source=EXAMPLE)
    assert state.is_completed(), out
    assert out["exit_code"] == 0
    c = out["counts"]
    assert c == {
        "records_read": 15,
        "inserted": 9,
        "updated": 0,
        "unchanged": 0,
        "conflicts": 0,
        "duplicates": 1,
        "quarantined": 5,
        "disappeared": 0,
        "deleted": 0,
    }
    url = flow_env["db_url"]
    assert count(url, "SELECT count(*) FROM tasks") == 9
    assert count(url, "SELECT count(*) FROM quarantine") == 5
    # created_at from the record, priority and tags in their columns, owner from the record
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT priority, tags, legacy_extra::text FROM tasks WHERE legacy_id = 5"
        ).fetchone()
        assert row == ("high", ["travel"], None)
        # "id": "9" with "completed": "yes": a numeric string id and a yes/no word, the word kept
        assert conn.execute(
            "SELECT legacy_key, status, legacy_extra::text FROM tasks WHERE legacy_id = 9"
        ).fetchone() == (
            "9",
            "done",
            '{"completed":"yes"}',
        )
        # no id at all: a key derived from the record
        assert (
            conn.execute("SELECT legacy_key FROM tasks WHERE title = 'No id at all'")
            .fetchone()[0]
            .startswith("~")
        )
        r3 = conn.execute(
            "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM tasks WHERE legacy_id = 3"
        ).fetchone()[0]
        assert r3 == "2025-03-14 09:26:53"
        owner = conn.execute(
            "SELECT u.email FROM tasks t JOIN users u ON u.id = t.user_id WHERE t.legacy_id = 6"
        ).fetchone()[0]
        assert owner == "sam@example.com"
        reasons = dict(conn.execute("SELECT position, reasons FROM quarantine").fetchall())
        assert any("title is longer than 200 characters" in r for r in reasons[9])
        assert any("contains a NUL" in r for r in reasons[11])
    report = json.loads((Path(flow_env["report_dir"]) / out["run_id"] / "report.json").read_text())
    assert (
        report["verification"]["ok"]
        and report["verification"]["source_checksum"] == report["verification"]["database_checksum"]
    )
    assert report["source"]["sha256"] and report["timing"]["rows_per_s"] > 0
    inference = report["inference"]
    assert inference["records_in"] == {"$.tasks": 15} and inference["not_migrated"] == {"next_id": "a number"}
    assert inference["rules"]["completed <- is_completed (boolean)"] == 1
    assert inference["defaults"][inference_defaults("id")] == 1
    assert (Path(flow_env["report_dir"]) / out["run_id"] / "report.md").read_text().startswith("# Phase 1")


def test_second_run_inserts_nothing(flow_env: dict[str, str]) -> None:
    _, first = migrate(flow_env, source=EXAMPLE)
    before = table_checksums(flow_env["db_url"])
    state, second = migrate(flow_env, source=EXAMPLE)
    assert state.is_completed(), second
    assert second["counts"]["inserted"] == 0
    assert second["counts"]["unchanged"] == first["counts"]["inserted"]
    after = table_checksums(flow_env["db_url"])
    assert before["tasks"] == after["tasks"] and before["users"] == after["users"]


def test_rollback_leaves_the_database_exactly_as_before(flow_env: dict[str, str]) -> None:
    url = flow_env["db_url"]
    with psycopg.connect(url, autocommit=True) as conn:  # the application's own data must survive
        conn.execute(
            "INSERT INTO users (id, email) VALUES ('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'app@example.com')"
        )
        conn.execute(
            "INSERT INTO tasks (id, user_id, title) VALUES ('bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'app task')"
        )
    before = table_checksums(url)
    _, out = migrate(flow_env, source=EXAMPLE)
    assert table_checksums(url) != before
    state = phase1_rollback(run_id=out["run_id"], report_dir=flow_env["report_dir"], return_state=True)
    result = state.result(raise_on_failure=False)
    assert state.is_completed(), result
    assert result["counts"]["tasks_removed"] == 9 and result["counts"]["users_removed"] == 2
    assert table_checksums(url) == before
    again = phase1_rollback(run_id=out["run_id"], report_dir=flow_env["report_dir"], return_state=True)
    assert again.is_failed() and again.result(raise_on_failure=False)["exit_code"] == 2


def test_rollback_refuses_when_the_application_changed_rows(flow_env: dict[str, str]) -> None:
    _, out = migrate(flow_env, source=EXAMPLE)
    with psycopg.connect(flow_env["db_url"], autocommit=True) as conn:
        conn.execute("UPDATE tasks SET title = 'edited', updated_at = now() WHERE legacy_id = 1")
    state = phase1_rollback(run_id=out["run_id"], report_dir=flow_env["report_dir"], return_state=True)
    assert state.is_failed() and "changed after the run" in state.message
    forced = phase1_rollback(run_id=out["run_id"], report_dir=flow_env["report_dir"], force=True, return_state=True)
    assert forced.is_completed()


def test_dry_run_writes_nothing(flow_env: dict[str, str]) -> None:
    url = flow_env["db_url"]
    before = table_checksums(url)
    state, out = migrate(flow_env, source=EXAMPLE, dry_run=True)
    assert state.is_completed(), out
    assert out["counts"]["inserted"] == 9 and out["counts"]["quarantined"] == 5
    assert table_checksums(url) == before
    assert count(url, "SELECT count(*) FROM migration_runs") == 0


def test_database_behind_is_brought_to_head(
    prefect_harness: str, empty_db_url: str, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", empty_db_url)
    state, out = migrate({"report_dir": str(tmp_path)}, source=EXAMPLE)
    assert state.is_completed(), out
    assert out["report_data"]["schema"]["before"] is None
    assert count(empty_db_url, "SELECT count(*) FROM tasks") == 9


def test_a_second_run_at_the_same_time_stops_with_a_clear_message(flow_env: dict[str, str]) -> None:
    with psycopg.connect(flow_env["db_url"], autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        state, out = migrate(flow_env, source=EXAMPLE)
    assert state.is_failed()
    assert out["exit_code"] == 3 and "another migration run holds the lock" in out["error"]
    assert count(flow_env["db_url"], "SELECT count(*) FROM tasks") == 0


def test_variants_bare_list_aliases_and_map(flow_env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "old.json"
    src.write_text(
        json.dumps(
            [
                {"task_id": 1, "title": "a", "is_completed": True, "created_at": "2024-05-01T10:00:00"},
                {"task_id": 2, "title": "b", "state": False, "user_email": "kim@example.com"},
            ]
        )
    )
    state, out = migrate(flow_env, source=str(src), field_map=["state=completed"])
    assert state.is_completed(), out
    assert out["counts"]["inserted"] == 2
    rules = out["report_data"]["inference"]["rules"]
    assert {r for r in rules if not r.startswith("tags") and not r.startswith("priority")} == {
        "created_at <- created_at (ISO 8601)",
        "completed <- is_completed (boolean)",
        "completed <- state (boolean)",
        "id <- task_id (integer)",
        "title <- title",
        "owner <- user_email",
    }
    assert out["report_data"]["naive_timestamps_read_as_utc"] == 1


def test_bad_input_fails_cleanly_through_the_flow(flow_env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"tasks": [{"id": 1,')
    state, out = migrate(flow_env, source=str(bad))
    assert state.is_failed() and out["exit_code"] == 2 and "truncated" in out["error"]
    assert count(flow_env["db_url"], "SELECT count(*) FROM migration_runs") == 0


def test_no_password_in_reports_artifacts_parameters_or_logs(
    flow_env: dict[str, str], monkeypatch, caplog
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from sqlalchemy.engine import make_url

    secret = "hunter2-not-for-logs"
    url = make_url(flow_env["db_url"]).set(password=secret).render_as_string(hide_password=False)
    monkeypatch.setenv("DATABASE_URL", url)  # trust auth locally: the password is carried, not checked
    state, out = migrate(flow_env, source=EXAMPLE)
    assert state.is_completed(), out
    folder = Path(flow_env["report_dir"]) / out["run_id"]
    texts = [p.read_text() for p in folder.iterdir()] + [caplog.text, json.dumps(out, default=str)]
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        texts.append(json.dumps(run.parameters, default=str))
        # this run's artifacts (the session's server holds every other test's too: a page of all
        # of them need not include these)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
        texts += [json.dumps(a.data, default=str) for a in artifacts]
    assert {"phase1-report", "phase1-quarantine", "phase1-progress"} <= {a.key for a in artifacts}
    progress = [
        a.data for a in artifacts if a.key == "phase1-progress" and a.flow_run_id == run.id
    ]  # sent from a thread of its own: the last state must still arrive before the flow ends
    assert progress == [100.0]
    assert not [t for t in texts if secret in t]
    assert "***" in out["report_data"]["database"] or "@" not in out["report_data"]["database"]


def test_verification_names_a_record_the_database_changed(flow_env: dict[str, str]) -> None:
    from tasks.mapping import FieldMapping
    from tasks.source import precheck
    from tasks.transform import TransformContext
    from tasks.verify import find_mismatches, verify_run

    _, out = migrate(flow_env, source=EXAMPLE)
    with psycopg.connect(flow_env["db_url"], autocommit=True) as conn:
        conn.execute("UPDATE tasks SET title = 'tampered' WHERE legacy_id = 12")
        result = verify_run(conn, out["run_id"], 15)
        assert not result.ok and "checksums" in result.problems[0]
        started = conn.execute(
            "SELECT started_at FROM migration_runs WHERE id = %s", (out["run_id"],)
        ).fetchone()[0]
        from tasks.runs import canonical_ts

        ctx = TransformContext(
            "phase1", "phase1-migration@example.com", canonical_ts(started), {}, FieldMapping.build()
        )
        found = find_mismatches(conn, precheck(EXAMPLE), ctx, out["run_id"], 10_000)
    assert found == [{"position": 14, "legacy_id": "12", "problem": "content differs"}]


@pytest.mark.parametrize("workers", [1, 3])
def test_many_chunks_and_workers_reconcile(flow_env: dict[str, str], tmp_path: Path, workers: int) -> None:
    src = tmp_path / "many.json"
    src.write_text(
        json.dumps(
            {
                "tasks": [{"id": i, "title": f"t{i}", "completed": i % 2 == 0} for i in range(1, 1001)]
                + [{"id": 5, "title": "dup with other content", "completed": True}]
            }
        )
    )
    state, out = migrate(flow_env, source=str(src), chunk_size=64, workers=workers)
    assert state.is_completed(), out
    assert out["counts"] == {
        "records_read": 1001,
        "inserted": 1000,
        "updated": 0,
        "unchanged": 0,
        "conflicts": 0,
        "duplicates": 0,
        "quarantined": 1,
        "disappeared": 0,
        "deleted": 0,
    }
    assert count(flow_env["db_url"], "SELECT count(*) FROM migration_checkpoints") == 16
