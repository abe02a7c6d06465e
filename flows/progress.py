"""Progress listeners: flows announce (stage, done, total); the CLI shows a bar, tests may listen."""

from __future__ import annotations

from collections.abc import Callable

Listener = Callable[[str, int, int], None]
_listeners: list[Listener] = []


def listen(listener: Listener) -> Callable[[], None]:
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def emit(stage: str, done: int, total: int) -> None:
    for listener in list(_listeners):
        listener(stage, done, total)
