"""Pre-check a run's files in a helper process, ahead of the load.

A run of many small files spends most of its Python time opening, decoding and surveying each file
(tasks/source.py checked_batches), on the thread that also maps, transforms and renders the records:
one core, which the GIL keeps a thread from sharing. Here a helper process (`python -m
tasks.prefetch`) pre-checks the files in the run's order, a group of files ahead, and sends each
one's result back -- its SourceInfo and the batches it decoded, or the one-line reason it was
refused -- so that the load takes exactly what checking the file itself would have given, while the
checks run on the other core.

The helper only reads files; nothing it does touches the database. If it cannot be started, or stops
before the last file, the load checks the rest itself: a slower run, never another one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from tasks.mapping import FieldMapping
from tasks.shapes import Batch
from tasks.source import ReadOptions, SourceError, SourceInfo, checked_batches

log = logging.getLogger(__name__)

# A run pre-checks its files in a helper once it has at least this many to read: the helper's
# start (an interpreter, then what tasks.source needs) costs about 0.4 s of the other core.
FROM_FILES = 200
# A group of results sent at once: at least GROUP_FILES files, or GROUP_BYTES of them. The helper
# works one group ahead of the load (the pipe holds less than a group, so it waits there).
GROUP_FILES = 64
GROUP_BYTES = 1 << 20
PIPE_BYTES = 1 << 20  # results in flight: a chunk's files or more (Linux's default limit for a user)

Checked = tuple[SourceInfo, Iterable[Batch]]
_Result = tuple[int, SourceInfo | None, list[Batch] | None, str | None]  # (file, info, kept batches, refusal)


def _send(out: IO[bytes], value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(len(data).to_bytes(8, "little"))
    out.write(data)
    out.flush()


def _receive(inp: IO[bytes]) -> Any:
    head = inp.read(8)
    if len(head) < 8:
        raise EOFError("the pre-check helper's output ended")
    size = int.from_bytes(head, "little")
    data = inp.read(size)
    if len(data) < size:
        raise EOFError("the pre-check helper's output ended inside a message")
    return pickle.loads(data)  # our own helper's output, never a file's


class Prefetched:
    """checked(no, path) for the files of `todo` in their order: what checked_batches() gives, from
    the helper while it runs, else checked here."""

    def __init__(self, todo: Sequence[tuple[int, str]], mapping: FieldMapping, options: ReadOptions) -> None:
        self.mapping, self.options = mapping, options
        self.pending: dict[int, _Result] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr: IO[bytes] | None = None
        try:
            self._start(todo)
        except OSError as exc:
            log.warning("the pre-check helper could not start (%s); the files are checked in this process", exc)
            self.close()

    def _start(self, todo: Sequence[tuple[int, str]]) -> None:
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        with tempfile.TemporaryFile() as job:  # its stdin: the job is written whole, nobody waits on a pipe
            _send(job, (list(todo), self.mapping.spec, self.options))
            job.seek(0)
            self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - read if it fails, closed with it
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tasks.prefetch"], stdin=job, stdout=subprocess.PIPE, stderr=self.stderr, env=env
            )
        _widen(self.proc.stdout)

    def checked(self, no: int, path: str) -> Checked:
        result = self._take(no)
        if result is None:  # no helper (any more): as the load always did
            return checked_batches(path, self.mapping, self.options, no)
        _, info, kept, refusal = result
        if refusal is not None:
            raise SourceError(refusal)
        assert info is not None
        return info, kept if kept is not None else _read_again(info, self.mapping, no)

    def _take(self, no: int) -> _Result | None:
        while self.proc is not None and no not in self.pending:
            assert self.proc.stdout is not None
            try:
                group = _receive(self.proc.stdout)
            except (EOFError, OSError, pickle.UnpicklingError) as exc:
                self._stopped(str(exc))
                return None
            self.pending.update((r[0], r) for r in group)
        return self.pending.pop(no, None)

    def _stopped(self, why: str) -> None:
        said = ""
        if self.proc is not None and self.stderr is not None:
            code = self.proc.wait()
            self.stderr.seek(0)
            lines = [line for line in self.stderr.read().decode(errors="replace").splitlines() if line.strip()]
            said = f" (exit {code}{': ' + lines[-1][-300:] if lines else ''})"
        log.warning("the pre-check helper stopped: %s%s; the rest of the files are checked in this process", why, said)
        self.close()

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None

    def __enter__(self) -> Prefetched:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _widen(pipe: IO[bytes] | None) -> None:
    """Let the pipe hold PIPE_BYTES, where the system allows (Linux): the load takes a chunk's files
    in a burst, then transforms them; meanwhile the helper must be able to run that far ahead."""
    import fcntl

    setting = getattr(fcntl, "F_SETPIPE_SZ", None)
    if pipe is None or setting is None:
        return
    with contextlib.suppress(OSError):  # over this system's limit: the default pipe, waited on more often
        fcntl.fcntl(pipe.fileno(), setting, PIPE_BYTES)


def _read_again(info: SourceInfo, mapping: FieldMapping, no: int) -> Iterator[Batch]:
    from tasks.source import iter_batches

    return iter_batches(info, mapping, no)


def serve(inp: IO[bytes], out: IO[bytes]) -> None:
    """The helper: pre-check each file of the job read from inp, in order; send the results in groups."""
    from tasks import interpreter

    todo, spec, options = _receive(inp)
    mapping = FieldMapping.from_spec(spec)
    group: list[_Result] = []
    size = 0
    with interpreter.settled():
        for no, path in todo:
            try:
                info, batches = checked_batches(path, mapping, options, no)
            except SourceError as exc:
                group.append((no, None, None, str(exc)))
            else:
                kept = batches if isinstance(batches, list) else None
                group.append((no, info, kept, None))
                size += info.size
            if len(group) >= GROUP_FILES or size >= GROUP_BYTES:
                _send(out, group)
                group, size = [], 0
    if group:
        _send(out, group)


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the run decides, and stops us
    try:
        serve(sys.stdin.buffer, sys.stdout.buffer)
    except BrokenPipeError:  # the run ended first
        sys.exit(0)
