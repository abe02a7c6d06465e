"""The temporary Prefect server a command uses when no Prefect API is configured.

Prefect's own ephemeral mode would start one on the first flow call, but it imports the whole
server application into the command's process first (about 2.5 s here before the server process
is even spawned), and only once the flow begins. A command instead starts Prefect's documented server command,
`prefect server start`, as a child process from its main, once its arguments are checked: the
server boots while the command checks its input, the flow talks to it over HTTP as to any Prefect
server, and it is stopped when the command's process exits.

It runs what Prefect's ephemeral server runs, chosen with Prefect's documented settings: no UI, and
none of the services that act on deployments, schedules or other processes' runs. Automations
(the triggers service) are off too unless PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED says otherwise:
a server that lives for one command has none to run, and it would evaluate every new run for them. Set PREFECT_API_URL to record runs in a long-lived server instead, see them in its UI
and have automations act on them.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tasks.errors import Unavailable

# Services of a full server that Prefect's ephemeral server does not run (they serve deployments,
# schedules, workers and runs of other processes), plus automations; the environment overrides any.
QUIET_SERVICES = {
    f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false"
    for name in (
        "SCHEDULER",
        "LATE_RUNS",
        "FOREMAN",
        "CANCELLATION_CLEANUP",
        "PAUSE_EXPIRATIONS",
        "REPOSSESSOR",
        "CLEANUP_RECONCILER",
        "TRIGGERS",
    )
}


def free_port() -> int:
    """A loopback port nobody listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TemporaryServer:
    """`prefect server start` on a free loopback port, for this process's lifetime at most."""

    def __init__(self) -> None:
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        # Its output goes to a file, not a pipe: a server that logs more than a pipe holds must never
        # block on it. Wide lines, so that a refusal (printed by rich) stays one line.
        self._output = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-ui",
                "--log-level",
                "ERROR",
            ],
            env={**QUIET_SERVICES, **os.environ, "COLUMNS": "1000"},
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )
        # Stopped at exit, after Prefect has sent the logs and events still queued: it does so when
        # the interpreter's threads shut down, which is before atexit handlers run.
        atexit.register(self.stop)
        self._answered = threading.Event()
        threading.Thread(target=self._warm_up, name="prefect-server-warm-up", daemon=True).start()

    def _request(self, path: str, body: str | None = None) -> int:
        """GET path, or POST body (JSON) to it: the status."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request("GET" if body is None else "POST", f"/api{path}", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def _warm_up(self) -> None:
        """Poll until the server answers, then ask for its version: FastAPI builds its routes'
        validation models on the first request (about 0.15 s), better now than in the flow's. Once
        it counts as answered, list one flow run: the first request about flow runs sets them up
        (0.21-0.28 s here), which the flow's own creation would otherwise wait for; the command is
        often still preparing then (a big file's pre-check, a user base's files), the server idle."""
        while self.process.poll() is None:
            try:
                if self._request("/health") == 200:
                    self._request("/admin/version")
                    break
            except OSError:
                pass
            time.sleep(0.05)
        self._answered.set()  # answered, or exited: wait() tells which
        with contextlib.suppress(OSError, http.client.HTTPException):  # a server gone meanwhile: wait() says
            self._request("/flow_runs/filter", '{"limit": 1}')

    def wait(self, timeout: float) -> None:
        """Until the server answers; Unavailable (exit 3, one line: the server's last) if it cannot."""
        answered = self._answered.wait(timeout)
        if self.process.poll() is not None:
            self._output.seek(0)
            said = self._output.read().decode(errors="replace").splitlines()
            last = next((line for line in reversed(said) if line.strip()), "")[-500:]
            raise Unavailable(f"the temporary Prefect server exited ({self.process.returncode}): {last}")
        if not answered:
            raise Unavailable(f"the temporary Prefect server did not answer within {timeout:.0f}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._output.close()


def needed() -> bool:
    """Whether Prefect, as configured, would start a temporary server itself: no API URL (in the
    environment or the active profile) and PREFECT_SERVER_EPHEMERAL_ENABLED (on in Prefect's
    default profile)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    return not PREFECT_API_URL.value() and bool(PREFECT_SERVER_EPHEMERAL_ENABLED.value())


def start() -> TemporaryServer | None:
    """A temporary server, unless PREFECT_API_URL is set, or MIGRATION_TEMPORARY_SERVER=prefect
    leaves it to Prefect's own ephemeral mode. Decided from the environment alone, so that a command
    may call it before it imports Prefect and the server boots side by side with those imports;
    connected() checks Prefect's settings and stops it if they name an API."""
    if os.environ.get("PREFECT_API_URL") or os.environ.get("MIGRATION_TEMPORARY_SERVER") == "prefect":
        return None
    return TemporaryServer()


@contextmanager
def connected(server: TemporaryServer | None) -> Iterator[None]:
    """Flows called inside talk to `server` (waited for here first); None: to Prefect as configured."""
    if server is not None and not needed():
        server.stop()
        server = None
    if server is None:
        yield
        return
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    server.wait(float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()))
    # No flow-run heartbeats: they let a long-lived server notice a crashed run, but this one ends
    # with the command, and Prefect joins the heartbeat thread (which sleeps in 1 s steps) at the
    # end of every flow run, up to a second per command.
    with temporary_settings(
        updates={PREFECT_API_URL: server.api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    ):
        yield
