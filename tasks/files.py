"""The files of a run: each one pre-checked on its own (a bad file is refused whole, with its
one-line reason, and the others go on), then all their records in one stream of chunks, so that
many small files share a COPY and a transaction instead of costing one each."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from tasks.mapping import FieldMapping
from tasks.source import (
    Chunk,
    ReadOptions,
    SourceError,
    SourceInfo,
    chunked,
    file_sha256,
    iter_batches,
    precheck,
)
from tasks.sources import FileSource


@dataclass(frozen=True)
class RunFile:
    no: int  # its number in the run (stable: the files are sorted by legacy source)
    source: FileSource
    info: SourceInfo | None  # its pre-check (None: refused, unchanged, or not checked yet)
    error: str | None = None  # why it was refused, one line
    closed: bool = False  # its legacy source was closed at cutover: refused
    unchanged: bool = False  # what its source's last sync read, nothing left to do (tasks/resync.py)
    sha256: str | None = None  # of the file as the run found it, before any pre-check

    @property
    def refused(self) -> bool:
        return self.error is not None

    @property
    def pending(self) -> bool:
        """Found, not pre-checked yet."""
        return self.info is None and not self.refused and not self.unchanged

    @property
    def accepted(self) -> bool:
        """Migrated by the run: its records streamed, or counted unchanged."""
        return (self.info is not None or self.unchanged) and not self.refused

    @property
    def streamed(self) -> bool:
        """Its records pass through the load (an unchanged file's are counted, not read again)."""
        return self.info is not None and not self.unchanged and not self.refused

    @property
    def digest(self) -> str | None:
        """The sha256 of what the run read (its pre-check's), or of what it found."""
        return self.info.sha256 if self.info is not None else self.sha256

    @property
    def records(self) -> int:
        return self.info.records if self.info is not None else 0


def found_files(sources: Sequence[FileSource]) -> list[RunFile]:
    """Every file with its sha256 and nothing more (one read, in C): a re-sync tells the unchanged
    files by it before it pre-checks the others. One that cannot be read is left to the pre-check,
    which says why in one line."""
    return [RunFile(no, source, None, sha256=file_sha256(source.path)) for no, source in enumerate(sources)]


def check_files(files: Sequence[RunFile], mapping: FieldMapping, options: ReadOptions) -> list[RunFile]:
    """Every pending file pre-checked on its own; one that cannot be migrated is refused with its reason."""
    out = []
    for f in files:
        if not f.pending:
            out.append(f)
            continue
        try:
            out.append(replace(f, info=precheck(f.source.path, mapping, options)))
        except SourceError as exc:
            out.append(replace(f, error=str(exc)))
    return out


def iter_run_chunks(files: Sequence[RunFile], mapping: FieldMapping, chunk_size: int) -> Iterator[Chunk]:
    """The records of every streamed file, in file order, in chunks of chunk_size records."""

    def batches() -> Iterator:
        for f in files:
            if f.streamed and f.info is not None:
                yield from iter_batches(f.info, mapping, f.no)

    return chunked(batches(), chunk_size)
