"""The run records of a schema run: the run and each of its steps in `migration_runs`, written from
the moment the bookkeeping tables exist (an upgrade from base creates them in 0001; a downgrade to
base removes them)."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from tasks.runs import finish, has_bookkeeping, open_run


class Journal:
    def __init__(self, conn: psycopg.Connection, parameters: dict[str, Any], source_name: str) -> None:
        self.conn, self.parameters, self.source_name = conn, parameters, source_name
        self.run_id = str(uuid.uuid4())
        self.opened = False

    def _ready(self) -> bool:
        if not has_bookkeeping(self.conn):
            return False
        if not self.opened:
            open_run(self.conn, "schema", self.parameters, self.source_name, run_id=self.run_id)
            self.opened = True
        return True

    def start_step(self, revision: str, action: str) -> str | None:
        if not self._ready():
            return None
        return open_run(
            self.conn,
            "schema-step",
            {"run_id": self.run_id, "revision": revision, "action": action},
            source_name=revision,
        )

    def end_step(self, step_id: str | None, status: str, stats: dict[str, Any], error: str | None = None) -> None:
        if step_id is not None and has_bookkeeping(self.conn):
            finish(self.conn, step_id, status, stats, error=error)

    def finish(self, status: str, stats: dict[str, Any], error: str | None) -> None:
        if self._ready():
            finish(self.conn, self.run_id, status, stats, error=error)
