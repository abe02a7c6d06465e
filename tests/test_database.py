"""On real PostgreSQL: the Alembic revisions, and the row line that Python and SQL must agree on."""

from __future__ import annotations

import subprocess
import sys

import psycopg

from tasks.checksum import line_checksums, row_checksum_sql, row_line_sql
from tasks.load import TASK_COLUMNS
from tasks.mapping import FieldMapping, split_records
from tasks.shapes import Batch, Group
from tasks.source import Chunk
from tasks.transform import FileState, TransformContext, render, transform_chunk
from tests.conftest import ROOT


def test_offline_sql_renders_without_a_database() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head", "--sql"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "CREATE TABLE tasks" in out.stdout and "uq_tasks_legacy" in out.stdout


def test_python_and_sql_build_the_same_line(db_url: str) -> None:
    records = [
        {"id": 1, "title": 'quotes " and , commas\nand newlines', "description": "", "completed": True},
        {
            "id": 2,
            "title": "ünïcödé ✈ 日本語",
            "description": None,
            "completed": False,
            "created_at": "0999-01-02T03:04:05.123456Z",
        },
        {
            "id": 3,
            "title": "extras",
            "completed": False,
            "meta": {"a": [1, 2.50, None, True], "nul": "x\u0000y"},
            "created_at": "2025-01-01T00:00:00-05:00",
        },
    ]
    records.append(
        {"id": "b7c1-e", "title": "a string id", "completed": False, "tags": ["a b", '"q"', "x,y", "NULL"]}
    )
    records.append({"text": "no id, and a priority", "priority": "High", "tags": []})
    ctx = TransformContext("phase1", "u@example.com", "2026-01-01T00:00:00.000000Z", {}, FieldMapping.build())
    chunk = transform_chunk(
        Chunk(0, 0, [Batch(Group("$", ""), 0, records)]),
        split_records(records, 0, ctx.mapping),
        ctx,
        FileState(),
    )
    assert chunk.quarantine == []
    user_hex = "12" * 16
    rendered = render(
        chunk.rows, "phase1", {"u@example.com": user_hex}, "00000000-0000-0000-0000-000000000001"
    )
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'Pacific/Auckland'")  # the server's zone must not matter
        conn.execute("INSERT INTO users (id, email) VALUES (%s, 'u@example.com')", (user_hex,))
        conn.execute(
            "INSERT INTO migration_runs (id, kind, status) VALUES ('00000000-0000-0000-0000-000000000001', 'phase1', 'running')"
        )
        with conn.cursor().copy(f"COPY tasks ({TASK_COLUMNS}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(rendered.csv)
        stored = conn.execute(
            f"SELECT {row_line_sql('t')}, {row_checksum_sql('t')} FROM tasks t ORDER BY t.legacy_id, t.legacy_key"
        ).fetchall()
        order = [r[0] for r in conn.execute("SELECT legacy_key FROM tasks ORDER BY legacy_id, legacy_key")]
    # each COPY line is the canonical line, then its checksum and the run
    pieces = rendered.csv.decode().split(",00000000-0000-0000-0000-000000000001\n")[:-1]
    lines = [piece.rsplit(",", 1)[0] for piece in pieces]
    expected = [lines[chunk.rows.legacy_keys.index(key)] for key in order]
    assert [s[0] for s in stored] == expected
    assert (
        [s[1] for s in stored] == line_checksums([line.encode() for line in expected]) == rendered.checksums
    )


def test_a_retried_load_skips_what_the_failed_attempt_committed(db_url: str, tmp_path) -> None:
    import json

    from tasks.load import load
    from tests.conftest import started_run

    src = tmp_path / "t.json"
    src.write_text(
        json.dumps({"tasks": [{"id": i, "title": f"t{i}", "completed": False} for i in range(1, 251)]})
    )
    info, run_id, ctx = started_run(db_url, src)
    first = load(db_url, info, ctx, run_id=run_id, chunk_size=100)
    again = load(db_url, info, ctx, run_id=run_id, chunk_size=100)  # a task retry
    assert (first.chunks_written, first.inserted) == (3, 250)
    assert (again.chunks_written, again.chunks_skipped, again.inserted) == (0, 3, 0)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 250
