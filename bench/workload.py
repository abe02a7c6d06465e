"""The running application, simulated: seeded rows, and writer threads that insert and update `tasks`
without pause, naming only the columns their application version knows, timing every write. A
writer given a search_path is the version built against that revision (it sees the version's views);
without one it writes the physical table as the previous version does. The online tests and the
benchmarks use it to prove a migration does not stop the application."""

from __future__ import annotations

import argparse
import random
import threading
import time
import uuid
from dataclasses import dataclass, field

import psycopg

from tasks import schema
from tasks.db import create_database, database_url


@dataclass
class Writes:
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: Writes) -> None:
        self.latencies += other.latencies
        self.failures += other.failures
        self.errors += other.errors[:3]

    def ms(self, q: float) -> float:
        """The q-quantile of write latency in ms (q=1.0: the slowest write)."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


@dataclass(frozen=True)
class Shape:
    """The names a version gives the columns the writers use (revisions 0009 and 0010 renamed them)."""

    notes: str  # description, or notes
    done: str  # completed (a boolean), or status (a word)

    @staticmethod
    def of(conn: psycopg.Connection) -> Shape:
        """Read through the connection's own search path: the version's views, or the table."""
        names = {
            r[0] for r in conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = 'tasks'::regclass")
        }
        return Shape(
            "notes" if "notes" in names else "description", "completed" if "completed" in names else "status"
        )

    def value(self, done: str) -> str:
        """SQL for the row's completion from a boolean expression."""
        return done if self.done == "completed" else f"CASE WHEN {done} THEN 'done' ELSE 'todo' END"

    def toggled(self) -> str:
        if self.done == "completed":
            return "completed = NOT completed"
        return "status = CASE status WHEN 'done' THEN 'todo' ELSE 'done' END"


def seed_tasks(url: str, n: int, *, null_every: int = 1, email: str = "seed@example.com") -> None:
    """One user and n tasks (legacy ids 1..n); every null_every-th task has NULL notes (description)."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO users (id, email, name) VALUES (md5(%s)::uuid, %s, 'seed') ON CONFLICT DO NOTHING",
            (email, email),
        )
        shape = Shape.of(conn)
        conn.execute(
            f"INSERT INTO tasks (id, user_id, legacy_source, legacy_id, title, {shape.notes}, {shape.done}) "
            "SELECT md5('task' || g)::uuid, md5(%s)::uuid, 'seed', g, 'task ' || g, "
            f"CASE WHEN g %% %s = 0 THEN NULL ELSE 'd' || g END, {shape.value('g %% 2 = 0')} "
            "FROM generate_series(1, %s) g",
            (email, null_every, n),
        )


class Writers:
    """`count` threads, each on its own connection, writing until stop(); `inserts` is the share of
    writes that insert a new task (the rest update a random existing one by legacy id)."""

    def __init__(
        self,
        url: str,
        max_legacy_id: int,
        count: int = 2,
        inserts: float = 0.0,
        search_path: str | None = None,
    ) -> None:
        self.url, self.max_legacy_id, self.inserts = url, max_legacy_id, inserts
        self.options = f"-csearch_path={search_path.replace(' ', '')}" if search_path else ""
        self._stop = threading.Event()
        self._parts = [Writes() for _ in range(count)]
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)]
        self._mark = [0] * count

    def start(self, warmup: float = 0.5) -> Writers:
        for t in self._threads:
            t.start()
        time.sleep(warmup)  # at full speed before the work under test starts
        self._mark = [len(p.latencies) for p in self._parts]
        return self

    def stop(self) -> Writes:
        """Stop and return the writes made since start() returned."""
        self._stop.set()
        for t in self._threads:
            t.join()
        during = Writes()
        for part, mark in zip(self._parts, self._mark, strict=True):
            part.latencies = part.latencies[mark:]
            during.add(part)
        return during

    def _run(self, index: int) -> None:
        """Write until stopped. A write that fails is counted; when it took the connection with it,
        the next write takes a new one, as a pooled application does."""
        rnd = random.Random(index)
        out = self._parts[index]
        conn: psycopg.Connection | None = None
        while not self._stop.is_set():
            began = time.perf_counter()
            try:
                if conn is None:
                    conn = psycopg.connect(self.url, autocommit=True, options=self.options)
                    user_id = conn.execute("SELECT id FROM users ORDER BY id LIMIT 1").fetchone()[0]
                    shape = Shape.of(conn)
                    insert = (
                        f"INSERT INTO tasks (id, user_id, title, {shape.notes}, {shape.done}) "
                        f"VALUES (%s, %s, %s, NULL, {shape.value('false')})"
                    )
                    update = (
                        f"UPDATE tasks SET {shape.toggled()}, updated_at = now() "
                        "WHERE legacy_source = 'seed' AND legacy_id = %s"
                    )
                if rnd.random() < self.inserts:
                    conn.execute(insert, (uuid.uuid4(), user_id, f"written through {self.options or 'tasks'}"))
                else:
                    conn.execute(update, (rnd.randint(1, self.max_legacy_id),))
                out.latencies.append(time.perf_counter() - began)
            except psycopg.Error as exc:
                out.failures += 1
                out.errors.append(str(exc).splitlines()[0])
                if conn is not None and (conn.closed or conn.broken):
                    conn.close()
                    conn = None
                    time.sleep(0.01)  # a pool's pause before it hands out a new connection
        if conn is not None:
            conn.close()


def bench_args(doc: str | None, default_rows: int) -> argparse.Namespace:
    """`ROWS [--repeat R]`, the command line every benchmark here takes."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="?", type=int, default=default_rows)
    parser.add_argument("--repeat", type=int, default=3)
    return parser.parse_args()


def seeded_template(prefix: str, rows: int, revision: str = "head") -> tuple[str, str]:
    """A database at `revision` with `rows` seeded tasks (description NULL), vacuumed, to clone per
    repetition; returns (server URL, its name)."""
    server = database_url()
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    url = create_database(server, name)
    schema.upgrade(url, revision)
    seed_tasks(url, rows)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE tasks")
    return server, name
