"""Benchmark schema changes on a populated table while the application writes without pause.

    python bench/schema_online.py [ROWS] [--repeat R]

Seeds ROWS tasks (default 1,000,000) at revision 0008 into a template database and clones it per
measurement. Prints, for the breaking change 0009 (`completed boolean` -> `status`):
- the rollout with writers of both versions (2 each, 30 % inserts): writers of 0008 from before
  start until complete, writers of 0009 from start until after complete; writes per version,
  failed writes, p99 and max latency, and how long start, backfill and complete took;
- the backfill's duration beside one plain `UPDATE` of the same rows, both on a clone after start
  with no writers (the lock such an UPDATE holds is what the backfill avoids), and the backfill's
  duration under the writers' load;
- the triggers' write amplification: time per single-row insert after start, through the previous
  version (the physical table) with the trigger and with it disabled, and through the new version's
  view (synchronous_commit off, so that the server's work is measured rather than the disk flush).
Then the default command as a user types it, `python -m flows.schema upgrade head` (checkpoint on,
its own temporary Prefect server) on a clone, once as it is and once with --template-copy, with
writers of 0008 that take a new connection when theirs is ended, as a pooled application does:
the failed writes of each path.
Targets: 0 failed writes, p99 < 50 ms for both versions, backfill <= 1.5x the plain UPDATE; the
default command 0 failed writes.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.phase1 import drop_with_checkpoints  # noqa: E402
from bench.workload import Writers, Writes, bench_args, seeded_template  # noqa: E402
from tasks import schema  # noqa: E402
from tasks.db import create_database, drop_database  # noqa: E402

STATUS = schema.step("0009")
INSERTS = 3_000


def timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def rollout(url: str, rows: int) -> tuple[dict[str, float], Writes, Writes]:
    old = Writers(url, rows, count=2, inserts=0.3, search_path=schema.search_path("0008")).start()
    seconds = {"start": timed(lambda: schema.start(url, STATUS, lock_timeout="2s"))}
    new = Writers(url, rows, count=2, inserts=0.3, search_path=schema.search_path("0009")).start()
    seconds["backfill"] = timed(lambda: [schema.engine_backfill(url)(b) for b in STATUS.backfills])
    old_writes = old.stop()  # every instance of the previous version has moved on: complete
    seconds["complete"] = timed(lambda: schema.complete(url, STATUS, lock_timeout="2s"))
    new_writes = new.stop()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM tasks WHERE status IS NULL").fetchone()[0] == 0
    return seconds, old_writes, new_writes


def plain_update(url: str) -> float:
    schema.start(url, STATUS, lock_timeout="2s")
    backfill = STATUS.backfills[0]
    with psycopg.connect(url, autocommit=True) as conn:
        return timed(lambda: conn.execute(f"UPDATE tasks SET {backfill.column} = {backfill.expression}"))


def quiet_backfill(url: str) -> float:
    schema.start(url, STATUS, lock_timeout="2s")
    return timed(lambda: [schema.engine_backfill(url)(b) for b in STATUS.backfills])


def per_insert(url: str, search_path: str | None) -> float:
    """Mean seconds of one autocommitted single-row insert, as the application makes them."""
    options = f"-csearch_path={search_path.replace(' ', '')}" if search_path else ""
    with psycopg.connect(url, autocommit=True, options=f"{options} -csynchronous_commit=off".strip()) as conn:
        user = conn.execute("SELECT id FROM users LIMIT 1").fetchone()[0]
        names = {
            r[0] for r in conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = 'tasks'::regclass")
        }
        done, value = ("completed", False) if "completed" in names else ("status", "todo")
        statement = f"INSERT INTO tasks (id, user_id, title, {done}) VALUES (%s, %s, 'bench', %s)"
        return (
            timed(lambda: [conn.execute(statement, (uuid.uuid4(), user, value)) for _ in range(INSERTS)])
            / INSERTS
        )


def trigger_cost(url: str) -> tuple[float, float, float]:
    """(with the trigger, without it, through the new version's view), per insert, after start."""
    schema.start(url, STATUS, lock_timeout="2s")
    per_insert(url, None)  # warm up
    with_trigger, view = per_insert(url, None), per_insert(url, schema.search_path("0009"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE tasks DISABLE TRIGGER USER")
    return with_trigger, per_insert(url, None), view


def default_command(server: str, template: str, rows: int, flags: list[str]) -> tuple[float, Writes, str]:
    """(seconds, the writes of 0008's writers meanwhile, the command's first line) of upgrade head
    run as a user runs it, on a clone of the template."""
    name = f"{template}_cmd"
    clone = create_database(server, name, template)
    try:
        writers = Writers(clone, rows, count=2, inserts=0.3, search_path=schema.search_path("0008")).start()
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"DATABASE_URL": clone}
        began = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "flows.schema", "upgrade", "head", *flags, "--report-dir", str(ROOT / "runs")],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600,
        )  # fmt: skip
        seconds = time.perf_counter() - began
        writes = writers.stop()
        if out.returncode:
            raise SystemExit(f"upgrade head {' '.join(flags)} exited {out.returncode}: {out.stderr.strip()[-300:]}")
        return seconds, writes, (out.stdout.strip().splitlines() or [""])[0]
    finally:
        drop_with_checkpoints(server, name)  # the clone and its checkpoint branch


def main() -> None:
    args = bench_args(__doc__, 1_000_000)
    server, template = seeded_template("bench_online", args.rows, "0008")
    runs, plain, quiet, amplification = [], [], [], []
    try:
        for i in range(args.repeat):
            clones = [create_database(server, f"{template}_{i}_{k}", template) for k in range(4)]
            try:
                runs.append(rollout(clones[0], args.rows))
                plain.append(plain_update(clones[1]))
                quiet.append(quiet_backfill(clones[2]))
                amplification.append(trigger_cost(clones[3]))
            finally:
                for k in range(4):
                    drop_database(server, f"{template}_{i}_{k}")
        commands = [(flags, *default_command(server, template, args.rows, flags)) for flags in ([], ["--template-copy"])]
    finally:
        drop_database(server, template)
    report(args.rows, args.repeat, runs, plain, quiet, amplification)
    print("python -m flows.schema upgrade head (checkpoint on), 2 writers of 0008 that reconnect like a pooled application")
    for flags, seconds, w, line in commands:
        path = " ".join(flags) or "default (online checkpoint)"
        print(f"  {path:28} {seconds:6.1f} s  {len(w.latencies):7,} writes  {w.failures:4} failed  ({line[:60]})")
        for e in sorted(set(w.errors))[:2]:
            print(f"    failure: {e}")


def report(rows: int, repeat: int, runs: list, plain: list, quiet: list, amplification: list) -> None:
    med = statistics.median
    print(
        f"0009 completed -> status over {rows:,} rows, 2 writers per version throughout; medians of {repeat}"
    )
    for phase in ("start", "backfill", "complete"):
        print(f"  {phase:26} {med(s[phase] for s, _, _ in runs):8.2f} s")
    for label, k in (("0008 (previous) writers", 1), ("0009 (new) writers", 2)):
        writes = [r[k] for r in runs]
        print(
            f"  {label}: {med(len(w.latencies) for w in writes):,.0f} writes, "
            f"{sum(w.failures for w in writes)} failed, p99 {med(w.ms(0.99) for w in writes):.1f} ms, "
            f"max {med(w.ms(1.0) for w in writes):.1f} ms (target p99 < 50)"
        )
        for w in writes:
            for e in w.errors[:2]:
                print(f"    failure: {e}")
    loaded, alone, update = med(s["backfill"] for s, _, _ in runs), med(quiet), med(plain)
    print(
        f"  backfill, no writers       {alone:8.2f} s  ({alone / update:.2f}x the plain UPDATE; target <= 1.5x)"
    )
    print(f"  backfill, 4 writers        {loaded:8.2f} s  ({loaded / update:.2f}x)")
    print(f"  one plain UPDATE           {update:8.2f} s  (no writers: it locks every row it updates)")
    trigger, bare, view = (med(a[k] for a in amplification) * 1e6 for k in range(3))
    print(f"  insert, trigger disabled   {bare:8.0f} us")
    print(f"  insert, previous version   {trigger:8.0f} us  ({trigger / bare:.2f}x: the sync trigger)")
    print(f"  insert, new version (view) {view:8.0f} us  ({view / bare:.2f}x: the view and the trigger)")


if __name__ == "__main__":
    main()
