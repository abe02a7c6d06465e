"""How busy the machine's cores were while a benchmark ran, phase by phase.

A phase that keeps every core busy is bound by CPU: the flow's load (a Python process transforming
and rendering, two COPY backends writing) against `psql \\copy` (one backend, psql beside it). Such a
phase gets faster only with less work, not with more processes or threads. Read from /proc/stat
(Linux); elsewhere nothing is sampled and nothing is printed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path

STAT = Path("/proc/stat")


class Cores:
    """Samples of the machine's CPU time, taken while a command runs (see timed_process)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int, int]] = []  # (epoch, busy ticks, all ticks)

    def sample(self) -> None:
        try:
            fields = [int(v) for v in STAT.read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return
        idle = fields[3] + fields[4]  # idle and iowait
        self.samples.append((time.time(), sum(fields) - idle, sum(fields)))

    def busy(self, start: float = 0.0, end: float = math.inf) -> float | None:
        """The share of all cores busy between two moments (epoch seconds; by default all that was
        sampled), from the samples that bracket them most closely within; None without two there."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2 or inside[-1][2] == inside[0][2]:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][2] - inside[0][2])

    def by_phase(self, parts: Mapping[str, float], started: float, at_least: float = 0.5) -> dict[str, float]:
        """Busy share per phase of a breakdown (phases in order from `started`), for the phases
        that lasted at least `at_least` seconds."""
        out: dict[str, float] = {}
        at = started
        for phase, seconds in parts.items():
            share = self.busy(at, at + seconds) if seconds >= at_least else None
            if share is not None:
                out[phase] = share
            at += max(seconds, 0.0)
        return out


def shown(shares: Mapping[str, float]) -> str:
    return ", ".join(f"{phase} {share:.0%}" for phase, share in shares.items())
