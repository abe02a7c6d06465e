"""Benchmark `upgrade head` on a populated table while the old application writes without pause.

    python bench/schema_online.py [ROWS] [--repeat R]

Seeds ROWS tasks (default 300,000) at revision 0002 into a template database; for each repetition,
clones it, starts two writers that insert (30 %) and update (70 %) tasks the way the old application
does, runs the schema flow's work (`tasks.schema.apply`, the same steps and backfills the flow runs;
the orchestrator's start-up excluded) up to head, and stops the writers. Prints medians of the
upgrade's duration, the writes made, failed writes, and p99 / max write latency.
Target at 300,000 rows: 0 failures, p99 < 100 ms.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.workload import Writers, bench_args, seeded_template  # noqa: E402
from tasks import schema  # noqa: E402
from tasks.db import create_database, drop_database  # noqa: E402


def main() -> None:
    args = bench_args(__doc__, 300_000)
    server, template = seeded_template("bench_online", args.rows, "0002")
    runs = []
    try:
        for i in range(args.repeat):
            clone = create_database(server, f"{template}_{i}", template)
            try:
                writers = Writers(clone, args.rows, count=2, inserts=0.3).start()
                began = time.perf_counter()
                _, steps = schema.path("0002", schema.head_revision())
                schema.apply(clone, steps, "up", lock_timeout="2s")
                seconds = time.perf_counter() - began
                writes = writers.stop()
                with psycopg.connect(clone) as conn:
                    nulls = conn.execute(
                        "SELECT count(*) FROM tasks WHERE tags IS NULL OR priority IS NULL"
                    ).fetchone()[0]
                assert nulls == 0 and schema.current_revision(clone) == schema.head_revision()
                runs.append((seconds, writes))
            finally:
                drop_database(server, f"{template}_{i}")
    finally:
        drop_database(server, template)
    print(
        f"upgrade 0002 -> head over {args.rows:,} rows, 2 old-application writers throughout; medians of {args.repeat}"
    )
    print(f"  upgrade        {statistics.median(s for s, _ in runs):8.2f} s")
    print(f"  writes         {statistics.median(len(w.latencies) for _, w in runs):8,.0f}")
    print(f"  failed writes  {sum(w.failures for _, w in runs):8d} (all runs)")
    print(f"  p99 latency    {statistics.median(w.ms(0.99) for _, w in runs):8.1f} ms (target < 100)")
    print(f"  max latency    {statistics.median(w.ms(1.0) for _, w in runs):8.1f} ms (lock timeout 2000)")
    for _, w in runs:
        for e in w.errors[:2]:
            print(f"  failure: {e}")


if __name__ == "__main__":
    main()
