"""A real `prefect server start` for the tests that need Prefect outside this process's test harness
(served deployments, process workers, the UI, Prefect's own database searched afterwards): on a
free loopback port with a PREFECT_HOME of its own, handed out once it answers, and stopped with
every process started beside it (each in its own process group, so its children go too)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from flows.orchestrator import free_port
from tests.conftest import ROOT


def wait_for(what: str, check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Served:
    """The running server: its API, the environment that talks to it, and what else was started."""

    def __init__(self, home: Path, env: Mapping[str, str], port: int) -> None:
        self.home = home
        self.api = f"http://127.0.0.1:{port}/api"
        self.env = {**env, "PREFECT_HOME": str(home), "PREFECT_API_URL": self.api}
        self.started: list[subprocess.Popen] = []

    def spawn(self, args: list[str], log: str | None = None) -> subprocess.Popen:
        """`python ARGS` in the repository with the server's environment; output to HOME/log or nowhere."""
        out = (self.home / log).open("w") if log else subprocess.DEVNULL
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.started.append(proc)
        return proc


@contextmanager
def prefect_server(home: Path, env: Mapping[str, str] | None = None, *, ui: bool = False) -> Iterator[Served]:
    """A server whose database and logs live in home; env adds to this process's environment."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    served = Served(
        home,
        {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
         "PREFECT_LOGGING_LEVEL": "WARNING", **(env or {})},
        port,
    )
    try:
        served.spawn(
            ["-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port), *([] if ui else ["--no-ui"])],
            "server.log",
        )
        wait_for("the Prefect server", lambda: httpx.get(f"{served.api}/health", timeout=2).status_code == 200, 180)
        yield served
    finally:
        for proc in reversed(served.started):
            stop(proc)
