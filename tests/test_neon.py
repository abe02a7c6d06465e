"""The Neon client's corner cases (respx): operation polling, 423 Locked and what is (not) retried,
pagination, restore and reset rules, point-in-time arguments, errors, and that the API key never
shows. Every response fed to the client is checked against Neon's published OpenAPI definition, and
every request the client sends too (tests/neon_openapi.py): a fixture cannot drift from Neon."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from tasks.branching.neon import API, NeonBranches, NeonError
from tasks.errors import InputError
from tests.neon_openapi import Call, Contract, contract

KEY = "neon-key-never-shown"
PROJECT = "patient-lab-123"
BASE = f"{API}/projects/{PROJECT}"


def branch(branch_id: str, name: str, parent_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """A branch as Neon describes one: every field its definition requires."""
    out = {
        "id": branch_id,
        "project_id": PROJECT,
        "name": name,
        "current_state": "ready",
        "state_changed_at": "2026-11-01T10:00:00Z",
        "creation_source": "console",
        "created_at": "2026-11-01T10:00:00Z",
        "updated_at": "2026-11-01T10:00:00Z",
        "default": parent_id is None,
        "protected": False,
        "cpu_used_sec": 0,
        "active_time_seconds": 0,
        "compute_time_seconds": 0,
        "written_data_bytes": 0,
        "data_transfer_bytes": 0,
        **extra,
    }
    if parent_id:
        out["parent_id"] = parent_id
    return out


def op(status: str, action: str = "create_timeline", op_id: str | None = None) -> dict[str, Any]:
    return {
        "id": op_id or str(uuid.uuid4()),
        "project_id": PROJECT,
        "action": action,
        "status": status,
        "failures_count": 0,
        "created_at": "2026-11-24T02:00:00Z",
        "updated_at": "2026-11-24T02:00:00Z",
        "total_duration_ms": 0,
    }


MAIN = branch("br-main-1", "main")
DEV = branch("br-dev-2", "dev", "br-main-1", created_at="2026-11-20T08:00:00Z")


@pytest.fixture(scope="module")
def neon_api() -> Contract:
    return contract()


@pytest.fixture
def neon(neon_api: Contract) -> Iterator[NeonBranches]:
    client = NeonBranches(KEY, PROJECT, poll_interval=0.0, timeout=5.0)
    problems = neon_api.watch(client.http)
    yield client
    assert not problems, problems


@pytest.fixture
def api(neon_api: Contract):
    """respx on the API; `answer(method, path, status, body)` builds a response checked against the definition."""
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        mock.get("/branches").respond(200, json=listing(neon_api, [MAIN, DEV]))
        yield mock


def listing(neon_api: Contract, branches: list[dict], next_cursor: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"branches": branches, "annotations": {}}
    if next_cursor:
        body["pagination"] = {"next": next_cursor}
    return neon_api.fixture("GET", f"/projects/{PROJECT}/branches", 200, body)


def answer(neon_api: Contract, method: str, path: str, status: int, body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(status, json=neon_api.fixture(method, f"/projects/{PROJECT}{path}", status, body))


def error(neon_api: Contract, method: str, path: str, status: int, message: str) -> httpx.Response:
    return answer(neon_api, method, path, status, {"code": "", "message": message})


def created(neon_api: Contract, made: dict[str, Any], operations: list[dict]) -> httpx.Response:
    return answer(
        neon_api,
        "POST",
        "/branches",
        201,
        {"branch": made, "endpoints": [], "operations": operations, "roles": [], "databases": []},
    )


def test_create_asks_for_a_read_write_endpoint_and_waits_for_its_operations(neon, api, neon_api) -> None:
    first, second = op("running"), op("scheduling", "start_compute")
    post = api.post("/branches").mock(
        return_value=created(neon_api, branch("br-new-3", "rehearsal", "br-main-1"), [first, second])
    )
    polled = api.get(f"/operations/{first['id']}").mock(
        side_effect=[
            answer(neon_api, "GET", f"/operations/{first['id']}", 200, {"operation": op("running", op_id=first["id"])}),
            answer(neon_api, "GET", f"/operations/{first['id']}", 200, {"operation": op("finished", op_id=first["id"])}),
        ]
    )
    api.get(f"/operations/{second['id']}").mock(
        return_value=answer(
            neon_api, "GET", f"/operations/{second['id']}", 200, {"operation": op("finished", op_id=second["id"])}
        )
    )
    made = neon.create("rehearsal", expires_at=datetime(2026, 12, 1, 2, 0, 0, 123456, tzinfo=UTC))
    assert (made.name, made.parent, made.id) == ("rehearsal", "main", "br-new-3")
    body = json.loads(post.calls.last.request.content)
    assert body == {
        "branch": {"name": "rehearsal", "parent_id": "br-main-1", "expires_at": "2026-12-01T02:00:00Z"},
        "endpoints": [{"type": "read_write"}],
    }
    assert post.calls.last.request.headers["Authorization"] == f"Bearer {KEY}"
    assert polled.call_count == 2  # polled until finished


@pytest.mark.parametrize(
    ("at", "field", "sent"),
    [
        ("2026-11-24T01:00:00Z", "parent_timestamp", "2026-11-24T01:00:00Z"),
        ("2026-11-24T02:00:00+01:00", "parent_timestamp", "2026-11-24T01:00:00Z"),
        ("0/3FA01B0", "parent_lsn", "0/3FA01B0"),
    ],
)
def test_create_at_a_point_in_time(neon, api, neon_api, at: str, field: str, sent: str) -> None:
    post = api.post("/branches").mock(return_value=created(neon_api, branch("br-p", "pitr", "br-dev-2"), []))
    neon.create("pitr", "dev", at=at)
    body = json.loads(post.calls.last.request.content)["branch"]
    assert body["parent_id"] == "br-dev-2" and body[field] == sent


@pytest.mark.parametrize(("at", "problem"), [("2026-11-24T01:00:00", "no time zone"), ("yesterday", "not an ISO")])
def test_a_point_in_time_without_zone_or_shape_is_refused_before_any_call(neon, api, at: str, problem: str) -> None:
    post = api.post("/branches")
    with pytest.raises(InputError, match=problem):
        neon.create("pitr", at=at)
    assert not post.called


def test_a_locked_project_is_retried_with_backoff(neon, api, neon_api) -> None:
    path = "/branches/br-dev-2"
    route = api.delete(path).mock(
        side_effect=[
            error(neon_api, "DELETE", path, 423, "project already has running operations"),
            error(neon_api, "DELETE", path, 423, "project already has running operations"),
            answer(neon_api, "DELETE", path, 200, {"branch": DEV, "operations": [op("finished", "delete_timeline")]}),
        ]
    )
    neon.delete("dev")
    assert route.call_count == 3


def test_only_what_is_safe_to_repeat_is_retried(neon, api, neon_api) -> None:
    """The definition: GETs may be retried; a POST that got a 500 or no answer may have been done."""
    listed = httpx.Response(200, json=listing(neon_api, [MAIN, DEV]))
    route = api.get("/branches").mock(side_effect=[error(neon_api, "GET", "/branches", 500, "internal"), listed])
    assert neon.main == "main" and route.call_count == 2
    route.mock(side_effect=None, return_value=listed)
    post = api.post("/branches").mock(return_value=error(neon_api, "POST", "/branches", 500, "internal"))
    with pytest.raises(NeonError, match="500"):
        neon.create("x")
    assert post.call_count == 1
    post.mock(side_effect=httpx.ReadTimeout("no answer"))
    with pytest.raises(NeonError, match="may have been done"):
        neon.create("y")
    assert post.call_count == 2
    post.mock(side_effect=[httpx.ConnectError("refused"), created(neon_api, branch("br-z", "z", "br-main-1"), [])])
    assert neon.create("z").name == "z"  # never sent: safe to send again


def test_branches_are_read_page_by_page(neon_api) -> None:
    neon = NeonBranches(KEY, PROJECT, poll_interval=0.0, page_size=2)
    problems = neon_api.watch(neon.http)
    staging = branch("br-stg-3", "staging", "br-main-1")
    with respx.mock(base_url=BASE) as api:
        pages = api.get("/branches").mock(
            side_effect=[
                httpx.Response(200, json=listing(neon_api, [MAIN, DEV], next_cursor="c2")),
                httpx.Response(200, json=listing(neon_api, [staging])),
            ]
        )
        assert [b.name for b in neon.list()] == ["main", "dev", "staging"]
    assert pages.calls[1].request.url.params["cursor"] == "c2" and not problems


def test_list_names_parents_and_main_is_the_default_branch(neon, api) -> None:
    branches = {b.name: b for b in neon.list()}
    assert branches["dev"].parent == "main" and branches["main"].parent is None
    assert neon.main == "main"
    with pytest.raises(InputError, match="main branch"):
        neon.delete("main")
    with pytest.raises(InputError, match="already exists"):
        neon.create("dev")


def test_a_parent_is_not_deleted_and_a_reset_with_children_preserves(neon, api, neon_api) -> None:
    child = branch("br-feat-4", "feature", "br-dev-2")
    api.get("/branches").respond(200, json=listing(neon_api, [MAIN, DEV, child]))
    with pytest.raises(InputError, match=r"child branches \(feature\)"):
        neon.delete("dev")
    post = api.post("/branches/br-dev-2/restore").mock(
        return_value=answer(neon_api, "POST", "/branches/br-dev-2/restore", 200, {"branch": DEV, "operations": []})
    )
    neon.reset("dev")
    sent = json.loads(post.calls.last.request.content)
    assert sent["source_branch_id"] == "br-main-1" and sent["preserve_under_name"].startswith("dev-before-reset-")
    assert "kept as branch dev-before-reset-" in neon.notes[-1]


def test_reset_restores_from_the_parent_head(neon, api, neon_api) -> None:
    post = api.post("/branches/br-dev-2/restore").mock(
        return_value=answer(neon_api, "POST", "/branches/br-dev-2/restore", 200, {"branch": DEV, "operations": [op("finished")]})
    )
    assert neon.reset("dev").name == "dev"
    assert json.loads(post.calls.last.request.content) == {"source_branch_id": "br-main-1"}


def test_restore_from_a_branch_and_to_a_point_in_time(neon, api, neon_api) -> None:
    post = api.post("/branches/br-main-1/restore").mock(
        return_value=answer(neon_api, "POST", "/branches/br-main-1/restore", 200, {"branch": MAIN, "operations": []})
    )
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
    with pytest.raises(InputError, match="preserve_under_name"):  # main has a child, dev
        neon.restore("main", source_branch="dev")


@pytest.mark.parametrize("pooled", [False, True])
def test_connection_uri_of_a_branch(neon, api, neon_api, pooled: bool) -> None:
    uri = "postgresql://app:pw@ep-x-pooler.neon.tech/appdb?sslmode=require"
    route = api.get("/connection_uri").mock(
        return_value=answer(neon_api, "GET", "/connection_uri", 200, {"uri": uri})
    )
    assert neon.connection_uri("dev", pooled=pooled, database="appdb", role="app") == uri
    assert dict(route.calls.last.request.url.params) == {
        "branch_id": "br-dev-2",
        "database_name": "appdb",
        "role_name": "app",
        **({"pooled": "true"} if pooled else {}),
    }


def test_errors_are_one_line_and_never_show_the_key(neon, api, neon_api, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    api.post("/branches").mock(return_value=error(neon_api, "POST", "/branches", 401, "authorization failed"))
    with pytest.raises(NeonError) as unauthorized:
        neon.create("x")
    api.post("/branches/br-dev-2/restore").mock(
        return_value=error(neon_api, "POST", "/branches/br-dev-2/restore", 400, "timestamp outside history retention")
    )
    with pytest.raises(NeonError, match="history retention") as bad:
        neon.restore("dev", source_branch="main")
    with pytest.raises(InputError, match="no Neon branch 'nope'"):
        neon.delete("nope")
    texts = [str(unauthorized.value), str(bad.value), caplog.text]
    assert not [t for t in texts if KEY in t]


def test_cancelled_and_stuck_operations_fail(api, neon_api) -> None:
    neon = NeonBranches(KEY, PROJECT, poll_interval=0.0, timeout=0.05)
    running = op("running")
    path = f"/operations/{running['id']}"
    api.post("/branches").mock(return_value=created(neon_api, branch("br-x", "x", "br-main-1"), [running]))
    api.get(path).mock(return_value=answer(neon_api, "GET", path, 200, {"operation": {**running, "status": "cancelled"}}))
    with pytest.raises(NeonError, match="cancelled"):
        neon.create("x")
    failed = {**running, "status": "failed", "error": "compute failed to start", "failures_count": 3}
    api.get(path).mock(return_value=answer(neon_api, "GET", path, 200, {"operation": failed}))
    with pytest.raises(NeonError, match="still failed after"):
        neon.create("x")


def test_missing_credentials_and_a_clear_text_api_host_are_refused(monkeypatch) -> None:
    monkeypatch.delenv("NEON_API_KEY", raising=False)
    with pytest.raises(InputError, match="NEON_API_KEY and NEON_PROJECT_ID"):
        NeonBranches("", PROJECT)
    with pytest.raises(InputError, match="must be https"):
        NeonBranches(KEY, PROJECT, base_url="http://neon.example.com/api/v2")
    NeonBranches(KEY, PROJECT, base_url="http://127.0.0.1:9/api/v2")  # loopback: the test double


def test_the_definition_catches_what_neon_would_refuse(neon_api) -> None:
    """The checks can fail: a request or a fixture off the definition is reported."""
    bad = Call(
        "post",
        f"/api/v2/projects/{PROJECT}/branches",
        headers={"Authorization": f"Bearer {KEY}"},
        body=json.dumps({"branch": {"parent_id": "BR_UPPER", "parent_timestamp": "yesterday"}}).encode(),
    )
    problems = neon_api.request_problems(bad)
    assert any("parent_timestamp" in p for p in problems) and any("parent_id" in p for p in problems)
    unsigned = Call("get", f"/api/v2/projects/{PROJECT}/branches")
    assert neon_api.request_problems(unsigned)  # no bearer token
    with pytest.raises(AssertionError, match="current_state"):
        neon_api.fixture("GET", f"/projects/{PROJECT}/branches", 200, {"branches": [{"id": "br-x", "name": "x"}], "annotations": {}})
    with pytest.raises(AssertionError, match="uuid"):
        neon_api.fixture("GET", f"/projects/{PROJECT}/operations/x", 200, {"operation": {**op("finished"), "id": "op-1"}})
