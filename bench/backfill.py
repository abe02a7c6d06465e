"""Benchmark the backfill engine against one plain UPDATE, with the application writing meanwhile.

    python bench/backfill.py [N] [--repeat R]

Seeds N tasks (default 1,000,000) whose `description` is NULL into a template database, and for each
repetition clones it twice: on one clone a single `UPDATE tasks SET description = '' WHERE description
IS NULL` runs, on the other the backfill engine (`tasks.backfill.run_backfill`, the flow's defaults;
the orchestrator's start-up is not part of it). On both, two writers update random rows without pause
for the whole time. Prints the medians: both durations and their ratio, and per side the writers'
writes, failures, p99 and max latency.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks import schema  # noqa: E402
from tasks.backfill import BackfillSpec, run_backfill  # noqa: E402
from tasks.db import create_database, database_url, drop_database  # noqa: E402


@dataclass
class Writes:
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: Writes) -> None:
        self.latencies += other.latencies
        self.failures += other.failures
        self.errors += other.errors[:3]

    def p(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def seed(url: str, n: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO users (id, email) VALUES (md5('bench')::uuid, 'bench@example.com')")
        conn.execute(
            "INSERT INTO tasks (id, user_id, legacy_source, legacy_id, title, description, completed) "
            "SELECT md5('t' || g)::uuid, md5('bench')::uuid, 'bench', g, 'task number ' || g, NULL, false "
            "FROM generate_series(1, %s) g",
            (n,),
        )
        conn.execute("VACUUM ANALYZE tasks")


def writer(url: str, n: int, stop: threading.Event, out: Writes, seed_no: int) -> None:
    """The running application: update a random row, again and again, timing each write."""
    rnd = random.Random(seed_no)
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            began = time.perf_counter()
            try:
                conn.execute(
                    "UPDATE tasks SET completed = NOT completed, updated_at = now() "
                    "WHERE legacy_source = 'bench' AND legacy_id = %s",
                    (rnd.randint(1, n),),
                )
                out.latencies.append(time.perf_counter() - began)
            except psycopg.Error as exc:
                out.failures += 1
                out.errors.append(str(exc).splitlines()[0])


def with_writers(url: str, n: int, work) -> tuple[float, Writes]:
    stop = threading.Event()
    parts = [Writes(), Writes()]
    threads = [threading.Thread(target=writer, args=(url, n, stop, parts[i], i)) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # writers at full speed before the work starts
    mark = [len(p.latencies) for p in parts]
    began = time.perf_counter()
    work(url)
    seconds = time.perf_counter() - began
    stop.set()
    for t in threads:
        t.join()
    during = Writes()
    for part, m in zip(parts, mark, strict=True):
        part.latencies = part.latencies[m:]
        during.add(part)
    return seconds, during


def plain_update(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE tasks SET description = '' WHERE description IS NULL")


def backfill(url: str) -> None:
    result = run_backfill(url, BackfillSpec("tasks", "description", ""))
    assert result.status == "done", result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    server = database_url()
    template = f"bench_bf_{uuid.uuid4().hex[:8]}"
    template_url = create_database(server, template)
    schema.upgrade(template_url)
    seed(template_url, args.n)
    results: dict[str, list[tuple[float, Writes]]] = {"update": [], "backfill": []}
    try:
        for _ in range(args.repeat):
            for name, work in (("update", plain_update), ("backfill", backfill)):
                clone = f"{template}_{name}"
                url = create_database(server, clone, template)
                try:
                    results[name].append(with_writers(url, args.n, work))
                    with psycopg.connect(url) as conn:
                        left = conn.execute("SELECT count(*) FROM tasks WHERE description IS NULL").fetchone()[0]
                    assert left == 0, f"{name} left {left} rows NULL"
                finally:
                    drop_database(server, clone)
    finally:
        drop_database(server, template)
    print(f"backfill of {args.n:,} rows, 2 writers updating random rows throughout; medians of {args.repeat}")
    medians = {}
    for name, runs in results.items():
        seconds = statistics.median(s for s, _ in runs)
        medians[name] = seconds
        writes = [w for _, w in runs]
        print(
            f"  {name:9s} {seconds:7.2f} s | writes {statistics.median(len(w.latencies) for w in writes):,.0f}"
            f" failed {sum(w.failures for w in writes)}"
            f" p99 {statistics.median(w.p(0.99) for w in writes):8.1f} ms"
            f" max {statistics.median(w.p(1.0) for w in writes):8.1f} ms"
        )
        for w in writes:
            for e in w.errors[:2]:
                print(f"    failure: {e}")
    print(f"  ratio backfill / single UPDATE: {medians['backfill'] / medians['update']:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
