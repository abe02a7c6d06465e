"""Branches on Neon, through its API v2 (https://console.neon.tech/api/v2) over httpx.

The requests and the fields read from the answers are those of Neon's published OpenAPI definition;
the tests hold every call to it. Every call that changes something returns `operations`; we poll
each (soon at first, then every poll_interval) until it reaches a terminal status (finished, skipped; cancelled is an error; failed is retried
by Neon, so we keep polling until the deadline). What is retried follows the definition's rules:
423 Locked (another operation is running) and 503 are always safe to retry; a GET is also retried on
other 5xx, 429 and a lost connection; a POST/PATCH/DELETE whose answer was lost is not repeated (it
may have been done), the error says how to check. How long and how often is the project's one retry
policy (tasks/retry.py), as for the database. The API key and the connection URIs (which carry a
password) are never logged or put in an error message.

Configuration: NEON_API_KEY and NEON_PROJECT_ID from the environment, else Prefect Secret blocks
named `neon-api-key` / `neon-project-id`; NEON_DATABASE (default neondb) and NEON_ROLE (default
neondb_owner) name what a branch's connection URI points at; NEON_API_HOST replaces the API's base
URL (https only, or http to loopback: the key must not travel in clear).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from tasks.branching.base import Branch, point_in_time, rfc3339
from tasks.db import DatabaseError, connect, direct_host, retrying
from tasks.errors import InputError

log = logging.getLogger(__name__)

API = "https://console.neon.tech/api/v2"
DONE = {"finished", "skipped"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
COLD_START_NOTE = 1.0  # seconds: a first connection slower than this is a compute waking up


class NeonError(DatabaseError):
    """Neon refused or could not do what was asked; the message carries no credential."""


def _secret(env: str, block: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env]
    try:
        from prefect.blocks.system import Secret

        return str(Secret.load(block).get())
    except Exception:  # no block, or no Prefect API reachable: the caller says what is missing
        return None


def _api_base(url: str) -> str:
    parsed = httpx.URL(url)
    host = parsed.host
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if parsed.scheme == "https" or (parsed.scheme == "http" and loopback):
        return url.rstrip("/")
    raise InputError(
        f"NEON_API_HOST {url!r} must be https:// (http:// only to loopback: the API key goes with it)"
    )


class NeonBranches:
    kind = "neon"

    def __init__(
        self,
        api_key: str,
        project_id: str,
        *,
        database: str = "neondb",
        role: str = "neondb_owner",
        base_url: str = API,
        poll_interval: float = 1.0,
        timeout: float = 300.0,
        page_size: int = 400,
    ) -> None:
        if not api_key or not project_id:
            raise InputError(
                "the Neon provider needs NEON_API_KEY and NEON_PROJECT_ID (environment or Secret blocks)"
            )
        self.project_id, self.database, self.role = project_id, database, role
        self.poll_interval, self.timeout = poll_interval, timeout
        self.page_size = page_size
        self.http = httpx.Client(
            base_url=_api_base(base_url),
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=30.0,
        )
        self._main: str | None = None
        self.answered = False  # whether the API has answered this client yet
        self.notes: list[str] = []

    @classmethod
    def from_environment(cls) -> NeonBranches:
        return cls(
            _secret("NEON_API_KEY", "neon-api-key") or "",
            _secret("NEON_PROJECT_ID", "neon-project-id") or "",
            database=os.environ.get("NEON_DATABASE", "neondb"),
            role=os.environ.get("NEON_ROLE", "neondb_owner"),
            base_url=os.environ.get("NEON_API_HOST") or API,
        )

    # --- HTTP ----------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One API call, a unit of the retry policy (tasks/retry.py) where the definition says that
        repeating it is safe (the module's docstring)."""
        url = f"/projects/{self.project_id}{path}"
        safe = method in SAFE_METHODS

        def attempt() -> dict[str, Any]:
            try:
                response = self.http.request(method, url, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:  # never sent
                # waited for only if the API answered this process before: else a wrong host, at once
                raise NeonError(f"Neon API unreachable ({type(exc).__name__})", transient=self.answered) from None
            except httpx.TransportError as exc:
                raise NeonError(
                    f"Neon API {method} {path}: no answer ({type(exc).__name__}); it may have been "
                    "done: check with python -m flows.branches list --provider neon",
                    transient=safe,
                ) from None
            self.answered = True
            status = response.status_code
            if status in (423, 503) or (safe and (status == 429 or status >= 500)):
                raise NeonError(f"Neon API {method} {path}: {status} {_message(response)}", transient=True)
            if status == 401:
                raise NeonError("Neon rejected the API key (401); check NEON_API_KEY")
            if status == 404:
                raise InputError(f"Neon: not found: {method} {path} ({_message(response)})")
            if status >= 400:
                raise NeonError(f"Neon API {method} {path}: {status} {_message(response)}")
            return response.json() if response.content else {}

        return retrying(attempt, what=f"the Neon API call {method} {path}")

    def _wait(self, operations: list[dict[str, Any]]) -> None:
        """Poll every operation until it is done (or the deadline passes)."""
        deadline = time.monotonic() + self.timeout
        polls = 0
        for op in operations:
            status, error = op.get("status"), op.get("error")
            while status not in DONE:
                if status == "cancelled":
                    raise NeonError(f"Neon operation {op.get('action')} was cancelled")
                if time.monotonic() > deadline:
                    raise NeonError(
                        f"Neon operation {op.get('action')} still {status} after {self.timeout:.0f}s"
                        + (f": {error}" if error else "")
                    )
                time.sleep(min(self.poll_interval, 0.05 * 2**polls))  # most finish in well under a second
                polls += 1
                current = self._call("GET", f"/operations/{op['id']}")["operation"]
                status, error = current.get("status"), current.get("error")

    # --- branches ------------------------------------------------------------------------------------

    def _branches(self) -> list[dict[str, Any]]:
        """Every branch, page by page (the definition's cursor pagination)."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": self.page_size, "sort_by": "created_at", "sort_order": "asc"}
        while True:
            body = self._call("GET", "/branches", params=params)
            page = body.get("branches", [])
            found += page
            cursor = (body.get("pagination") or {}).get("next")
            if not page or not cursor or len(page) < self.page_size:
                return found
            params = {**params, "cursor": cursor}

    def _by_name(self, name: str, branches: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        for b in self._branches() if branches is None else branches:
            if b.get("name") == name or b.get("id") == name:
                return b
        raise InputError(f"no Neon branch {name!r} (python -m flows.branches list --provider neon)")

    @staticmethod
    def _children(raw: dict[str, Any], branches: list[dict[str, Any]]) -> list[str]:
        return sorted(b["name"] for b in branches if b.get("parent_id") == raw["id"])

    @property
    def main(self) -> str:
        """The project's default branch (Neon's `default: true`)."""
        if self._main is None:
            branches = self._branches()
            default = next((b for b in branches if b.get("default") or b.get("primary")), None)
            self._main = (default or {}).get("name", "main")
        return self._main

    def _branch(self, raw: dict[str, Any], names: dict[str, str]) -> Branch:
        return Branch(
            raw["name"],
            names.get(raw.get("parent_id", ""), raw.get("parent_id")),
            _when(raw.get("created_at")),
            raw["id"],
            _when(raw.get("expires_at")),
        )

    def create(
        self, name: str, parent: str | None = None, *, at: str | None = None, expires_at: datetime | None = None
    ) -> Branch:
        _check_name(name)
        branches = self._branches()
        if any(b.get("name") == name for b in branches):
            raise InputError(f"branch {name!r} already exists")
        parent_raw = self._by_name(parent or self.main, branches)
        branch: dict[str, Any] = {"name": name, "parent_id": parent_raw["id"]}
        if at:
            if "/" in at:
                branch["parent_lsn"] = at
            else:
                branch["parent_timestamp"] = point_in_time(at)
        if expires_at:
            branch["expires_at"] = rfc3339(expires_at.replace(microsecond=0))  # Neon: to the second
        body = self._call("POST", "/branches", json={"branch": branch, "endpoints": [{"type": "read_write"}]})
        self._wait(body.get("operations", []))
        return self._branch(body["branch"], {parent_raw["id"]: parent_raw["name"]})

    def list(self) -> list[Branch]:
        raw = self._branches()
        names = {b["id"]: b["name"] for b in raw}
        return [self._branch(b, names) for b in raw]

    def delete(self, name: str) -> None:
        branches = self._branches()
        raw = self._by_name(name, branches)
        if raw.get("default") or raw.get("primary") or raw["name"] == self.main:
            raise InputError(f"{name!r} is the main branch; it is never deleted from here")
        children = self._children(raw, branches)
        if children:  # Neon refuses to delete a parent; say which children are in the way
            raise InputError(
                f"{name!r} has child branches ({', '.join(children)}); Neon deletes a branch's children first"
            )
        body = self._call("DELETE", f"/branches/{raw['id']}")
        self._wait(body.get("operations", []))

    def reset(self, name: str) -> Branch:
        """Reset from parent: restore the branch to its parent's head (Neon reapplies its expiry)."""
        branches = self._branches()
        raw = self._by_name(name, branches)
        if not raw.get("parent_id"):
            raise InputError(f"{name!r} has no parent to reset from")
        payload: dict[str, Any] = {"source_branch_id": raw["parent_id"]}
        if self._children(raw, branches):  # Neon requires somewhere to move them
            kept = f"{name[:40]}-before-reset-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
            payload["preserve_under_name"] = kept
            self.notes.append(f"{name} has child branches: its previous state is kept as branch {kept}")
        body = self._call("POST", f"/branches/{raw['id']}/restore", json=payload)
        self._wait(body.get("operations", []))
        names = {b["id"]: b["name"] for b in self._branches()}
        return self._branch(body.get("branch", raw), names)

    def restore(
        self,
        target: str,
        *,
        source_branch: str | None = None,
        timestamp: str | None = None,
        preserve_under_name: str | None = None,
    ) -> None:
        """The target becomes the source branch's head, or its own (or the source's) state at
        `timestamp`; its previous state is kept under preserve_under_name when given (Neon makes
        that branch the target's parent, and moves the target's children under it)."""
        if preserve_under_name:
            _check_name(preserve_under_name)
        branches = self._branches()
        target_raw = self._by_name(target, branches)
        source_id = self._by_name(source_branch, branches)["id"] if source_branch else target_raw["id"]
        payload: dict[str, Any] = {"source_branch_id": source_id}
        if timestamp:
            payload["source_timestamp"] = point_in_time(timestamp)
        elif source_id == target_raw["id"]:
            raise InputError("restoring a branch from itself needs a timestamp")
        if preserve_under_name:
            payload["preserve_under_name"] = preserve_under_name
        elif source_id == target_raw["id"] or self._children(target_raw, branches):
            raise InputError(
                f"Neon keeps the previous state of {target!r} (a self-restore, or it has child branches): "
                "give preserve_under_name"
            )
        body = self._call("POST", f"/branches/{target_raw['id']}/restore", json=payload)
        self._wait(body.get("operations", []))

    def connection_uri(
        self, name: str, *, pooled: bool = False, database: str | None = None, role: str | None = None
    ) -> str:
        raw = self._by_name(name)
        params: dict[str, Any] = {
            "branch_id": raw["id"],
            "database_name": database or self.database,
            "role_name": role or self.role,
        }
        if pooled:
            params["pooled"] = True
        return self._call("GET", "/connection_uri", params=params)["uri"]

    def check_main(self, url: str) -> None:
        """Checkpoints and restores act on the project's default branch, whatever DATABASE_URL says:
        refuse a URL that reaches another branch's endpoint, before anything is copied or replaced."""
        host = make_url(url).host
        raw = self._by_name(self.main)
        hosts = {e["host"] for e in self._call("GET", f"/branches/{raw['id']}/endpoints").get("endpoints", [])}
        if host and (direct_host(host) or host) not in hosts:
            raise InputError(
                f"the database URL reaches {host}, not the endpoint of Neon's default branch {self.main} "
                f"({', '.join(sorted(hosts)) or 'none'}): checkpoints and restores act on {self.main}"
            )

    def url(self, name: str) -> str:
        """The direct URI, once the branch's compute answers: a compute that scaled to zero takes a
        few seconds to start, and the report says so (the connection's retries and timeout wait)."""
        uri = self.connection_uri(name)
        started = time.monotonic()
        with connect(uri, autocommit=True):
            pass
        took = time.monotonic() - started
        if took > COLD_START_NOTE:
            self.notes.append(
                f"the compute of branch {name} answered its first connection after {took:.1f}s (cold start)"
            )
        return uri


def _check_name(name: str) -> str:
    """A branch name as Neon's definition allows it (at most 256 characters), printable: it is shown
    on one line in reports and errors. It travels as JSON, never as SQL."""
    if not 0 < len(name) <= 256 or not name.isprintable():
        raise InputError(f"invalid Neon branch name {name[:80]!r}: 1 to 256 printable characters")
    return name


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", ""))[:200]
    except ValueError:
        return ""
