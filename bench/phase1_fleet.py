"""Benchmark a Phase 1 run of a whole user base beside one file of the same records.

    python bench/phase1_fleet.py [FILES] [--records N] [--repeat R]

Writes FILES user files (default 100,000) of 1 to 30 records each, N records in all (default
1,000,000: the file sizes are scaled to it), and one file holding as many records. In the same run,
on the same database server, with a fresh database each time, it times `python -m flows.phase1`
(a fresh process, the orchestrator included) on the directory of user files and on the one file,
then a re-sync of the user files after 1 % of their records changed. Prints the medians, the
ratios and the peak RSS of each, and the CPU time of the first run and the re-sync, the command's
and the server's (bench/cpu_time.py): what the re-sync's work is against the first run's, apart
from the time both spend waiting for their start.

Targets: the fleet run <= 2x the single-file run; peak RSS <= 300 MB; the re-sync <= 0.3x the
first fleet run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cores import Cores, shown  # noqa: E402
from bench.cpu_time import CpuMeter, CpuUse, ServerCpu, median_use  # noqa: E402
from bench.phase1 import WORDS, Scratch, breakdown, generate, rss, timed_process, warm_up  # noqa: E402
from tasks.db import database_url, mask_url  # noqa: E402


def fleet(folder: Path, files: int, records: int, seed: int = 7) -> int:
    """files user files of 1..30 records (about records in all), as Phase 1 CLIs wrote them."""
    rnd = random.Random(seed)
    sizes = [rnd.randint(1, 30) for _ in range(files)]
    scale = records / sum(sizes)
    sizes = [max(1, round(s * scale)) for s in sizes]
    sizes[-1] += records - sum(sizes)
    for i, size in enumerate(sizes):
        user = folder / f"{i // 1000:03d}" / f"user{i:06d}@example.com"
        user.mkdir(parents=True, exist_ok=True)
        tasks = [
            {
                "id": j,
                "title": " ".join(rnd.choices(WORDS, k=4)) + f" #{j}",
                "completed": rnd.random() < 0.3,
                "created_at": f"2025-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}T10:00:00Z",
            }
            for j in range(1, size + 1)
        ]
        (user / "tasks.json").write_text(json.dumps({"tasks": tasks}), encoding="utf-8")
    return sum(sizes)


def change(folder: Path, share: float, seed: int = 11) -> int:
    """Change the title of `share` of the records (spread over the files, as users edit)."""
    rnd = random.Random(seed)
    changed = 0
    for path in sorted(folder.rglob("tasks.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        touched = False
        for task in doc["tasks"]:
            if rnd.random() < share:
                task["title"] += " (edited)"
                changed += 1
                touched = True
        if touched:
            path.write_text(json.dumps(doc), encoding="utf-8")
    return changed


def run(
    source: Path, url: str, env: dict[str, str], report_dir: Path, server: ServerCpu | None
) -> tuple[float, int, str, CpuUse]:
    """(seconds, peak RSS, where the time went, CPU time) of one run as a user starts it."""
    cmd = [sys.executable, "-m", "flows.phase1", "--source", str(source), "--no-checkpoint",
           "--report-dir", str(report_dir)]  # fmt: skip
    began, cores, meter = time.time(), Cores(), CpuMeter(server)
    seconds, peak = timed_process(cmd, {**env, "DATABASE_URL": url}, ok=(0,), cores=cores, meter=meter)
    cpu = meter.use
    assert cpu is not None
    parts = breakdown(report_dir, began, seconds)
    busy = cores.by_phase(parts, began)
    where = ", ".join(f"{k} {v:.2f}s" for k, v in parts.items())
    return seconds, peak, where + (f" (cores busy: {shown(busy)})" if busy else "") + f"; CPU {cpu}", cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", type=int, nargs="?", default=100_000)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    server = database_url()
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    env = {
        **os.environ,
        "PREFECT_HOME": str(work / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    env.pop("PREFECT_API_URL", None)
    try:
        users, one = work / "users", work / "one.json"
        records = fleet(users, args.files, args.records)
        generate(records, one)
        warm_up(env)
        print(
            f"server {mask_url(server)}; {args.files:,} files, {records:,} records; median of {args.repeat}",
            flush=True,
        )
        fleet_t, single_t, resync_t, rss_f, rss_s, rss_r = [], [], [], [], [], []
        cpu_f: list[CpuUse] = []
        cpu_r: list[CpuUse] = []
        server_cpu = ServerCpu.of(server)
        for r in range(args.repeat):
            db = Scratch(server, at_head=True)
            try:
                t, peak, where_f, cpu = run(users, db.url, env, work / "runs", server_cpu)
                fleet_t.append(t)
                cpu_f.append(cpu)
                rss_f.append(peak)
                changed = change(users, 0.01, seed=11 + r)
                t, peak, where_r, cpu = run(users, db.url, env, work / "runs", server_cpu)
                resync_t.append(t)
                cpu_r.append(cpu)
                rss_r.append(peak)
            finally:
                db.drop()
            db = Scratch(server, at_head=True)
            try:
                t, peak, where_s, _ = run(one, db.url, env, work / "runs", server_cpu)
                single_t.append(t)
                rss_s.append(peak)
            finally:
                db.drop()
            print(
                f"  fleet {fleet_t[-1]:.2f}s ({rss_f[-1] / 2**20:.0f} MiB)  re-sync of {changed:,} changed "
                f"{resync_t[-1]:.2f}s ({rss_r[-1] / 2**20:.0f} MiB)  one file {single_t[-1]:.2f}s ({rss_s[-1] / 2**20:.0f} MiB)",
                flush=True,
            )
            for what, where in (("fleet", where_f), ("re-sync", where_r), ("one file", where_s)):
                print(f"    {what}: {where}", flush=True)
        f, s, rs = (statistics.median(x) for x in (fleet_t, single_t, resync_t))
        peak = max(statistics.median(rss_f), statistics.median(rss_r))
        print(
            f"{args.files:,} files: {f:.2f} s; one file of {records:,} records: {s:.2f} s; ratio {f / s:.2f} (target <= 2)"
        )
        print(f"re-sync with 1 % changed: {rs:.2f} s, {rs / f:.2f} of the first run (target <= 0.3)")
        cf, cr = median_use(cpu_f), median_use(cpu_r)
        if cf.total is not None and cr.total is not None:
            print(
                f"CPU seconds, the command with its Prefect server and helper + PostgreSQL: first run "
                f"{cf.command:.1f} + {cf.server:.1f}, re-sync {cr.command:.1f} + {cr.server:.1f} ({cr.total / cf.total:.2f} of it)"
            )
        print(
            f"peak RSS: fleet run and re-sync (the larger median) {rss(peak)}, one file "
            f"{rss(int(statistics.median(rss_s)))} (target <= 300 MB)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
