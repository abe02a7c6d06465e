"""Shared fixtures: a real PostgreSQL (the embedded one, or TEST_DATABASE_URL), a fresh database
per test cloned from a template migrated to head once, and one Prefect test harness per session.

The roles production has (tests/roles.py): `owner_db` is a database of a Neon-like owner role (a),
`nocreatedb_db` of an owner without CREATEDB (b), `app_db` an application role with DML grants
only (c). TEST_ROLE=owner runs every `db_url` test as role (a) (make test-matrix does).
Fault injection: `end_sessions` ends a running step's sessions as PostgreSQL would (tests/faults.py)."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql

_PREFECT_HOME = tempfile.mkdtemp(prefix="prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("DATABASE_URL", None)
# Whatever falls back to "the embedded server" in a test lands on the test server, never on .data/postgres.
os.environ["MIGRATION_DATA_DIR"] = str(Path(__file__).resolve().parents[1] / ".data" / "test-postgres")

from tasks import schema  # noqa: E402
from tasks.db import create_database, drop_database, embedded_server_url, normalize_url  # noqa: E402
from tests import roles  # noqa: E402

if TYPE_CHECKING:
    from tasks.source import SourceInfo
    from tasks.transform import TransformContext

ROOT = Path(__file__).resolve().parents[1]


def _server_url() -> str:
    if os.environ.get("TEST_DATABASE_URL"):
        return normalize_url(os.environ["TEST_DATABASE_URL"])
    return embedded_server_url(ROOT / ".data" / "test-postgres")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    yield _server_url()


@pytest.fixture(scope="session")
def template_db(pg_server: str) -> Iterator[str]:
    name = f"tmpl_{uuid.uuid4().hex[:10]}"
    schema.upgrade(create_database(pg_server, name))
    yield name
    drop_database(pg_server, name)


def _fresh(pg_server: str, template: str | None) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield create_database(pg_server, name, template)
    with psycopg.connect(pg_server, autocommit=True) as conn:  # the database and its branches
        names = [
            r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (name + "%",))
        ]
    for each in names:
        drop_database(pg_server, each)


@pytest.fixture
def db_url(request: pytest.FixtureRequest, pg_server: str, template_db: str) -> Iterator[str]:
    """A fresh database at head (as role (a) under TEST_ROLE=owner)."""
    if os.environ.get("TEST_ROLE") == "owner":
        yield from roles.fresh(pg_server, request.getfixturevalue("role_templates")[roles.OWNER], roles.OWNER)
        return
    yield from _fresh(pg_server, template_db)


@pytest.fixture(scope="session")
def role_templates(pg_server: str) -> Iterator[dict[str, str]]:
    """role -> a database at head whose objects that role owns (created by it), to clone."""
    made = roles.templates(pg_server)
    yield made
    for name in made.values():
        drop_database(pg_server, name)


@pytest.fixture
def owner_db(pg_server: str, role_templates: dict[str, str]) -> Iterator[str]:
    """(a) A database at head of a Neon-like owner role: CREATEDB, CREATEROLE, owner of the database,
    its schema and tables, not superuser, no REPLICATION, may not set session_replication_role."""
    yield from roles.fresh(pg_server, role_templates[roles.OWNER], roles.OWNER)


@pytest.fixture
def nocreatedb_db(pg_server: str, role_templates: dict[str, str]) -> Iterator[str]:
    """(b) The same for an owner role without CREATEDB."""
    yield from roles.fresh(pg_server, role_templates[roles.NO_CREATEDB], roles.NO_CREATEDB)


@pytest.fixture
def app_db(pg_server: str, role_templates: dict[str, str]) -> Iterator[tuple[str, str]]:
    """(c) (the application role's URL, the owner's URL) of a database where the application role
    has only DML grants."""
    for owner_url in roles.fresh(pg_server, role_templates[roles.OWNER], roles.OWNER):
        roles.grant_dml(owner_url, roles.APP)
        yield roles.as_role(owner_url, roles.APP), owner_url


@pytest.fixture
def empty_db_url(pg_server: str) -> Iterator[str]:
    """A fresh database with no schema at all."""
    yield from _fresh(pg_server, None)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[str]:
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield str(PREFECT_API_URL.value())


@pytest.fixture
def flow_env(
    prefect_harness: str, db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, str]:
    """Run flows in-process through the Prefect engine against a fresh database."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    return {"db_url": db_url, "report_dir": str(tmp_path / "runs"), "api_url": prefect_harness}


def table_checksums(url: str) -> dict[str, str]:
    """md5 of every row of the data tables, in key order: equal only if the content is equal."""
    out = {}
    with psycopg.connect(url) as conn:
        for table, key in (
            ("users", "id"),
            ("tasks", "id"),
            ("quarantine", "run_id, position"),
            ("migration_checkpoints", "run_id, chunk_no"),
        ):
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY {}), '')) FROM {} t"
                ).format(sql.SQL(key), sql.Identifier(table))
            ).fetchone()
            out[table] = f"{row[0]}:{row[1]}"
    return out


def artifact_keys(flow_run_id: object) -> set[str]:
    """Keys of the artifacts a flow run created, read back through the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key for a in found if a.key}


def started_run(db_url: str, src: Path, chunk_size: int = 100) -> tuple[SourceInfo, str, TransformContext]:
    """A Phase 1 run of src started in the database, as the flow starts one: what load() needs."""
    from tasks.mapping import FieldMapping
    from tasks.runs import canonical_ts, start_or_resume
    from tasks.source import precheck
    from tasks.transform import TransformContext

    info = precheck(src)
    with psycopg.connect(db_url, autocommit=True) as conn:
        run = start_or_resume(
            conn,
            kind="phase1",
            source_path=str(src),
            source_name="phase1",
            source_sha256=info.sha256,
            chunk_size=chunk_size,
            parameters={},
        )
    ctx = TransformContext("phase1", "u@example.com", canonical_ts(run.started_at), {}, FieldMapping.build())
    return info, run.id, ctx
