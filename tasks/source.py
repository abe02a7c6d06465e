"""Read a Phase 1 file: pre-check the whole of it, then stream its records in chunks.

Phase 1 CLIs wrote either `{"tasks": [...], ...}` or a bare `[...]`. Nothing is loaded whole: the
pre-check streams the file once (well-formedness, sha256, record count, duplicate ids) and the load
streams it again, so memory stays bounded by the chunk size whatever the file's size.

One decoder, the standard library's: it is exact (a lone `\\ud800` stays what it is, a number with a
fraction stays a Decimal, NaN is refused) and it says where a broken file breaks, by line and column.
It takes the records a block (about 1 MB) at a time: the block is cut after the last `}` followed by
`,` and `{`, and the records before the cut are decoded in one call. A cut that falls inside a
string or a nested object cannot decode (the text would end inside a value), so a block that
decodes is exactly whole records; one that does not is read record by record instead, which also
finds and locates any real error.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from tasks.errors import InputError

BLOCK = 1 << 20
MAX_ELEMENT = 64 << 20
UTF8_BOM = b"\xef\xbb\xbf"


class SourceError(InputError):
    """The source file cannot be migrated as a whole; the message is one line naming the file."""


@dataclass(frozen=True)
class SourceInfo:
    path: str
    size: int
    sha256: str
    records: int
    shape: str  # "object" ({"tasks": [...]}) or "list" (a bare array)
    array_key: str | None
    bom: bool
    duplicate_ids: frozenset[int]


class _Hashing:
    """A read-only file wrapper that hashes what passes through."""

    def __init__(self, raw: BinaryIO, prefix: bytes = b"") -> None:
        self.raw = raw
        self.sha = hashlib.sha256(prefix)

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        return data


def _open_checked(path: Path) -> tuple[BinaryIO, bool, int]:
    """Open the file, reject what is plainly not a UTF-8 JSON document, and skip a UTF-8 BOM."""
    if not path.exists():
        raise SourceError(f"{path}: no such file")
    if path.is_dir():
        raise SourceError(f"{path}: is a directory, not a file")
    size = path.stat().st_size
    try:
        f = path.open("rb")
    except OSError as exc:
        raise SourceError(f"{path}: cannot be read ({exc.strerror})") from exc
    head = f.read(4)
    if not head.strip():
        rest = f.read(BLOCK)
        if not (head + rest).strip():
            f.close()
            raise SourceError(f"{path}: file is empty")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        f.close()
        raise SourceError(f"{path}: not UTF-8 (it starts with a UTF-16 byte order mark)")
    bom = head.startswith(UTF8_BOM)
    f.seek(len(UTF8_BOM) if bom else 0)
    return f, bom, size


def _first_char(f: BinaryIO) -> str:
    pos = f.tell()
    while True:
        block = f.read(4096)
        if not block:
            return ""
        stripped = block.lstrip()
        if stripped:
            f.seek(pos)
            return chr(stripped[0])


def _array_key(f: BinaryIO, path: Path, keys: tuple[str, ...]) -> str | None:
    """For an object document, which top-level key holds the records (None for a bare list)."""
    first = _first_char(f)
    if first == "[":
        return None
    if first != "{":
        raise SourceError(
            f"{path}: not a Phase 1 tasks file (expected a JSON object or array, found {first!r})"
        )
    return keys[0] if len(keys) == 1 else _find_key(f, keys)


def _find_key(f: BinaryIO, keys: tuple[str, ...]) -> str:
    """The first top-level key that is one of keys (else keys[0]); f is left where it was."""
    pos = f.tell()
    try:
        for key in _Document(_Text(f), None).top_level_keys():
            if key in keys:
                return key
    except _Located:
        pass  # the pre-check reports it, with its position
    finally:
        f.seek(pos)
    return keys[0]


def quick_check(path: str | Path, array_keys: tuple[str, ...] = ("tasks",)) -> None:
    """The checks that cost nothing (exists, not empty, not UTF-16, an object or array at the top),
    so the CLI can fail at once before starting anything; precheck() does the whole file."""
    path = Path(path)
    f, _bom, _size = _open_checked(path)
    with f:
        _array_key(f, path, array_keys)


def precheck(
    path: str | Path, array_keys: tuple[str, ...] = ("tasks",), id_keys: tuple[str, ...] = ("id",)
) -> SourceInfo:
    """Stream the whole file once: is it a well-formed Phase 1 file? Raises SourceError if not."""
    path = Path(path)
    f, bom, size = _open_checked(path)
    with f:
        key = _array_key(f, path, array_keys)
        hashing = _Hashing(f, UTF8_BOM if bom else b"")
        doc = _Document(_Text(hashing), key)
        ids = array("q")
        count = 0
        try:
            for batch in doc.records():
                count += len(batch)
                ids.extend(_ids(batch, id_keys))
        except _Located as exc:
            raise SourceError(f"{path}: {exc}") from None
    if count == 0 and key is not None and doc.array_kind != "[":
        _no_array(path, key, doc, array_keys)
    return SourceInfo(
        path=str(path),
        size=size,
        sha256=hashing.sha.hexdigest(),
        records=count,
        shape="list" if key is None else "object",
        array_key=key,
        bom=bom,
        duplicate_ids=_duplicates(ids),
    )


def _ids(batch: list[Any], id_keys: tuple[str, ...]) -> list[int]:
    """The integer ids of a batch of records (for finding ids that occur twice): a record's id is
    its first id key that is present and not null."""
    first, *others = id_keys
    values = [r.get(first) if type(r) is dict else None for r in batch]
    for key in others:
        values = [
            r.get(key) if v is None and type(r) is dict else v for v, r in zip(values, batch, strict=True)
        ]
    return [v for v in values if type(v) is int and -(2**63) <= v < 2**63]


@lru_cache(maxsize=8)
def _precheck_cached(
    path: str, mtime_ns: int, size: int, array_keys: tuple[str, ...], id_keys: tuple[str, ...]
) -> SourceInfo:
    return precheck(path, array_keys, id_keys)


def precheck_once(
    path: str | Path, array_keys: tuple[str, ...] = ("tasks",), id_keys: tuple[str, ...] = ("id",)
) -> SourceInfo:
    """precheck(), memoised on the file's identity: the CLI checks before starting the orchestrator and
    the flow checks again, and an unchanged file is read only once per process."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return precheck(p, array_keys, id_keys)  # raises the one-line error
    return _precheck_cached(str(p.resolve()), st.st_mtime_ns, st.st_size, array_keys, id_keys)


def _duplicates(ids: array) -> frozenset[int]:
    if len(ids) < 2:
        return frozenset()
    arr = np.frombuffer(ids, dtype=np.int64)
    values, counts = np.unique(arr, return_counts=True)
    return frozenset(int(v) for v in values[counts > 1])


def _no_array(path: Path, key: str, doc: _Document, array_keys: tuple[str, ...]) -> None:
    """Zero records and no array under key: say what the document holds instead."""
    if doc.array_kind is None:
        found = ", ".join(doc.keys_seen) or "none"
        wanted = " or ".join(repr(k) for k in array_keys)
        raise SourceError(
            f"{path}: no {wanted} array (top-level keys: {found}); use --map KEY=tasks to name it"
        )
    raise SourceError(f"{path}: {key!r} is not an array")


# --- the decoder ------------------------------------------------------------------------------------

_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=lambda c: _reject_constant(c))
_WS = " \t\n\r"
# Where one object ends and the next begins: `}`, a comma, `{` (blanks allowed between).
_NEXT_OBJECT = re.compile(r"\}[ \t\n\r]*,[ \t\n\r]*(?=\{)")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class _Located(Exception):
    pass


class _Text:
    """Incrementally decoded text with absolute positions."""

    def __init__(self, f: BinaryIO | _Hashing) -> None:
        self.f = f
        self.decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.buf = ""
        self.i = 0
        self.consumed_chars = 0  # characters dropped from the front of buf
        self.consumed_lines = 0
        self.last_newline = -1  # absolute char index of the last dropped newline
        self.bytes_read = 0
        self.eof = False
        self.careful_until = -1  # absolute index up to which records are read one by one

    def more(self) -> bool:
        if self.eof:
            return False
        data = self.f.read(BLOCK)
        try:
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise _Located(f"not UTF-8: invalid byte at byte offset {self.bytes_read + exc.start}") from None
        self.bytes_read += len(data)
        if not data:
            self.eof = True
        # drop what has been consumed, keeping line bookkeeping for positions
        dropped = self.buf[: self.i]
        nl = dropped.count("\n")
        if nl:
            self.consumed_lines += nl
            self.last_newline = self.consumed_chars + dropped.rindex("\n")
        self.consumed_chars += self.i
        self.buf = self.buf[self.i :] + text
        self.i = 0
        return bool(data)

    def where(self, index: int | None = None) -> str:
        absolute = self.consumed_chars + (self.i if index is None else index)
        head = self.buf[: absolute - self.consumed_chars]
        line = self.consumed_lines + head.count("\n") + 1
        last_nl = self.consumed_chars + head.rindex("\n") if "\n" in head else self.last_newline
        return f"line {line}, column {absolute - last_nl}"

    def skip_ws(self) -> str:
        """The next non-blank character (not consumed), or '' at the end."""
        while True:
            while self.i < len(self.buf) and self.buf[self.i] in _WS:
                self.i += 1
            if self.i < len(self.buf):
                return self.buf[self.i]
            if not self.more():
                return ""

    def value(self) -> Any:
        self.skip_ws()
        while True:
            try:
                obj, end = _DECODER.raw_decode(self.buf, self.i)
            except json.JSONDecodeError as exc:
                # An error near the end of what we have may only mean "read more"; one element is
                # never allowed to grow the buffer past MAX_ELEMENT.
                if not self.eof and len(self.buf) - self.i < MAX_ELEMENT:
                    self.more()
                    continue
                if self.eof and (exc.pos >= len(self.buf.rstrip()) or exc.msg.startswith("Unterminated")):
                    raise _Located(
                        f"truncated: the file ends inside a value ({self.where(exc.pos)})"
                    ) from None
                raise _Located(f"not valid JSON: {exc.msg} ({self.where(exc.pos)})") from None
            except ValueError as exc:  # NaN / Infinity
                raise _Located(f"not valid JSON: {exc} ({self.where()})") from None
            if end >= len(self.buf) and not self.eof:  # a number may go on in the next block
                self.more()
                continue
            self.i = end
            return obj

    def objects(self) -> list[Any]:
        """The whole objects from here to the last `}, {` of the next block or so, decoded in one
        call, their commas consumed; [] where that cannot be done (then: one value the careful way)."""
        while len(self.buf) - self.i < BLOCK and self.more():
            pass
        if self.consumed_chars + self.i <= self.careful_until:
            return []
        end = self.buf.rfind("}", self.i)
        while end > self.i:
            cut = _NEXT_OBJECT.match(self.buf, end)
            if cut is not None:
                break
            end = self.buf.rfind("}", self.i, end)
        else:
            return []
        try:
            batch = _DECODER.decode("[" + self.buf[self.i : end + 1] + "]")
        except ValueError:  # a cut inside a value, or a real error: the careful way finds which
            self.careful_until = self.consumed_chars + end
            return []
        self.i = cut.end()
        return batch

    def expect(self, chars: str, what: str) -> str:
        c = self.skip_ws()
        if not c:
            raise _Located(f"truncated: the file ends where {what} was expected ({self.where()})")
        if c not in chars:
            raise _Located(f"not valid JSON: expected {what}, found {c!r} ({self.where()})")
        self.i += 1
        return c


class _Document:
    """Walks a document whose records are the array under array_key (or the document itself, a
    bare array, when array_key is None), checking every byte of it."""

    def __init__(self, text: _Text, array_key: str | None) -> None:
        self.t = text
        self.array_key = array_key
        self.keys_seen: list[str] = []
        self.array_kind: str | None = None  # first character of array_key's value, once seen

    def records(self) -> Iterator[list[Any]]:
        """The records, in batches, in order; then the rest of the document is checked."""
        t = self.t
        if self.array_key is None:
            yield from self._array()
        else:
            for key in self.top_level_keys():
                if key == self.array_key:  # every occurrence: a repeated key loses no records
                    kind = t.skip_ws()
                    if self.array_kind != "[":
                        self.array_kind = kind
                    if kind == "[":
                        yield from self._array()
                        continue
                t.value()
        if t.skip_ws():
            raise _Located(f"not valid JSON: unexpected data after the document ({t.where()})")

    def top_level_keys(self) -> Iterator[str]:
        """Each key of the top-level object, with the text left at its value; the caller consumes
        the value before asking for the next key."""
        t = self.t
        t.expect("{", "'{'")
        if t.skip_ws() == "}":
            t.i += 1
            return
        while True:
            if t.skip_ws() != '"':
                t.expect('"', "a key")
            key = t.value()
            t.expect(":", "':'")
            self.keys_seen.append(key)
            yield key
            if t.expect(",}", "',' or '}'") == "}":
                return

    def _array(self) -> Iterator[list[Any]]:
        t = self.t
        t.expect("[", "'['")
        if t.skip_ws() == "]":
            t.i += 1
            return
        while True:
            batch = t.objects()
            if batch:
                yield batch
                continue
            if not t.skip_ws():
                raise _Located(f"truncated: the file ends inside the tasks array ({t.where()})")
            yield [t.value()]
            if t.expect(",]", "',' or ']'") == "]":
                return


# --- streaming the records --------------------------------------------------------------------------


def iter_batches(info: SourceInfo) -> Iterator[list[Any]]:
    """Every record of a pre-checked file, in order, in batches of the decoder's choosing."""
    with open(info.path, "rb") as f:
        f.seek(len(UTF8_BOM) if info.bom else 0)
        try:
            yield from _Document(_Text(f), info.array_key).records()
        except _Located as exc:
            raise SourceError(f"{info.path}: changed while being read ({exc})") from None


def iter_records(info: SourceInfo) -> Iterator[Any]:
    for batch in iter_batches(info):
        yield from batch


def iter_chunks(info: SourceInfo, chunk_size: int) -> Iterator[tuple[int, int, list[Any]]]:
    """(chunk_no, first_position, records) for consecutive slices of chunk_size records."""
    chunk: list[Any] = []
    no = 0
    for batch in iter_batches(info):
        at = 0
        while at < len(batch):
            take = batch[at : at + chunk_size - len(chunk)]
            at += len(take)
            chunk = take if not chunk and len(take) == chunk_size else chunk + take
            if len(chunk) == chunk_size:
                yield no, no * chunk_size, chunk
                no += 1
                chunk = []
    if chunk:
        yield no, no * chunk_size, chunk
