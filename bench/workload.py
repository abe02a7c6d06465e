"""The running application, simulated: seeded rows, and writer threads that insert and update `tasks` without pause
the way the old application does (naming only the columns it knows), timing every write. The
online tests and the benchmarks use it to prove a migration does not stop the application."""

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


def seed_tasks(url: str, n: int, *, null_every: int = 1, email: str = "seed@example.com") -> None:
    """One user and n tasks (legacy ids 1..n); every null_every-th task has a NULL description."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO users (id, email, name) VALUES (md5(%s)::uuid, %s, 'seed') ON CONFLICT DO NOTHING",
            (email, email),
        )
        conn.execute(
            "INSERT INTO tasks (id, user_id, legacy_source, legacy_id, title, description, completed) "
            "SELECT md5('task' || g)::uuid, md5(%s)::uuid, 'seed', g, 'task ' || g, "
            "CASE WHEN g %% %s = 0 THEN NULL ELSE 'd' || g END, g %% 2 = 0 FROM generate_series(1, %s) g",
            (email, null_every, n),
        )


class Writers:
    """`count` threads, each on its own connection, writing until stop(); `inserts` is the share of
    writes that insert a new task (the rest update a random existing one by legacy id)."""

    def __init__(self, url: str, max_legacy_id: int, count: int = 2, inserts: float = 0.0) -> None:
        self.url, self.max_legacy_id, self.inserts = url, max_legacy_id, inserts
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
        rnd = random.Random(index)
        out = self._parts[index]
        with psycopg.connect(self.url, autocommit=True) as conn:
            user_id = conn.execute("SELECT id FROM users ORDER BY id LIMIT 1").fetchone()[0]
            while not self._stop.is_set():
                began = time.perf_counter()
                try:
                    if rnd.random() < self.inserts:
                        conn.execute(
                            "INSERT INTO tasks (id, user_id, title, description, completed) VALUES (%s, %s, %s, NULL, false)",
                            (uuid.uuid4(), user_id, "written by the old application"),
                        )
                    else:
                        conn.execute(
                            "UPDATE tasks SET completed = NOT completed, updated_at = now() "
                            "WHERE legacy_source = 'seed' AND legacy_id = %s",
                            (rnd.randint(1, self.max_legacy_id),),
                        )
                    out.latencies.append(time.perf_counter() - began)
                except psycopg.Error as exc:
                    out.failures += 1
                    out.errors.append(str(exc).splitlines()[0])


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
