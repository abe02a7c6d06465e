"""Whose CPU a benchmarked command used: the command's own processes and the database server's.

On a machine of N cores a command cannot finish sooner than the CPU time it keeps busy divided by
N. `psql \\copy` keeps one backend busy and psql hardly at all, so its time is the server's CPU
time. The flow keeps Python, its temporary Prefect server and two backends busy, so its time is
bounded by the client's and the server's CPU together, over all the cores. A server that ingests the
same rows with less CPU therefore shortens `\\copy` by all of it and the flow by about 1/N of it:
the ratio of the two grows on the more efficient server.

The command's CPU is what it and every process it waited for used (the temporary Prefect server,
the pre-check helper): the benchmark's children's rusage. The server's is read from /proc: its
postmaster's own and reaped children's time plus its live children's (backends, parallel workers,
checkpointer, autovacuum), so it counts all the server did meanwhile. That needs the server on this
machine (a Unix socket or a loopback address) and Linux; elsewhere the server's share is None.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

PROC = Path("/proc")
LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def children_seconds() -> float:
    """CPU seconds of this process's children that have been waited for, so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3 on), or None if it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def _is_postgres(pid: int) -> bool:
    try:
        return (PROC / str(pid) / "comm").read_text().startswith("postgres")
    except OSError:
        return False


class ServerCpu:
    """The CPU seconds a PostgreSQL server on this machine has used, all its processes together."""

    def __init__(self, postmaster: int) -> None:
        self.postmaster = postmaster
        self.tick = os.sysconf("SC_CLK_TCK")

    @classmethod
    def of(cls, url: str) -> ServerCpu | None:
        """The server `url` names, if it runs on this machine and its processes can be read."""
        hosts = str(conninfo_to_dict(url).get("host") or "").split(",")  # none: libpq's default socket
        if not all(h == "" or h.startswith("/") or h in LOOPBACK for h in hosts) or not PROC.is_dir():
            return None
        with psycopg.connect(url, autocommit=True) as conn:  # read while the backend lives
            pid = conn.info.backend_pid
            backend = _stat(pid) if _is_postgres(pid) else None
        # None: the pid is another pid namespace's (a container behind a forwarded port)
        postmaster = int(backend[1]) if backend is not None else 0  # its ppid
        return cls(postmaster) if backend is not None and _is_postgres(postmaster) else None

    def _own(self) -> list[str]:
        own = _stat(self.postmaster)
        if own is None:
            raise SystemExit(f"the PostgreSQL server (postmaster {self.postmaster}) stopped during the benchmark")
        return own

    def settled(self, interval: float = 0.05, tries: int = 20) -> None:
        """Until the postmaster has reaped the backends that just ended: a backend whose client has
        disconnected shows neither among the live processes nor in its parent's time for a few
        milliseconds (seen: the CPU of a 0.4 s query missing when read at once). Waits until the
        reaped children's time holds still over two intervals, at most `tries` intervals."""
        last, still = self._own()[13:15], 0
        for _ in range(tries):
            time.sleep(interval)
            now = self._own()[13:15]
            still = still + 1 if now == last else 0
            if still == 2:
                return
            last = now

    def seconds(self) -> float:
        """Its postmaster's time and its waited-for children's, plus the time of the children alive now."""
        ticks = sum(int(v) for v in self._own()[11:15])  # utime, stime, cutime, cstime
        for entry in PROC.iterdir():
            if entry.name.isdigit():
                child = _stat(int(entry.name))
                if child is not None and child[1] == str(self.postmaster):
                    ticks += int(child[11]) + int(child[12])
        return ticks / self.tick


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds of one command: its own processes' and the server's (None: not measurable here)."""

    command: float
    server: float | None

    @property
    def total(self) -> float | None:
        return None if self.server is None else self.command + self.server

    def __str__(self) -> str:
        server = "not measurable here" if self.server is None else f"{self.server:.1f} s"
        return f"command {self.command:.1f} s + server {server}"


def median_use(uses: Sequence[CpuUse]) -> CpuUse:
    servers = [u.server for u in uses]
    return CpuUse(
        statistics.median(u.command for u in uses),
        None if any(s is None for s in servers) else statistics.median(s for s in servers if s is not None),
    )


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def explained(flow: CpuUse, copy: CpuUse, copy_seconds: float) -> str:
    """The flow's CPU against \\copy's, and the shortest time the flow's CPU allows on this machine."""
    if flow.total is None or copy.total is None:
        return f"flow: the command {flow.command:.1f}, \\copy: psql {copy.command:.1f} (the server's not measurable here)"
    n = cores()
    floor = flow.total / n
    return (
        f"flow {flow.total:.1f} (the command with its Prefect server and helpers {flow.command:.1f}, "
        f"PostgreSQL {flow.server:.1f}): at least {floor:.1f} s on {n} cores, a ratio of at least "
        f"{floor / copy_seconds:.2f}; \\copy {copy.total:.1f} (psql {copy.command:.1f}, "
        f"PostgreSQL {copy.server:.1f})"
    )


class CpuMeter:
    """Around one command: start() before it, stop() as soon as it has been waited for (before
    anything else runs on the server, such as dropping the command's database); `use` is then what
    it used."""

    def __init__(self, server: ServerCpu | None) -> None:
        self.server = server
        self._at: tuple[float, float | None] = (0.0, None)
        self.use: CpuUse | None = None

    def start(self) -> None:
        self._at = (children_seconds(), self.server.seconds() if self.server else None)

    def stop(self) -> CpuUse:
        command, server = self._at
        if self.server is not None:
            self.server.settled()
        self.use = CpuUse(
            children_seconds() - command,
            None if self.server is None or server is None else self.server.seconds() - server,
        )
        return self.use
