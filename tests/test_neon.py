"""The Neon client against the API v2's documented request and response shapes (respx): branch
creation with a read-write endpoint, operation polling, 423 Locked retries, restore, reset, the
connection URI, errors, and that the API key never shows."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import respx

from tasks.branching.neon import API, NeonBranches, NeonError
from tasks.errors import InputError

KEY = "neon-key-never-shown"
PROJECT = "patient-lab-123"
BASE = f"{API}/projects/{PROJECT}"
MAIN = {"id": "br-main-1", "name": "main", "default": True, "created_at": "2026-11-01T10:00:00Z"}
DEV = {
    "id": "br-dev-2",
    "name": "dev",
    "parent_id": "br-main-1",
    "default": False,
    "created_at": "2026-11-20T08:00:00Z",
}


def op(op_id: str, status: str, action: str = "create_branch") -> dict:
    return {"id": op_id, "project_id": PROJECT, "action": action, "status": status}


@pytest.fixture
def neon() -> NeonBranches:
    return NeonBranches(KEY, PROJECT, poll_interval=0.0, timeout=5.0)


@pytest.fixture
def api():
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        mock.get("/branches").respond(200, json={"branches": [MAIN, DEV]})
        yield mock


def test_create_asks_for_a_read_write_endpoint_and_waits_for_its_operations(neon, api) -> None:
    created = {
        "id": "br-new-3",
        "name": "rehearsal",
        "parent_id": "br-main-1",
        "created_at": "2026-11-24T02:00:00Z",
    }
    post = api.post("/branches").respond(
        201,
        json={
            "branch": created,
            "endpoints": [{"id": "ep-x", "type": "read_write"}],
            "operations": [op("op-1", "running"), op("op-2", "scheduling", "start_compute")],
        },
    )
    api.get("/operations/op-1").mock(
        side_effect=[
            httpx.Response(200, json={"operation": op("op-1", "running")}),
            httpx.Response(200, json={"operation": op("op-1", "finished")}),
        ]
    )
    api.get("/operations/op-2").respond(200, json={"operation": op("op-2", "finished", "start_compute")})
    branch = neon.create("rehearsal")
    assert (branch.name, branch.parent, branch.id) == ("rehearsal", "main", "br-new-3")
    body = json.loads(post.calls.last.request.content)
    assert body == {
        "branch": {"name": "rehearsal", "parent_id": "br-main-1"},
        "endpoints": [{"type": "read_write"}],
    }
    assert post.calls.last.request.headers["Authorization"] == f"Bearer {KEY}"
    assert api.routes[2].call_count == 2  # op-1 polled until finished


@pytest.mark.parametrize(
    ("at", "field"), [("2026-11-24T01:00:00Z", "parent_timestamp"), ("0/3FA01B0", "parent_lsn")]
)
def test_create_at_a_point_in_time(neon, api, at: str, field: str) -> None:
    post = api.post("/branches").respond(
        201, json={"branch": {"id": "br-p", "name": "pitr"}, "operations": []}
    )
    neon.create("pitr", "dev", at=at)
    body = json.loads(post.calls.last.request.content)["branch"]
    assert body["parent_id"] == "br-dev-2" and body[field] == at


def test_a_locked_project_is_retried_with_backoff(neon, api) -> None:
    route = api.delete("/branches/br-dev-2").mock(
        side_effect=[
            httpx.Response(423, json={"code": "", "message": "project already has running operations"}),
            httpx.Response(423, json={"message": "project already has running operations"}),
            httpx.Response(
                200, json={"branch": DEV, "operations": [op("op-9", "finished", "delete_timeline")]}
            ),
        ]
    )
    neon.delete("dev")
    assert route.call_count == 3


def test_list_names_parents_and_main_is_the_default_branch(neon, api) -> None:
    branches = {b.name: b for b in neon.list()}
    assert branches["dev"].parent == "main" and branches["main"].parent is None
    assert neon.main == "main"
    with pytest.raises(InputError, match="main branch"):
        neon.delete("main")


def test_reset_restores_from_the_parent_head(neon, api) -> None:
    post = api.post("/branches/br-dev-2/restore").respond(
        200, json={"branch": DEV, "operations": [op("o", "finished")]}
    )
    assert neon.reset("dev").name == "dev"
    assert json.loads(post.calls.last.request.content) == {"source_branch_id": "br-main-1"}


def test_restore_from_a_branch_and_to_a_point_in_time(neon, api) -> None:
    post = api.post("/branches/br-main-1/restore").respond(200, json={"branch": MAIN, "operations": []})
    neon.restore("main", source_branch="dev", preserve_under_name="main-before")
    assert json.loads(post.calls.last.request.content) == {
        "source_branch_id": "br-dev-2",
        "preserve_under_name": "main-before",
    }
    neon.restore("main", timestamp="2026-11-24T01:00:00Z", preserve_under_name="main-before-2")
    assert json.loads(post.calls.last.request.content) == {
        "source_branch_id": "br-main-1",
        "source_timestamp": "2026-11-24T01:00:00Z",
        "preserve_under_name": "main-before-2",
    }
    with pytest.raises(InputError, match="preserve_under_name"):
        neon.restore("main", timestamp="2026-11-24T01:00:00Z")


def test_connection_uri_of_a_branch(neon, api) -> None:
    route = api.get("/connection_uri").respond(
        200, json={"uri": "postgresql://neondb_owner:pw@ep-x.neon.tech/neondb?sslmode=require"}
    )
    assert neon.url("dev").startswith("postgresql://")
    assert dict(route.calls.last.request.url.params) == {
        "branch_id": "br-dev-2",
        "database_name": "neondb",
        "role_name": "neondb_owner",
    }


def test_errors_are_one_line_and_never_show_the_key(neon, api, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    api.post("/branches").respond(401, json={"message": "authorization failed"})
    with pytest.raises(NeonError) as unauthorized:
        neon.create("x")
    api.post("/branches/br-dev-2/restore").respond(
        400, json={"message": "timestamp outside history retention"}
    )
    with pytest.raises(NeonError, match="history retention") as bad:
        neon.restore("dev", source_branch="main")
    with pytest.raises(InputError, match="no Neon branch 'nope'"):
        neon.delete("nope")
    texts = [str(unauthorized.value), str(bad.value), caplog.text]
    assert not [t for t in texts if KEY in t]


def test_cancelled_and_stuck_operations_fail(api) -> None:
    neon = NeonBranches(KEY, PROJECT, poll_interval=0.0, timeout=0.05)
    api.post("/branches").respond(
        201, json={"branch": {"id": "b", "name": "x"}, "operations": [op("op-c", "running")]}
    )
    api.get("/operations/op-c").respond(200, json={"operation": op("op-c", "cancelled")})
    with pytest.raises(NeonError, match="cancelled"):
        neon.create("x")
    api.get("/operations/op-c").respond(
        200, json={"operation": {**op("op-c", "failed"), "error": "compute failed to start"}}
    )
    with pytest.raises(NeonError, match="still failed after"):
        neon.create("x")


def test_missing_credentials_say_what_is_missing(monkeypatch) -> None:
    monkeypatch.delenv("NEON_API_KEY", raising=False)
    with pytest.raises(InputError, match="NEON_API_KEY and NEON_PROJECT_ID"):
        NeonBranches("", PROJECT)
