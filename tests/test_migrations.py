"""The Alembic revisions on real PostgreSQL: pytest-alembic's checks, the squawk lint gate, what the
steps derive from their operations, and one cycle every revision goes through on a populated table
(upgrade, downgrade, upgrade)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import psycopg
import pytest
from pytest_alembic.tests import (  # noqa: F401  (collected as tests here)
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from sqlalchemy import create_engine, pool

from bench.workload import seed_tasks
from tasks import schema
from tasks.db import sqlalchemy_url
from tasks.errors import LockTimedOut, StepRefused
from tests.conftest import ROOT

REVISIONS = schema.revisions()

# Rules whose statements are what a complete (contract) step is for: they run only once no instance
# of the previous version is left, and the start SQL is linted without them (below).
CONTRACT_RULES = {
    "ban-drop-column": "complete drops the column the previous version used, once no instance of it runs",
    "renaming-column": "complete renames the column the new version's views already showed by its new name",
    "ban-drop-schema": "complete drops the previous version's schema of views; rollback drops the new one's",
    "ban-drop-function": "complete drops the sync trigger's function that served the previous version",
}


@pytest.fixture
def alembic_config() -> dict[str, str]:
    return {"file": str(ROOT / "alembic.ini"), "script_location": str(ROOT / "migrations")}


@pytest.fixture
def alembic_engine(empty_db_url: str):
    engine = create_engine(sqlalchemy_url(empty_db_url), poolclass=pool.NullPool)
    yield engine
    engine.dispose()


def squawk(sql: str, tmp_path: Path, exclude: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    path = tmp_path / f"lint-{len(list(tmp_path.iterdir()))}.sql"
    path.write_text(sql)
    exe = ROOT / ".venv" / "bin" / "squawk"
    configured = re.findall(r'^\s*"([a-z-]+)",', (ROOT / ".squawk.toml").read_text(), flags=re.M)
    args = [f"--exclude={','.join([*configured, *exclude])}"] if exclude else []
    return subprocess.run(
        [str(exe) if exe.exists() else "squawk", "--config", str(ROOT / ".squawk.toml"), *args,
         "--reporter", "gcc", str(path)],
        capture_output=True,
        text=True,
    )  # fmt: skip


def test_squawk_finds_nothing_in_the_upgrade_sql(tmp_path: Path) -> None:
    out = squawk(schema.offline_sql(None, "head"), tmp_path, tuple(CONTRACT_RULES))
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("revision", [r for r in REVISIONS if schema.step(r).online])
def test_squawk_finds_nothing_in_a_start_without_the_contract_exclusions(
    tmp_path: Path, revision: str
) -> None:
    out = squawk(schema.phase_sql(schema.step(revision), "start"), tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_contract_rules_are_needed_and_catch_what_they_exclude(tmp_path: Path) -> None:
    complete = "".join(schema.phase_sql(schema.step(r), "complete") for r in ("0009", "0010"))
    out = squawk(complete, tmp_path)
    assert {rule for rule in CONTRACT_RULES if rule in out.stdout} == set(CONTRACT_RULES)


def test_every_squawk_exclusion_has_a_written_reason() -> None:
    text = (ROOT / ".squawk.toml").read_text()
    block = text[text.index("excluded_rules") :]
    entries = re.findall(r'^\s*"([a-z-]+)",?\s*(#.*)?$', block, flags=re.M)
    assert entries
    assert [rule for rule, reason in entries if len(reason.strip("# ")) < 40] == []
    assert [rule for rule, reason in CONTRACT_RULES.items() if len(reason) < 40] == []


def test_steps_are_what_their_operations_declare() -> None:
    assert [b.name for b in schema.step("0003").backfills] == ["tasks.tags"]
    assert [b.name for b in schema.step("0009").backfills] == ["tasks.status"]
    assert {r for r in REVISIONS if schema.step(r).breaking} == {"0009", "0010"}
    assert "drops tasks.priority" in (schema.step("0005").downgrade_loses or "")
    assert schema.step("0010").downgrade_loses is None  # a rename gives everything back
    assert schema.step("0013").downgrade_loses is None  # the seen ids go back to migration_seen
    assert schema.step("0014").downgrade_loses is None  # a shortcut: the files are hashed again
    assert set(schema.declared_backfills()) == {
        "tasks.tags", "tasks.priority", "tasks.status", "migration_checkpoints.updated", "migration_checkpoints.conflicts"
    }  # fmt: skip


def columns(url: str) -> dict[str, tuple[str, bool]]:
    with psycopg.connect(url) as conn:
        return {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
                "WHERE attrelid = 'tasks'::regclass AND attnum > 0 AND NOT attisdropped"
            ).fetchall()
        }


def content(url: str) -> str:
    """The rows' content in the columns every revision keeps, under whichever name it has there
    (what a downgrade must give back)."""
    names = columns(url)
    notes = "notes" if "notes" in names else "description"
    done = "status = 'done'" if "status" in names and "completed" not in names else "completed"
    with psycopg.connect(url) as conn:
        return conn.execute(
            f"SELECT md5(string_agg(concat_ws('|', id, user_id, title, {notes}, {done}), ',' ORDER BY id)) FROM tasks"
        ).fetchone()[0]


def views(url: str) -> dict[str, object]:
    """Each version schema: its comment and its views' columns (by name: a downgrade that adds a
    column back adds it last)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT n.nspname, obj_description(n.oid, 'pg_namespace'), c.table_name, "
            "array_agg(c.column_name::text ORDER BY c.column_name) FROM pg_namespace n "
            "LEFT JOIN information_schema.columns c ON c.table_schema = n.nspname "
            "WHERE n.nspname LIKE 'public\\_%' GROUP BY 1, 2, 3"
        ).fetchall()
    return {f"{s}.{t}": (state, cols) for s, state, t, cols in rows}


@pytest.mark.parametrize("revision", REVISIONS[2:])
def test_each_revision_upgrades_downgrades_and_upgrades_again_on_a_populated_table(
    empty_db_url: str, revision: str
) -> None:
    """Every revision, on live-looking data: start, backfill, complete -> downgrade -> again."""
    step = schema.step(revision)
    schema.upgrade(empty_db_url, step.down_revision)
    seed_tasks(empty_db_url, 2_000, null_every=2)
    before_cols, before, before_views = columns(empty_db_url), content(empty_db_url), views(empty_db_url)
    schema.upgrade(empty_db_url, revision, complete_breaking=True)
    assert schema.current_revision(empty_db_url) == revision and schema.pending(empty_db_url) is None
    assert content(empty_db_url) == before
    assert schema.live_versions(empty_db_url) == {revision: "complete"}
    schema.downgrade_to(empty_db_url, step.down_revision)
    assert schema.current_revision(empty_db_url) == step.down_revision
    assert columns(empty_db_url) == before_cols and content(empty_db_url) == before
    # the previous version's schema is back as its complete left it (none after a plain revision)
    assert views(empty_db_url) == before_views
    schema.upgrade(empty_db_url, revision, complete_breaking=True)
    assert schema.current_revision(empty_db_url) == revision and content(empty_db_url) == before


def test_a_breaking_revision_is_not_completed_without_being_asked(empty_db_url: str) -> None:
    schema.upgrade(empty_db_url, "0008")
    with pytest.raises(StepRefused, match="0009 breaks the previous application version"):
        schema.upgrade(empty_db_url, "0009")
    assert schema.current_revision(empty_db_url) == "0008" and schema.live_versions(empty_db_url) == {
        "0008": "complete"
    }


def test_complete_refuses_while_nulls_remain_and_names_the_backfill(empty_db_url: str) -> None:
    schema.upgrade(empty_db_url, "0003")
    seed_tasks(empty_db_url, 10)
    schema.start(empty_db_url, schema.step("0004"))
    with psycopg.connect(empty_db_url) as conn:
        conn.execute("UPDATE tasks SET tags = NULL")
    with pytest.raises(
        StepRefused, match=r"10 rows of tasks.tags are still NULL: run `python -m flows.backfill tasks.tags`"
    ):
        schema.complete(empty_db_url, schema.step("0004"))
    assert schema.pending(empty_db_url) == "0004" and not columns(empty_db_url)["tags"][1]


def test_another_revision_does_not_start_while_one_is_rolling_out(empty_db_url: str) -> None:
    schema.upgrade(empty_db_url, "0008")
    schema.start(empty_db_url, schema.step("0009"))
    with pytest.raises(StepRefused, match="0009 is still rolling out"):
        schema.start(empty_db_url, schema.step("0010"))


def test_a_lock_held_by_the_application_times_out_cleanly_and_goes_through_once_free(
    empty_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lock timeouts are retried (tasks/retry.py) for the retry window, here 2 s, then the step
    fails typed, having undone what it did."""
    monkeypatch.setenv("MIGRATION_RETRY_WINDOW", "2")
    schema.upgrade(empty_db_url, "0002")
    seed_tasks(empty_db_url, 10)
    holder = psycopg.connect(empty_db_url)
    holder.execute("LOCK TABLE tasks IN ACCESS SHARE MODE")  # a long read: ALTER TABLE must wait
    try:
        with pytest.raises(LockTimedOut, match="start 0003: lock timeout"):
            schema.start(empty_db_url, schema.step("0003"), lock_timeout="100ms")
    finally:
        holder.close()
    assert schema.current_revision(empty_db_url) == "0002" and schema.live_versions(empty_db_url) == {}
    assert "tags" not in columns(empty_db_url)
    schema.start(empty_db_url, schema.step("0003"), lock_timeout="100ms")  # free now: it goes through
    assert "tags" in columns(empty_db_url) and schema.pending(empty_db_url) == "0003"


def test_0013_down_gives_a_runs_seen_ids_back_as_rows_and_up_reads_them_where_they_are(db_url: str) -> None:
    """An interrupted re-sync keeps what it saw across a downgrade of 0013 and an upgrade again:
    the chunks' arrays become rows of migration_seen on the way down, and stay rows on the way up
    (the resumed run reads both: tasks/resync.py)."""
    import uuid

    from tasks import resync

    run, ids = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(3)]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO migration_runs (id, kind, status) VALUES (%s, 'phase1', 'interrupted')", (run,))
        for no, seen in enumerate([ids[:2], ids[1:], None]):
            conn.execute(
                "INSERT INTO migration_checkpoints (run_id, chunk_no, first_position, last_position, records, "
                "migrated, already_present, duplicates, quarantined, checksum, seen) "
                "VALUES (%s, %s, 0, 0, 0, 0, 0, 0, 0, 0, %s::uuid[])",
                (run, no, seen),
            )
    schema.downgrade_to(db_url, "0012")
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT task_id::text FROM migration_seen WHERE run_id = %s ORDER BY 1", (run,)).fetchall()
        assert [r[0] for r in rows] == sorted(ids)
    schema.upgrade(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        user = conn.execute("INSERT INTO users (id, email) VALUES (gen_random_uuid(), 'a@example.com') RETURNING id").fetchone()[0]
        for i, tid in enumerate([*ids, str(uuid.uuid4())]):  # three seen before the downgrade, one not
            conn.execute(
                "INSERT INTO tasks (id, user_id, title, legacy_source, legacy_key) VALUES (%s, %s, 't', 'phase1:a', %s)",
                (tid, user, str(i)),
            )
        assert resync.disappeared(conn, run, ["phase1:a"]) == {"phase1:a": 1}
        resync.forget_seen(conn, run)
        assert resync.disappeared(conn, run, ["phase1:a"]) == {"phase1:a": 4}
