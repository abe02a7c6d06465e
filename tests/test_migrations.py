"""The Alembic revisions on real PostgreSQL: pytest-alembic's checks, the squawk lint gate, and one
cycle every revision goes through on a populated table (upgrade, downgrade, upgrade)."""

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
from tests.conftest import ROOT

REVISIONS = [s.revision for s in reversed(list(schema.scripts().walk_revisions()))]


@pytest.fixture
def alembic_config() -> dict[str, str]:
    return {"file": str(ROOT / "alembic.ini"), "script_location": str(ROOT / "migrations")}


@pytest.fixture
def alembic_engine(empty_db_url: str):
    engine = create_engine(sqlalchemy_url(empty_db_url), poolclass=pool.NullPool)
    yield engine
    engine.dispose()


def test_squawk_finds_nothing_in_the_upgrade_sql(tmp_path: Path) -> None:
    sql = tmp_path / "upgrade.sql"
    sql.write_text(schema.offline_sql(None, "head"))
    squawk = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "squawk"
    exe = str(squawk) if squawk.exists() else "squawk"
    out = subprocess.run(
        [exe, "--config", str(ROOT / ".squawk.toml"), "--reporter", "gcc", str(sql)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_squawk_exclusion_has_a_written_reason() -> None:
    text = (ROOT / ".squawk.toml").read_text()
    block = text[text.index("excluded_rules") :]
    entries = re.findall(r'^\s*"([a-z-]+)",?\s*(#.*)?$', block, flags=re.M)
    assert entries
    assert [rule for rule, reason in entries if len(reason.strip("# ")) < 40] == []


def test_revisions_declare_phase_backfills_and_data_loss() -> None:
    for revision in REVISIONS:
        step = schema.step(revision)
        assert step.phase in {"expand", "contract"}, revision
        assert step.phase == "contract" or not step.backfills, revision
        if step.phase == "contract":  # a contract step's downgrade only relaxes: nothing to lose
            assert step.downgrade_loses is None and step.backfills, revision


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
    """The rows' content in the columns every revision keeps (what a non-lossy downgrade must keep)."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT md5(string_agg(concat_ws('|', id, user_id, title, description, completed), ',' ORDER BY id)) "
            "FROM tasks"
        ).fetchone()[0]


@pytest.mark.parametrize("revision", REVISIONS[2:])
def test_each_revision_upgrades_downgrades_and_upgrades_again_on_a_populated_table(
    empty_db_url: str, revision: str
) -> None:
    """pgroll's shared cycle: every revision, on live-looking data, up → down → up."""
    step = schema.step(revision)
    schema.upgrade(empty_db_url, step.down_revision)
    seed_tasks(empty_db_url, 2_000, null_every=2)
    before_cols, before = columns(empty_db_url), content(empty_db_url)
    schema.upgrade(empty_db_url, revision)  # backfills run first for a contract step
    assert schema.current_revision(empty_db_url) == revision
    assert content(empty_db_url) == before
    schema.move(empty_db_url, step.down_revision, "down")
    assert schema.current_revision(empty_db_url) == step.down_revision
    assert columns(empty_db_url) == before_cols and content(empty_db_url) == before
    schema.upgrade(empty_db_url, revision)
    assert schema.current_revision(empty_db_url) == revision and content(empty_db_url) == before


def test_contract_refuses_while_nulls_remain_and_names_the_backfill(empty_db_url: str) -> None:
    schema.upgrade(empty_db_url, "0003")
    seed_tasks(empty_db_url, 10)
    with psycopg.connect(empty_db_url) as conn:
        conn.execute("UPDATE tasks SET tags = NULL")
    with pytest.raises(
        Exception, match=r"10 rows of tasks.tags are still NULL: run `python -m flows.backfill tasks.tags`"
    ):
        schema.move(empty_db_url, "0004", "up")
    assert schema.current_revision(empty_db_url) == "0003"


def test_a_lock_held_by_the_application_times_out_is_retried_and_then_fails_cleanly(
    empty_db_url: str,
) -> None:
    schema.upgrade(empty_db_url, "0002")
    seed_tasks(empty_db_url, 10)
    holder = psycopg.connect(empty_db_url)
    holder.execute("LOCK TABLE tasks IN ACCESS SHARE MODE")  # a long read: ALTER TABLE must wait
    try:
        with pytest.raises(Exception) as failure:
            schema.move(empty_db_url, "0003", "up", lock_timeout="100ms")
        assert "lock timeout" in str(failure.value)
    finally:
        holder.close()
    assert schema.current_revision(empty_db_url) == "0002"
    assert "tags" not in columns(empty_db_url)
    schema.move(empty_db_url, "0003", "up", lock_timeout="100ms")  # free now: it goes through
    assert "tags" in columns(empty_db_url)
