"""Progress: flows announce (stage, done, total) to listeners (the CLI's bar, tests), and keep a
Prefect progress artifact up to date without waiting for the API."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable

Listener = Callable[[str, int, int], None]
_listeners: list[Listener] = []


def listen(listener: Listener) -> Callable[[], None]:
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def emit(stage: str, done: int, total: int) -> None:
    for listener in list(_listeners):
        listener(stage, done, total)


class ProgressArtifact:
    """A Prefect progress artifact updated from a thread of its own. An update is an API call (about
    6 ms here, and as much again of the server's CPU, which the work being reported needs);
    update() only records the newest state and returns, and the thread sends the newest one at most
    every `interval` seconds, skipping states already overtaken. close() sends the last state and
    stops the thread."""

    def __init__(self, key: str, description: str, interval: float = 0.5) -> None:
        from prefect.artifacts import create_progress_artifact

        self.interval = interval
        self.artifact = create_progress_artifact(0.0, key=key, description=description)
        self._latest: tuple[float, str | None] | None = None
        self._sent = 0.0
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._stop = False
        context = contextvars.copy_context()  # the flow run's settings and client, in that thread too
        self._thread = threading.Thread(target=context.run, args=(self._send,), daemon=True)
        self._thread.start()

    def update(self, percent: float, description: str | None = None) -> None:
        self._latest = (percent, description)
        self._wake.set()

    def _send(self) -> None:
        from prefect.artifacts import update_progress_artifact

        while True:
            self._wake.wait()
            self._wake.clear()
            latest, self._latest = self._latest, None
            if latest is not None and (latest[1] is not None or latest[0] != self._sent):
                update_progress_artifact(self.artifact, latest[0], description=latest[1])
                self._sent = latest[0]
                self._closing.wait(self.interval)
            if self._stop and self._latest is None:
                return

    def close(self) -> None:
        self._stop = True
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout=30)
