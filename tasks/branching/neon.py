"""Branches on Neon, through its API v2 (https://console.neon.tech/api/v2) over httpx.

Every call that changes something returns `operations`; we poll each until it reaches a terminal
status (finished, skipped; cancelled is an error; failed is retried by Neon, so we keep polling
until the deadline). A project busy with another operation answers 423 Locked: we retry with
backoff, as Neon asks. The API key and the connection URIs (which carry a password) are never logged
or put in an error message.

Configuration: NEON_API_KEY and NEON_PROJECT_ID from the environment, else Prefect Secret blocks
named `neon-api-key` / `neon-project-id`; NEON_DATABASE (default neondb) and NEON_ROLE (default
neondb_owner) name what a branch's connection URI points at.
"""

from __future__ import annotations

import logging
import os
import random
import time
from datetime import datetime
from typing import Any

import httpx

from tasks.branching.base import Branch
from tasks.db import DatabaseError
from tasks.errors import InputError

log = logging.getLogger(__name__)

API = "https://console.neon.tech/api/v2"
DONE = {"finished", "skipped"}


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
        attempts: int = 6,
    ) -> None:
        if not api_key or not project_id:
            raise InputError(
                "the Neon provider needs NEON_API_KEY and NEON_PROJECT_ID (environment or Secret blocks)"
            )
        self.project_id, self.database, self.role = project_id, database, role
        self.poll_interval, self.timeout, self.attempts = poll_interval, timeout, attempts
        self.http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=30.0,
        )
        self._main: str | None = None
        self.notes: list[str] = []

    @classmethod
    def from_environment(cls) -> NeonBranches:
        return cls(
            _secret("NEON_API_KEY", "neon-api-key") or "",
            _secret("NEON_PROJECT_ID", "neon-project-id") or "",
            database=os.environ.get("NEON_DATABASE", "neondb"),
            role=os.environ.get("NEON_ROLE", "neondb_owner"),
        )

    # --- HTTP ----------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One API call: 423 Locked, 429 and 5xx are retried with backoff; other errors raise at once."""
        url = f"/projects/{self.project_id}{path}"
        for attempt in range(self.attempts):
            last = attempt == self.attempts - 1
            try:
                response = self.http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise NeonError(f"Neon API unreachable ({type(exc).__name__})") from None
                self._pause(attempt, f"{method} {path}: {type(exc).__name__}")
                continue
            if response.status_code in (423, 429) or response.status_code >= 500:
                if last:
                    raise NeonError(f"Neon API {method} {path}: {response.status_code} {_message(response)}")
                self._pause(attempt, f"{method} {path}: {response.status_code} {_message(response)}")
                continue
            if response.status_code == 401:
                raise NeonError("Neon rejected the API key (401); check NEON_API_KEY")
            if response.status_code == 404:
                raise InputError(f"Neon: not found: {method} {path} ({_message(response)})")
            if response.status_code >= 400:
                raise NeonError(f"Neon API {method} {path}: {response.status_code} {_message(response)}")
            return response.json() if response.content else {}
        raise AssertionError("unreachable")

    def _pause(self, attempt: int, why: str) -> None:
        delay = min(self.poll_interval * 2**attempt, 30.0) * random.uniform(0.5, 1.0)
        log.warning("%s; retrying in %.1fs", why, delay)
        time.sleep(delay)

    def _wait(self, operations: list[dict[str, Any]]) -> None:
        """Poll every operation until it is done (or the deadline passes)."""
        deadline = time.monotonic() + self.timeout
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
                time.sleep(self.poll_interval)
                current = self._call("GET", f"/operations/{op['id']}")["operation"]
                status, error = current.get("status"), current.get("error")

    # --- branches ------------------------------------------------------------------------------------

    def _branches(self) -> list[dict[str, Any]]:
        return self._call("GET", "/branches").get("branches", [])

    def _by_name(self, name: str) -> dict[str, Any]:
        for b in self._branches():
            if b.get("name") == name or b.get("id") == name:
                return b
        raise InputError(f"no Neon branch {name!r} (python -m flows.branches list --provider neon)")

    @property
    def main(self) -> str:
        """The project's default branch (Neon's `default: true`)."""
        if self._main is None:
            branches = self._branches()
            default = next((b for b in branches if b.get("default") or b.get("primary")), None)
            self._main = (default or {}).get("name", "main")
        return self._main

    def _branch(self, raw: dict[str, Any], names: dict[str, str]) -> Branch:
        created = raw.get("created_at")
        return Branch(
            raw["name"],
            names.get(raw.get("parent_id", ""), raw.get("parent_id")),
            datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None,
            raw["id"],
        )

    def create(self, name: str, parent: str | None = None, *, at: str | None = None) -> Branch:
        parent_raw = self._by_name(parent or self.main)
        branch: dict[str, Any] = {"name": name, "parent_id": parent_raw["id"]}
        if at:
            branch["parent_lsn" if "/" in at else "parent_timestamp"] = at
        body = self._call("POST", "/branches", json={"branch": branch, "endpoints": [{"type": "read_write"}]})
        self._wait(body.get("operations", []))
        return self._branch(body["branch"], {parent_raw["id"]: parent_raw["name"]})

    def list(self) -> list[Branch]:
        raw = self._branches()
        names = {b["id"]: b["name"] for b in raw}
        return [self._branch(b, names) for b in raw]

    def delete(self, name: str) -> None:
        raw = self._by_name(name)
        if raw.get("default") or raw.get("primary") or raw["name"] == self.main:
            raise InputError(f"{name!r} is the main branch; it is never deleted from here")
        body = self._call("DELETE", f"/branches/{raw['id']}")
        self._wait(body.get("operations", []))

    def reset(self, name: str) -> Branch:
        """Reset from parent: restore the branch to its parent's head."""
        raw = self._by_name(name)
        if not raw.get("parent_id"):
            raise InputError(f"{name!r} has no parent to reset from")
        body = self._call(
            "POST", f"/branches/{raw['id']}/restore", json={"source_branch_id": raw["parent_id"]}
        )
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
        `timestamp`; its previous state is kept under preserve_under_name when given."""
        target_raw = self._by_name(target)
        source_id = self._by_name(source_branch)["id"] if source_branch else target_raw["id"]
        payload: dict[str, Any] = {"source_branch_id": source_id}
        if timestamp:
            payload["source_timestamp"] = timestamp
        elif source_id == target_raw["id"]:
            raise InputError("restoring a branch from itself needs a timestamp")
        if preserve_under_name:
            payload["preserve_under_name"] = preserve_under_name
        elif source_id == target_raw["id"]:
            raise InputError("Neon keeps the previous state of a self-restore: give preserve_under_name")
        body = self._call("POST", f"/branches/{target_raw['id']}/restore", json=payload)
        self._wait(body.get("operations", []))

    def url(self, name: str) -> str:
        raw = self._by_name(name)
        body = self._call(
            "GET",
            "/connection_uri",
            params={"branch_id": raw["id"], "database_name": self.database, "role_name": self.role},
        )
        return body["uri"]


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", ""))[:200]
    except ValueError:
        return ""
