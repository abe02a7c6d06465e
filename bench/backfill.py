"""Benchmark the backfill engine against one plain UPDATE, with the application writing meanwhile.

    python bench/backfill.py [N] [--repeat R]

Seeds N tasks (default 1,000,000) whose `notes` is NULL into a template database, and for each
repetition clones it twice: on one clone a single `UPDATE tasks SET notes = '' WHERE notes
IS NULL` runs, on the other the `backfill` flow with its defaults, through the Prefect engine with its
progress artifact (a temporary Prefect server is started once, before any timing: the orchestrator's
start-up is not part of it). On both, two writers update random rows without pause for the whole time. Prints the medians: both durations and their ratio, and per side the writers'
writes, failures, p99 and max latency.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.workload import Writers, Writes, bench_args, seeded_template  # noqa: E402
from flows import orchestrator  # noqa: E402
from flows.backfill import backfill as backfill_flow  # noqa: E402
from tasks.db import create_database, drop_database  # noqa: E402

REPORTS = tempfile.mkdtemp(prefix="bench-backfill-")


def with_writers(url: str, n: int, work) -> tuple[float, Writes]:
    writers = Writers(url, n).start()
    began = time.perf_counter()
    work(url)
    seconds = time.perf_counter() - began
    return seconds, writers.stop()


def plain_update(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE tasks SET notes = '' WHERE notes IS NULL")


def backfill(url: str) -> None:
    os.environ["DATABASE_URL"] = url  # how the flow finds its database (never a parameter)
    state = backfill_flow(
        table="tasks", column="notes", value="", report_dir=REPORTS, return_state=True
    )
    assert state.is_completed() and state.result()["status"] == "done", state.message


def main() -> None:
    args = bench_args(__doc__, 1_000_000)
    server, template = seeded_template("bench_bf", args.rows)
    results: dict[str, list[tuple[float, Writes]]] = {"update": [], "backfill": []}
    try:
        with orchestrator.connected(orchestrator.start()):
            for _ in range(args.repeat):
                for name, work in (("update", plain_update), ("backfill", backfill)):
                    clone = f"{template}_{name}"
                    url = create_database(server, clone, template)
                    try:
                        results[name].append(with_writers(url, args.rows, work))
                        with psycopg.connect(url) as conn:
                            left = conn.execute(
                                "SELECT count(*) FROM tasks WHERE notes IS NULL"
                            ).fetchone()[0]
                        assert left == 0, f"{name} left {left} rows NULL"
                    finally:
                        drop_database(server, clone)
    finally:
        drop_database(server, template)
    print(
        f"backfill of {args.rows:,} rows, 2 writers updating random rows throughout; medians of {args.repeat}"
    )
    medians = {}
    for name, runs in results.items():
        seconds = statistics.median(s for s, _ in runs)
        medians[name] = seconds
        writes = [w for _, w in runs]
        print(
            f"  {name:9s} {seconds:7.2f} s | writes {statistics.median(len(w.latencies) for w in writes):,.0f}"
            f" failed {sum(w.failures for w in writes)}"
            f" p99 {statistics.median(w.ms(0.99) for w in writes):8.1f} ms"
            f" max {statistics.median(w.ms(1.0) for w in writes):8.1f} ms"
        )
        for w in writes:
            for e in w.errors[:2]:
                print(f"    failure: {e}")
    print(f"  ratio backfill / single UPDATE: {medians['backfill'] / medians['update']:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
