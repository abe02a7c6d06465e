"""The backfill engine and flow on a real PostgreSQL: batches, checkpoints, resume, skipped locks,
rows written meanwhile, identifiers from the catalog only."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psycopg
import pytest

from bench.workload import seed_tasks
from tasks.backfill import BackfillSpec, Settings, run_backfill
from tasks.errors import InputError
from tests.conftest import artifact_keys

NOTES = BackfillSpec("tasks", "notes", "filled")


def nulls(url: str, column: str = "notes") -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM tasks WHERE {column} IS NULL").fetchone()[0]


def state(url: str, name: str = "tasks.notes") -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT status, last_key, rows_done, batches FROM backfill_state WHERE name = %s", (name,)
        ).fetchone()


def test_fills_every_null_and_only_nulls(db_url: str) -> None:
    seed_tasks(db_url, 5_000, null_every=3)
    result = run_backfill(db_url, NOTES, Settings(batch_size=300))
    assert result.status == "done"
    assert result.progress.rows_done == 5_000 // 3
    assert result.progress.batches >= 2
    assert nulls(db_url) == 0
    with psycopg.connect(db_url) as conn:
        kept = conn.execute("SELECT count(*) FROM tasks WHERE notes LIKE 'd%'").fetchone()[0]
    assert kept == 5_000 - 5_000 // 3  # rows that had a value keep it
    assert state(db_url)[:1] == ("done",)


def test_value_is_cast_to_the_column_type_and_composite_keys_work(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("CREATE TABLE pairs (a int, b text, flags text[], PRIMARY KEY (a, b))")
        conn.execute("INSERT INTO pairs SELECT g / 10, (g % 10)::text, NULL FROM generate_series(0, 999) g")
    result = run_backfill(db_url, BackfillSpec("pairs", "flags", "{}"), Settings(batch_size=70))
    assert result.progress.rows_done == 1000 and result.column_type == "text[]"
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM pairs WHERE flags = '{}'").fetchone()[0] == 1000


def test_a_revision_expression_may_hold_percent_signs(db_url: str) -> None:
    """A declared expression is SQL: its `%` (modulo, LIKE patterns) reaches PostgreSQL as written."""
    with psycopg.connect(db_url) as conn:
        conn.execute("CREATE TABLE marks (id int PRIMARY KEY, title text, mark text)")
        conn.execute("INSERT INTO marks SELECT g, 'task ' || g || CASE WHEN g % 4 = 0 THEN ' 100%' ELSE '' END, "
                     "NULL FROM generate_series(1, 500) g")  # fmt: skip
    expr = "CASE WHEN title LIKE '%\\%' ESCAPE '\\' THEN 'full' ELSE (id % 3)::text || '%' END"
    result = run_backfill(db_url, BackfillSpec("marks", "mark", expr, sql=True), Settings(batch_size=70))
    assert result.status == "done" and result.progress.rows_done == 500
    with psycopg.connect(db_url) as conn:
        got = dict(conn.execute("SELECT mark, count(*) FROM marks GROUP BY 1").fetchall())
    assert got == {"full": 125, "0%": 125, "1%": 125, "2%": 125}, got


@pytest.mark.parametrize(
    "spec, message",
    [
        (BackfillSpec("tasks; DROP TABLE users", "notes", "x"), "no table"),
        (BackfillSpec("tasks", "notes = 'x'; --", "x"), "has no column"),
        (BackfillSpec("tasks", "id", "x"), "primary key"),
        (BackfillSpec("tasks", "legacy_id", "not a number"), "not a valid integer"),
        (BackfillSpec("pg_catalog.nope", "x", "x"), "no table"),
    ],
)
def test_names_come_from_the_catalog_and_values_are_checked(
    db_url: str, spec: BackfillSpec, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        run_backfill(db_url, spec)
    with psycopg.connect(db_url) as conn:  # nothing was dropped
        assert conn.execute("SELECT to_regclass('users') IS NOT NULL").fetchone()[0]


def test_interrupted_run_resumes_from_its_last_committed_batch(db_url: str) -> None:
    seed_tasks(db_url, 4_000)
    seen: list[int] = []

    def crash_after_three(progress) -> None:
        seen.append(progress.rows_done)
        if progress.batches == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_backfill(db_url, NOTES, Settings(batch_size=500), on_batch=crash_after_three)
    status, last_key, rows_done, batches = state(db_url)
    assert (status, batches) == ("interrupted", 3)
    assert rows_done == seen[-1] == 4_000 - nulls(db_url)  # the checkpoint is exactly what committed
    assert last_key is not None
    result = run_backfill(db_url, NOTES, Settings(batch_size=500))
    assert result.resumed and result.status == "done"
    assert result.progress.rows_done == 4_000 and nulls(db_url) == 0


def test_max_runtime_pauses_cleanly_and_the_next_run_carries_on(db_url: str) -> None:
    seed_tasks(db_url, 3_000)
    first = run_backfill(
        db_url, NOTES, Settings(batch_size=100, max_batch=100, pause=0.05, max_runtime=0.3)
    )
    assert first.status == "paused" and 0 < first.progress.rows_done < 3_000
    assert state(db_url)[0] == "paused"
    second = run_backfill(db_url, NOTES, Settings(batch_size=1_000))
    assert second.resumed and second.status == "done" and nulls(db_url) == 0
    assert second.progress.rows_done == 3_000


def test_rows_locked_by_others_are_skipped_then_filled(db_url: str) -> None:
    seed_tasks(db_url, 2_000)
    holder = psycopg.connect(db_url)
    holder.execute("SELECT 1 FROM tasks WHERE legacy_id <= 50 FOR UPDATE")  # an open transaction
    threading.Timer(0.5, holder.commit).start()
    started = time.monotonic()
    result = run_backfill(db_url, NOTES, Settings(batch_size=400))
    holder.close()
    assert time.monotonic() - started >= 0.45  # it waited for them, without blocking on them
    assert result.status == "done" and result.progress.passes >= 2
    assert result.progress.rows_done == 2_000 and nulls(db_url) == 0


def test_rows_written_meanwhile_are_filled_too(db_url: str) -> None:
    seed_tasks(db_url, 2_000)
    with psycopg.connect(db_url) as conn:
        user_id = conn.execute("SELECT id FROM users").fetchone()[0]
    writer = psycopg.connect(db_url, autocommit=True)

    def insert_behind(progress) -> None:
        if progress.batches <= 3:  # a key lower than anything: behind the walk
            writer.execute(
                "INSERT INTO tasks (id, user_id, title, status) VALUES "
                "(('00000000-0000-0000-0000-00000000000' || %s)::uuid, %s, 'new', 'todo')",
                (progress.batches, user_id),
            )

    result = run_backfill(db_url, NOTES, Settings(batch_size=300), on_batch=insert_behind)
    writer.close()
    assert result.progress.rows_done == 2_003 and nulls(db_url) == 0


def test_backfill_flow_reports_and_leaves_artifacts(flow_env: dict[str, str]) -> None:
    from flows.backfill import backfill

    seed_tasks(flow_env["db_url"], 1_500, null_every=2)
    state = backfill(
        table="tasks",
        column="notes",
        value="",
        batch_size=200,
        report_dir=flow_env["report_dir"],
        return_state=True,
    )
    assert state.is_completed(), state.message
    outcome = state.result()
    report = json.loads((Path(flow_env["report_dir"]) / outcome["run_id"] / "report.json").read_text())
    assert report["counts"]["rows_done"] == 750 and report["counts"]["rows_still_null"] == 0
    assert nulls(flow_env["db_url"]) == 0

    assert artifact_keys(state.state_details.flow_run_id) == {"backfill-report", "backfill-progress"}
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        [progress] = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
                key=ArtifactFilterKey(any_=["backfill-progress"]),
            )
        )
    assert float(progress.data) == 100.0  # the final state arrived before the flow ended
    assert "750 rows done" in progress.description and "batches" in progress.description
    with psycopg.connect(flow_env["db_url"]) as conn:
        row = conn.execute(
            "SELECT kind, status, stats FROM migration_runs WHERE id = %s", (outcome["run_id"],)
        ).fetchone()
    assert row[0] == "backfill" and row[1] == "done" and row[2]["rows_done"] == 750


def test_backfill_flow_bad_input_is_a_failed_run_with_one_line(flow_env: dict[str, str]) -> None:
    from flows.backfill import backfill

    state = backfill(
        table="nope", column="x", value="1", report_dir=flow_env["report_dir"], return_state=True
    )
    assert state.is_failed()
    assert state.result(raise_on_failure=False) == {
        "exit_code": 2,
        "error": "no table 'nope' in this database",
    }
