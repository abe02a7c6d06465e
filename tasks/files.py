"""The files of a run, in one stream of records: each file is pre-checked on its own when its turn
comes (a bad file is refused whole, with its one-line reason, and the others go on), then its
records join the stream, so that many small files share a COPY and a transaction instead of
costing one each. A small file is parsed once (tasks/source.py checked_batches); a run of many has
them pre-checked by a helper process ahead of the load (tasks/prefetch.py). Once a file's records
have passed, the run keeps only what its report row and reconciliation need."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace

from tasks.filestat import settled, stat_key
from tasks.inference import Holdings
from tasks.mapping import FieldMapping
from tasks.prefetch import FROM_FILES as PREFETCH_FROM
from tasks.prefetch import Prefetched
from tasks.source import (
    Batch,
    Chunk,
    ReadOptions,
    SourceError,
    SourceInfo,
    checked_batches,
    chunked,
    file_digest,
    iter_batches,
)
from tasks.sources import FileSource

Check = Callable[[int, str], tuple[SourceInfo, Iterable[Batch]]]  # (file no, path) -> checked_batches()


# Not frozen: a re-sync marks its unchanged files where they stand (Job.mark_unchanged), and a frozen
# dataclass costs twice as much to make (100,000 files: 0.2 s against 0.1).
@dataclass(slots=True)
class RunFile:
    no: int  # its number in the run (stable: the files are sorted by legacy source)
    source: FileSource
    info: SourceInfo | None = None  # its pre-check, when the run has it whole (a single file's)
    error: str | None = None  # why it was refused, one line
    closed: bool = False  # its legacy source was closed at cutover: refused
    unchanged: bool = False  # what its source's last sync read, nothing left to do (tasks/resync.py)
    sha256: str | None = None  # of the file as found, if hashed then; once pre-checked, of what the run read
    size: int = 0  # bytes, likewise
    stat: int | None = None  # its stat key as found (tasks/filestat.py); once pre-checked, as read if it vouches
    settled: bool = False  # its stat as found may vouch for its bytes (a re-sync's quick check)
    checked: bool = False  # pre-checked and accepted: its records stream
    records: int = 0  # its records, once pre-checked
    salvaged: str | None = None  # where a file cut short was cut (Cut.describe()), once pre-checked

    @classmethod
    def of(cls, no: int, source: FileSource, info: SourceInfo, keep: bool = False) -> RunFile:
        """A file pre-checked with info (kept whole only when asked: a run of one file)."""
        return RunFile(no, source).with_check(info, keep)

    def with_check(self, info: SourceInfo, keep: bool = False) -> RunFile:
        return replace(
            self,
            info=info if keep else None,
            # the values found, where the pre-check read the same: no copy of them made during the load
            sha256=self.sha256 if self.sha256 == info.sha256 else info.sha256,
            size=self.size if self.size == info.size else info.size,
            stat=info.stat,
            checked=True,
            records=info.records,
            salvaged=info.cut.describe() if info.cut else None,
        )

    @property
    def refused(self) -> bool:
        return self.error is not None

    @property
    def status(self) -> str:
        """What its row in the run's Files table says (tasks/file_results.py)."""
        return "closed" if self.closed else "rejected" if self.refused else "unchanged" if self.unchanged else "loaded"

    @property
    def pending(self) -> bool:
        """Found, not pre-checked yet."""
        return not self.checked and not self.refused and not self.unchanged

    @property
    def accepted(self) -> bool:
        """Migrated by the run: its records streamed, or counted unchanged."""
        return (self.checked or self.unchanged) and not self.refused

    @property
    def streamed(self) -> bool:
        """Its records pass through the load (an unchanged file's are counted, not read again)."""
        return self.checked and not self.unchanged and not self.refused

    @property
    def to_stream(self) -> bool:
        """Its records go to the load, which may still refuse it (pending, or checked)."""
        return not self.refused and not self.unchanged

    @property
    def digest(self) -> str | None:
        """The sha256 of what the run read (its pre-check's), or of what it found."""
        return self.sha256


def found_files(sources: Sequence[FileSource], *, hashed: bool = False) -> list[RunFile]:
    """Every file with its size and stat key and nothing more: a re-sync tells the unchanged files
    by them before the others are read (tasks/resync.py), and a resumed run the same files. A file
    whose stat cannot vouch for its bytes (changed a moment ago), or every file when `hashed` (the
    last sync, at cutover), is also hashed (one read, in C). One that cannot be read is left to the
    pre-check, which says why in one line."""
    out, taken = [], time.time_ns()  # before any stat: a file settled then was settled at its stat
    for no, source in enumerate(sources):
        if source.error is not None:  # refused before it is read (it names no owner)
            out.append(RunFile(no, source, error=source.error))
            continue
        try:
            st = os.stat(source.path)
        except OSError:
            out.append(RunFile(no, source))
            continue
        if not hashed and settled(st, taken):
            out.append(RunFile(no, source, size=st.st_size, stat=stat_key(st), settled=True))
            continue
        found = file_digest(source.path)
        sha, size = found if found else (None, st.st_size)
        out.append(RunFile(no, source, sha256=sha, size=size, stat=stat_key(st)))
    return out


class FileStream:
    """The records of a run's files in file order, each pending file pre-checked as its turn comes.

    `files` is the run's files as the stream leaves them (checked, or refused with the reason): a
    list given is that very list, updated in place as each file is checked, so that a file is held
    once, not as found and again as checked. Nothing new that lives as long as the run is made while
    records stream: such objects, made among each chunk's short-lived ones, kept their memory from
    being given back (100,000 files, bench/phase1_fleet.py, three pairs: peak RSS 284-285 MiB against
    294-297). `held` sums what the accepted files hold (the report's inference account); `infos`
    holds the pre-check of each file whose records are passing, until the load takes it (take())."""

    def __init__(self, files: Sequence[RunFile], mapping: FieldMapping, options: ReadOptions) -> None:
        self.files = files if isinstance(files, list) else list(files)
        self.mapping, self.options = mapping, options
        self.held = Holdings()
        self.infos: dict[int, SourceInfo] = {}
        self.read_bytes = self.read_records = 0
        self.bytes_left = sum(f.size for f in self.files if f.pending)  # of the files not read yet, as found

    def batches(self) -> Iterator[Batch]:
        todo = [(f.no, f.source.path) for f in self.files if f.pending]
        with ExitStack() as stack:
            check = (
                stack.enter_context(Prefetched(todo, self.mapping, self.options)).checked
                if len(todo) >= PREFETCH_FROM
                else self._check_here
            )
            del todo  # 100,000 (file, path) pairs: the helper has them
            for i in range(len(self.files)):
                f = self.files[i]
                if f.refused or f.unchanged:
                    continue
                found = self._check(i, f, check)
                if found is None:
                    continue
                info, batches = found
                self.infos[f.no] = info
                self.held.add(info, self.mapping)
                self.read_bytes += info.size
                self.read_records += info.records
                yield from batches

    def _check_here(self, no: int, path: str) -> tuple[SourceInfo, Iterable[Batch]]:
        return checked_batches(path, self.mapping, self.options, no)

    def _check(self, i: int, f: RunFile, check: Check) -> tuple[SourceInfo, Iterable[Batch]] | None:
        if f.info is not None:  # pre-checked whole before the run (a single file)
            return f.info, iter_batches(f.info, self.mapping, f.no)
        self.bytes_left -= f.size
        try:
            info, batches = check(f.no, f.source.path)
        except SourceError as exc:
            self.files[i] = replace(f, error=str(exc))
            return None
        self.files[i] = f.with_check(info)
        return info, batches

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        """The stream in chunks of chunk_size records: the same files give the same chunks (a
        refused file gives none), so a resumed run skips exactly the chunks already committed."""
        return chunked(self.batches(), chunk_size)

    def take(self, no: int) -> SourceInfo:
        """The pre-check of a file whose records are passing (asked once per file)."""
        return self.infos.pop(no)

    def expected_records(self) -> int:
        """The records the stream will give: exact once every file is read, until then the records
        read so far and the rest estimated from the bytes left (for progress)."""
        if self.bytes_left <= 0:
            return self.read_records
        per_byte = self.read_records / self.read_bytes if self.read_bytes else 0.01
        return self.read_records + round(self.bytes_left * per_byte)
