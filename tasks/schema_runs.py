"""The run records of a schema run: the run and each of its steps in `migration_runs`, written from
the moment the bookkeeping tables exist (an upgrade from base creates them in 0001; a downgrade to
base removes them). Each write is a unit on the run's control session (tasks/retry.py)."""

from __future__ import annotations

import uuid
from typing import Any

from tasks.db import Session
from tasks.runs import finish, has_bookkeeping, open_run


class Journal:
    def __init__(self, session: Session, parameters: dict[str, Any], source_name: str) -> None:
        self.session, self.parameters, self.source_name = session, parameters, source_name
        self.run_id = str(uuid.uuid4())
        self.opened = False
        self.step_id: str | None = None
        self.why = ""

    def _ready(self) -> bool:
        if not self.session.run("schema:journal", has_bookkeeping):
            return False
        if not self.opened:
            self.session.run(
                "schema:journal", open_run, "schema", self.parameters, self.source_name, run_id=self.run_id
            )
            self.opened = True
        return True

    def start_step(self, revision: str, action: str) -> str | None:
        if not self._ready():
            return None
        self.step_id = self.session.run(
            "schema:journal",
            open_run,
            "schema-step",
            {"run_id": self.run_id, "revision": revision, "action": action},
            source_name=revision,
            run_id=str(uuid.uuid4()),  # chosen here, so a retried insert is the same row
        )
        return self.step_id

    def end_step(self, step_id: str | None, status: str, stats: dict[str, Any], error: str | None = None) -> None:
        if step_id is not None and self.session.run("schema:journal", has_bookkeeping):
            self.session.run("schema:journal", finish, step_id, status, stats, error=error)
        self.step_id = None

    def finish(self, status: str, stats: dict[str, Any], error: str | None) -> None:
        if self._ready():
            self.session.run("schema:journal", finish, self.run_id, status, stats, error=error)

    def interrupted(self, why: str) -> None:
        """The run and its step in flight marked interrupted: one attempt each, the exit comes first."""
        self.why = why
        for run_id in (self.step_id, self.run_id if self.opened else None):
            if run_id is not None:
                self.session.once("schema:interrupted", finish, run_id, "interrupted", {}, error=why)
