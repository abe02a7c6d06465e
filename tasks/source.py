"""Read a Phase 1 file: pre-check the whole of it, then stream its records in chunks.

Phase 1 CLIs wrote either `{"tasks": [...], ...}` or a bare `[...]`. Nothing is loaded whole: the
pre-check streams the file once (well-formedness, sha256, record count, duplicate ids) and the load
streams it again, so memory stays bounded by the chunk size whatever the file's size.

Two decoders, one result. ijson's C backend is the fast path. The standard library's decoder is the
exact one: it runs when the file holds surrogate escapes (yajl would turn a lone `\\ud800` into `?`,
which loses information) and, when a file is broken, to say exactly where.
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

import ijson
import numpy as np

from tasks.errors import InputError, first_line

BLOCK = 1 << 20
MAX_ELEMENT = 64 << 20
UTF8_BOM = b"\xef\xbb\xbf"
# A \uD800–\uDFFF escape in the raw text (a pair or a lone half): the fast decoder cannot be trusted.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


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
    exact_decoder: bool
    duplicate_ids: frozenset[int]

    @property
    def items_prefix(self) -> str:
        return "item" if self.array_key is None else f"{self.array_key}.item"


class _Hashing:
    """A read-only file wrapper that hashes what passes through and watches for surrogate escapes."""

    def __init__(self, raw: BinaryIO, prefix: bytes = b"") -> None:
        self.raw = raw
        self.sha = hashlib.sha256(prefix)
        self.surrogates = False
        self._tail = b""

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        if not self.surrogates and data:
            self.surrogates = SURROGATE_ESCAPE.search(self._tail + data) is not None
            self._tail = data[-5:]
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
    return keys[0] if len(keys) == 1 else _find_key(f, path, keys)


def _find_key(f: BinaryIO, path: Path, keys: tuple[str, ...]) -> str:
    pos = f.tell()
    try:
        for prefix, event, value in ijson.parse(f):
            if prefix == "" and event == "map_key" and value in keys:
                return str(value)
    except ijson.JSONError:
        pass  # the well-formedness pass reports it, with its position
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
        prefix = "item" if key is None else f"{key}.item"
        hashing = _Hashing(f, UTF8_BOM if bom else b"")
        ids = array("q")
        count = 0
        try:
            for record in ijson.items(hashing, prefix):
                count += 1
                if isinstance(record, dict):
                    for k in id_keys:
                        v = record.get(k)
                        if v is not None:
                            if type(v) is int and -(2**63) <= v < 2**63:
                                ids.append(v)
                            break
        except (ijson.JSONError, UnicodeDecodeError):
            raise SourceError(f"{path}: {locate_error(path, bom, key)}") from None
        exact = hashing.surrogates
        if count == 0:
            _explain_empty(path, bom, key, array_keys)
    duplicate_ids = _duplicates(ids)
    return SourceInfo(
        path=str(path),
        size=size,
        sha256=hashing.sha.hexdigest(),
        records=count,
        shape="list" if key is None else "object",
        array_key=key,
        bom=bom,
        exact_decoder=exact,
        duplicate_ids=duplicate_ids,
    )


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


def _explain_empty(path: Path, bom: bool, key: str | None, array_keys: tuple[str, ...]) -> None:
    """Zero records: fine for an empty array, an error when there is no array where we looked."""
    with path.open("rb") as f:
        f.seek(len(UTF8_BOM) if bom else 0)
        top_keys: list[str] = []
        kind = None
        for prefix, event, value in ijson.parse(f):
            if key is None:
                if prefix == "" and event == "start_array":
                    return
            elif prefix == "" and event == "map_key":
                top_keys.append(str(value))
            elif (
                prefix == key
                and kind is None
                and event in ("start_array", "start_map", "string", "number", "boolean", "null")
            ):
                kind = event
        if key is not None and kind == "start_array":
            return
    if key is None:
        raise SourceError(f"{path}: not a Phase 1 tasks file (the top-level value is not an array)")
    if kind is None:
        found = ", ".join(top_keys) or "none"
        wanted = " or ".join(repr(k) for k in array_keys)
        raise SourceError(
            f"{path}: no {wanted} array (top-level keys: {found}); use --map KEY=tasks to name it"
        )
    raise SourceError(f"{path}: {key!r} is not an array")


# --- the exact decoder ------------------------------------------------------------------------------

_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=lambda c: _reject_constant(c))
_WS = " \t\n\r"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class _Text:
    """Incrementally decoded text with absolute positions, for the exact decoder."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.buf = ""
        self.i = 0
        self.consumed_chars = 0  # characters dropped from the front of buf
        self.consumed_lines = 0
        self.last_newline = -1  # absolute char index of the last dropped newline
        self.bytes_read = 0
        self.eof = False

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

    def expect(self, chars: str, what: str) -> str:
        c = self.skip_ws()
        if not c:
            raise _Located(f"truncated: the file ends where {what} was expected ({self.where()})")
        if c not in chars:
            raise _Located(f"not valid JSON: expected {what}, found {c!r} ({self.where()})")
        self.i += 1
        return c


class _Located(Exception):
    pass


def _iter_array(t: _Text) -> Iterator[Any]:
    t.expect("[", "'['")
    if t.skip_ws() == "]":
        t.i += 1
        return
    while True:
        if not t.skip_ws():
            raise _Located(f"truncated: the file ends inside the tasks array ({t.where()})")
        yield t.value()
        if t.expect(",]", "',' or ']'") == "]":
            return


def _iter_exact(f: BinaryIO, array_key: str | None) -> Iterator[Any]:
    t = _Text(f)
    if array_key is None:
        yield from _iter_array(t)
    else:
        t.expect("{", "'{'")
        if t.skip_ws() == "}":
            t.i += 1
        else:
            while True:
                if t.skip_ws() != '"':
                    t.expect('"', "a key")
                key = t.value()
                t.expect(":", "':'")
                if key == array_key and t.skip_ws() == "[":
                    yield from _iter_array(t)
                else:
                    t.value()
                if t.expect(",}", "',' or '}'") == "}":
                    break
    if t.skip_ws():
        raise _Located(f"not valid JSON: unexpected data after the document ({t.where()})")


def locate_error(path: Path, bom: bool, array_key: str | None) -> str:
    """Describe the first thing wrong with the file, with its line and column."""
    with path.open("rb") as f:
        f.seek(len(UTF8_BOM) if bom else 0)
        try:
            for _ in _iter_exact(f, array_key):
                pass
        except _Located as exc:
            return str(exc)
    return "not valid JSON"


# --- streaming the records --------------------------------------------------------------------------


def iter_records(info: SourceInfo) -> Iterator[Any]:
    """Every record of a pre-checked file, in order, with the decoder the pre-check chose."""
    with open(info.path, "rb") as f:
        f.seek(len(UTF8_BOM) if info.bom else 0)
        if info.exact_decoder:
            try:
                yield from _iter_exact(f, info.array_key)
            except _Located as exc:  # the file changed since the pre-check
                raise SourceError(f"{info.path}: {exc}") from None
        else:
            try:
                yield from ijson.items(f, info.items_prefix)
            except ijson.JSONError as exc:
                raise SourceError(f"{info.path}: changed while being read ({first_line(exc)})") from None


def iter_chunks(info: SourceInfo, chunk_size: int) -> Iterator[tuple[int, int, list[Any]]]:
    """(chunk_no, first_position, records) for consecutive slices of chunk_size records."""
    chunk: list[Any] = []
    no = 0
    for record in iter_records(info):
        chunk.append(record)
        if len(chunk) == chunk_size:
            yield no, no * chunk_size, chunk
            no += 1
            chunk = []
    if chunk:
        yield no, no * chunk_size, chunk
