"""The files of a run: each one pre-checked on its own (a bad file is refused whole, with its
one-line reason, and the others go on), then all their records in one stream of chunks, so that
many small files share a COPY and a transaction instead of costing one each."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from tasks.mapping import FieldMapping
from tasks.source import Chunk, ReadOptions, SourceError, SourceInfo, chunked, iter_batches, precheck
from tasks.sources import FileSource


@dataclass(frozen=True)
class RunFile:
    no: int  # its number in the run (stable: the files are sorted by legacy source)
    source: FileSource
    info: SourceInfo | None  # None: refused whole
    error: str | None = None  # why it was refused, one line
    closed: bool = False  # its legacy source was closed at cutover: refused
    unchanged: bool = False  # what its source's last sync read, nothing left to do (tasks/resync.py)

    @property
    def accepted(self) -> bool:
        return self.info is not None and not self.closed

    @property
    def streamed(self) -> bool:
        """Its records pass through the load (an unchanged file's are counted, not read again)."""
        return self.accepted and not self.unchanged

    @property
    def records(self) -> int:
        return self.info.records if self.info is not None else 0


def precheck_files(
    sources: Sequence[FileSource], mapping: FieldMapping, options: ReadOptions, closed: frozenset[str] = frozenset()
) -> list[RunFile]:
    """Every file pre-checked on its own; one that cannot be migrated is refused with its reason."""
    out = []
    for no, source in enumerate(sources):
        if source.legacy_source in closed:
            out.append(RunFile(no, source, None, f"{source.path}: source {source.legacy_source} was closed at cutover", True))
            continue
        try:
            out.append(RunFile(no, source, precheck(source.path, mapping, options)))
        except SourceError as exc:
            out.append(RunFile(no, source, None, str(exc)))
    return out


def iter_run_chunks(files: Sequence[RunFile], mapping: FieldMapping, chunk_size: int) -> Iterator[Chunk]:
    """The records of every streamed file, in file order, in chunks of chunk_size records."""

    def batches() -> Iterator:
        for f in files:
            if f.streamed and f.info is not None:
                yield from iter_batches(f.info, mapping, f.no)

    return chunked(batches(), chunk_size)
