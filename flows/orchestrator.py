"""The temporary Prefect server a command uses when no Prefect API is configured.

Prefect would start one itself on the first flow call, but it imports the whole server application
into this process to do so (about 65 MB and a second), and starts only when the flow begins. Here
the same server (the same uvicorn command and environment Prefect's ephemeral mode uses) is spawned
as a subprocess, and this process talks to it over HTTP like any client. It is stopped when the
command ends.

It boots in about 2 s of CPU, mostly imports, so it is spawned as early as possible: a command
started as `python -m flows.<command>` spawns it from `flows/__init__.py` (boot_early), before this
process spends its own second importing Prefect, pandas and pandera; start() adopts that server, or
stops it when the settings turn out to name a Prefect API after all.

Two things would otherwise sit between the server answering and the first flow run starting:
- FastAPI builds its routes' validation models on the first API request (about 0.15 s of CPU). A
  thread asks for the API version as soon as the server answers, while this process is still
  importing or pre-checking its input, so the flow's own first request finds the routes built.
- The automations service (triggers) evaluates every new flow run; its first evaluation costs about
  0.2 s, and it keeps working through the run. A server that lives for one command runs no
  automations, so it is off unless PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED says otherwise; point
  PREFECT_API_URL at a long-lived server for automations.
"""

from __future__ import annotations

import atexit
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The server process: uvicorn serving Prefect's app factory, as Prefect's ephemeral mode runs it,
# with the cyclic garbage collector off while the app is imported and built (a fifth of that CPU
# went to collections that found nothing); what survives start-up is frozen, then collection resumes.
# -P keeps the working directory off sys.path: nothing there may shadow the server's imports.
_SERVE = """
import gc, sys
gc.disable()

def create_app():
    from prefect.server.api.server import create_app
    app = create_app()
    gc.freeze()
    gc.enable()
    return app

from uvicorn.main import main
main(sys.argv[1:])
"""


class TemporaryServer:
    def __init__(self, settings: dict[str, str] | None = None) -> None:
        """settings: Prefect settings of this process that the environment does not carry."""
        self.port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        env = {
            "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
            **os.environ,
            **(settings or {}),
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-P",
                "-c",
                _SERVE,
                "--factory",
                "__main__:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        atexit.register(self.stop)
        self._answered = threading.Event()
        threading.Thread(target=self._warm_up, name="prefect-server-warm-up", daemon=True).start()

    def _get(self, path: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", f"/api{path}")
            return conn.getresponse().status
        finally:
            conn.close()

    def _warm_up(self) -> None:
        """Poll until the server answers, then make the request that builds FastAPI's routes."""
        while self.process.poll() is None:
            try:
                if self._get("/health") == 200:
                    self._get("/admin/version")
                    break
            except OSError:
                pass
            time.sleep(0.05)
        self._answered.set()  # answered, or exited: wait() tells which

    def wait(self, timeout: float) -> None:
        answered = self._answered.wait(timeout)
        if self.process.poll() is not None:
            said = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
            last = (said.strip().splitlines() or [""])[-1][-500:]
            raise RuntimeError(f"the temporary Prefect server exited ({self.process.returncode}): {last}")
        if not answered:
            raise RuntimeError(f"the temporary Prefect server did not answer within {timeout:.0f}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def needed() -> bool:
    """True when no Prefect API is configured and Prefect would start a temporary server itself."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    return not PREFECT_API_URL.value() and bool(PREFECT_SERVER_EPHEMERAL_ENABLED.value())


# Commands that run no flow: no server is spawned early for them.
_NO_FLOW = {("schema", "status"), ("schema", "sql"), ("branches", "list"), ("phase1", "inspect")}
_early: TemporaryServer | None = None


def command_of(argv: Sequence[str]) -> tuple[str, list[str]] | None:
    """(command, its arguments) when an interpreter started with argv (sys.orig_argv) runs a
    command, `python -m flows.<command> …`; else None."""
    argv = list(argv)
    if "-m" not in argv[:-1]:
        return None
    at = argv.index("-m")
    module, args = argv[at + 1], argv[at + 2 :]
    command = module.removeprefix("flows.")
    if command == module or command in ("orchestrator", "cli", "startup"):
        return None
    return command, args


def runs_a_flow(argv: Sequence[str]) -> bool:
    """Whether argv (sys.orig_argv) runs a flow command: not --help and not a command that only
    reads (schema status, …)."""
    found = command_of(argv)
    if found is None or {"-h", "--help"} & set(found[1]):
        return False
    command, args = found
    return (command, args[0] if args else "") not in _NO_FLOW


def boot_early(argv: Sequence[str] | None = None) -> None:
    """Spawn the temporary server now, before Prefect is imported: for a flow command (argv:
    sys.orig_argv, see runs_a_flow) or, without argv, unconditionally. Skipped when
    PREFECT_API_URL is set; a profile that names an API is only known once Prefect is imported,
    and start() stops the server then."""
    global _early
    if _early is not None or os.environ.get("PREFECT_API_URL"):
        return
    if argv is None or runs_a_flow(argv):
        _early = TemporaryServer()


def start() -> TemporaryServer | None:
    """The temporary server, if one is needed: the one boot_early() spawned, or a new one (it boots
    in the background until connected() waits for it)."""
    global _early
    early, _early = _early, None
    if needed():
        if early is not None:
            return early
        from prefect.settings import get_current_settings

        return TemporaryServer(get_current_settings().to_environment_variables(exclude_unset=True))
    if early is not None:
        early.stop()
    return None


@contextmanager
def connected(server: TemporaryServer | None) -> Iterator[None]:
    """Flows called inside talk to `server` (waited for here); stopped on the way out."""
    if server is None:
        yield
        return
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    # No flow-run heartbeats: they let a long-lived server notice a crashed run, but this server
    # ends with the command, and Prefect joins the heartbeat thread (which sleeps in 1 s steps) at
    # the end of every flow run, which cost up to a second per command.
    settings = {PREFECT_API_URL: server.api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    try:
        _import_what_a_flow_call_imports()
        server.wait(float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()))
        with temporary_settings(updates=settings):
            try:
                yield
            finally:
                _drain()
    finally:
        server.stop()


def _import_what_a_flow_call_imports() -> None:
    """Prefect imports these on a process's first flow call (about 0.1 s, FastAPI's encoders for
    the parameters among them); imported here, they load while the server may still be booting
    rather than on the flow's critical path."""
    import fastapi.encoders  # noqa: F401
    import prefect.flow_engine  # noqa: F401
    import prefect.utilities.visualization  # noqa: F401


def _drain(timeout: float = 10.0) -> None:
    """Send the logs and events still queued while the server is up (Prefect would otherwise try
    at interpreter exit, after the server is gone, and print connection errors)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=timeout)
