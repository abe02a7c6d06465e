"""The Neon client against the test double, every call checked at both ends against Neon's
definition: the client's side by its own httpx hooks, the double's by the double (the fixture fails
the test on any mismatch). And what the double does with the data: a branch is a copy, its URI
points at it, restore keeps the previous state as Neon documents, a reset reapplies the expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from bench.workload import seed_tasks
from flows.rollback import fingerprints
from tasks.branching.base import expiry
from tasks.branching.neon import NeonBranches
from tasks.errors import InputError
from tests import neon_double
from tests.neon_double import NeonProject
from tests.neon_openapi import contract

neon_project = neon_double.neon_project  # the fixture


def client(project: NeonProject) -> tuple[NeonBranches, list[str]]:
    neon = NeonBranches.from_environment()
    return neon, contract().watch(neon.http)


def database_of(url: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT current_database()").fetchone()[0]


def test_the_client_and_the_double_agree_with_the_definition(neon_project: NeonProject) -> None:
    double, main_url = neon_project.double, neon_project.main_url
    double.polls_to_finish = 2  # each operation is seen running before it is finished
    seed_tasks(main_url, 200)
    neon, problems = client(neon_project)
    try:
        dev = neon.create("dev", expires_at=expiry("7d"))
        assert dev.parent == "main" and dev.expires_at and dev.expires_at > datetime.now(UTC) + timedelta(days=6)
        polls = [c for c in double.calls if "/operations/" in c]
        assert len(polls) == 4  # two operations, each read twice
        dev_url = neon.url("dev")
        assert dev_url != main_url and "/neondb?" in dev_url  # same database name, another endpoint
        assert database_of(dev_url) != database_of(main_url)
        assert fingerprints(dev_url) == fingerprints(main_url)  # a copy of its parent

        pooled = neon.connection_uri("dev", pooled=True)
        assert "-pooler." in pooled and pooled.replace("-pooler.", ".") == dev_url

        with psycopg.connect(dev_url) as conn:
            conn.execute("UPDATE tasks SET title = 'changed on dev'")
        before = fingerprints(main_url)
        neon.restore("main", source_branch="dev", preserve_under_name="main-before")
        assert fingerprints(main_url) == fingerprints(dev_url)  # main's URI is unchanged, its content is dev's
        branches = {b.name: b for b in neon.list()}
        assert fingerprints(neon.url("main-before")) == before
        # Neon: the preserved state becomes main's parent and takes its children (dev)
        assert branches["main"].parent == "main-before" and branches["dev"].parent == "main-before"
        assert neon.main == "main"
        with pytest.raises(InputError, match="child branches"):
            neon.delete("main-before")

        stamp = double.branch(neon_project.id, "dev").expires_at
        neon.reset("dev")  # from its parent, now main-before
        assert fingerprints(dev_url) == before
        assert double.branch(neon_project.id, "dev").expires_at >= stamp  # time-to-live runs again
        neon.delete("dev")
        assert "dev" not in {b.name for b in neon.list()}
    finally:
        double.polls_to_finish = 1
    assert not problems, problems
    used = {c.split(" ")[0] + " " + c.split("/")[-1] for c in double.calls}
    assert {"GET branches", "POST branches", "POST restore", "GET connection_uri"} <= used


def test_the_double_refuses_and_records_what_the_definition_forbids(neon_project: NeonProject) -> None:
    double = neon_project.double
    base = f"{double.base_url}/projects/{neon_project.id}"
    headers = {"Authorization": f"Bearer {double.api_key}"}
    bad = httpx.post(f"{base}/branches", headers=headers, json={"branch": {"parent_timestamp": "yesterday"}})
    assert bad.status_code == 400 and "parent_timestamp" in bad.json()["message"]
    assert double.violations and "parent_timestamp" in double.violations[0]
    double.violations.clear()
    assert httpx.get(f"{base}/branches", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert not double.violations  # a 401 with a GeneralError body is as defined
