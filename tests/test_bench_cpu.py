"""The benchmarks' CPU accounting (bench/cpu_time.py) against a real server and real processes: the
server's work is found in its processes, the command's in the benchmark's children."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest

from bench.cpu_time import CpuMeter, CpuUse, ServerCpu, explained, median_use

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass"


@pytest.fixture
def server_cpu(pg_server: str) -> ServerCpu:
    found = ServerCpu.of(pg_server)
    if found is None:
        pytest.skip("the test server does not run on this machine (TEST_DATABASE_URL names another)")
    return found


def test_a_query_that_works_the_server_shows_as_the_servers_cpu_and_not_the_commands(
    server_cpu: ServerCpu, pg_server: str
) -> None:
    meter = CpuMeter(server_cpu)
    meter.start()
    with psycopg.connect(pg_server, autocommit=True) as conn:  # a backend that exits before stop()
        conn.execute("SET max_parallel_workers_per_gather = 0")
        conn.execute("SELECT count(md5(g::text)) FROM generate_series(1, 1500000) g").fetchone()
    use = meter.stop()
    assert use.server is not None and use.server >= 0.3, use
    assert use.command < 0.1, use  # no child process ran


def test_a_child_process_that_works_shows_as_the_commands_cpu(server_cpu: ServerCpu) -> None:
    meter = CpuMeter(server_cpu)
    meter.start()
    subprocess.run([sys.executable, "-c", BURN], check=True)
    use = meter.stop()
    assert 0.35 <= use.command < 2.0, use
    assert use.server is not None and use.server < 0.3, use  # an idle server (a tick or two)


def test_a_server_elsewhere_is_not_measured() -> None:
    assert ServerCpu.of("postgresql://user@db.example.com/app") is None
    meter = CpuMeter(None)
    meter.start()
    use = meter.stop()
    assert use.server is None and use.total is None
    assert "not measurable here" in str(use)


def test_the_bound_is_the_flows_cpu_over_the_cores() -> None:
    flow = median_use([CpuUse(10.0, 12.0), CpuUse(8.0, 14.0), CpuUse(9.0, 13.0)])
    assert flow == CpuUse(9.0, 13.0)
    line = explained(flow, CpuUse(0.5, 11.5), 12.0)
    assert "flow 22.0" in line and "PostgreSQL 13.0" in line and "\\copy 12.0" in line
