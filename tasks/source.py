"""Read a Phase 1 file: pre-check the whole of it, then stream its records in chunks.

Nothing is loaded whole: the pre-check streams the file once (well-formedness, sha256, where the
records are, how many, keys that occur twice, what the file says about its dates) and the load
streams it again, so memory stays bounded by the chunk size whatever the file's size. Where the
records sit -- a bare list, `{"tasks": [...]}`, keyed objects, groups -- is tasks/shapes.py.

One decoder, the standard library's: it is exact (a lone `\\ud800` stays what it is, a number with a
fraction stays a Decimal, NaN is refused) and it says where a broken file breaks, by line and column.
It takes an array's elements a block (about 1 MB) at a time: the block is cut after the last `}`
followed by `,` and `{`, and the elements before the cut are decoded in one call. A cut that falls
inside a string or a nested object cannot decode, so a block that decodes is exactly whole
elements; one that does not is read element by element instead, which also locates any real error.
An array element, or a top-level value that is an object, is decoded whole and may be at most
MAX_ELEMENT characters; a larger one is refused with its position.

Two kinds of almost-JSON are named rather than guessed at: `//` or `/* */` comments and trailing
commas (accepted with `lenient=True`, --lenient-json), and a file cut short (with `salvage=True`,
--salvage, the records before the cut load and the cut one is quarantined with its bytes).
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import json
import os
import re
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

from tasks.errors import InputError
from tasks.filestat import read_key
from tasks.jsontext import dumps_exact, readable
from tasks.mapping import FieldMapping, Truncated
from tasks.shapes import (
    Batch,
    Group,
    Layout,
    Survey,
    child_path,
    decide,
    expand,
    named_group,
    top_object,
)

BLOCK = 1 << 20
MAX_ELEMENT = 64 << 20
UTF8_BOM = b"\xef\xbb\xbf"
# A file up to this size is parsed once in a run of many files: its pre-check keeps the batches
# for the load. In-process, 10,000 small files took 3.9 s instead of 5.4-5.8 s (pre-check, then a
# second read); a real run on two cores shows no gain (bench/phase1_fleet.py), where the parsing
# shares the cores with PostgreSQL's COPY.
KEEP_BYTES = 1 << 20


class SourceError(InputError):
    """The source file cannot be migrated as a whole; the message is one line naming the file."""


@dataclass(frozen=True)
class ReadOptions:
    lenient: bool = False  # accept // and /* */ comments and trailing commas
    salvage: bool = False  # a file cut short: load the records before the cut


@dataclass(frozen=True)
class Cut:
    """Where a salvaged file ends, and what of it was lost."""

    at_byte: int  # the file's size: it ends here
    record_byte: int | None  # where the record it ends in starts (None: it ends between records)

    def describe(self) -> str:
        if self.record_byte is None:
            return f"the file ends at byte {self.at_byte:,} between records: no record was lost, only the document's end"
        return (
            f"the file ends at byte {self.at_byte:,} inside the record that starts at byte {self.record_byte:,}: "
            f"its {self.at_byte - self.record_byte:,} bytes are quarantined, the records before it loaded"
        )


@dataclass(frozen=True)
class SourceInfo:
    path: str
    size: int
    sha256: str
    records: int
    layout: Layout
    bom: bool
    options: ReadOptions
    document: str  # "array", "object", "string" or "scalar": what the top level is
    containers: dict[str, int]  # where records were found (JSON path of the top-level part) -> records
    ignored: dict[str, str]  # top-level keys that hold no tasks -> what they hold
    duplicate_keys: frozenset[int]  # hashes of legacy keys that occur more than once (conversions.key_hash)
    repeated_content: frozenset[int]  # hashes of id-less records that occur more than once
    day_first: dict[str, bool | None]  # time target -> DD/MM (True), MM/DD (False), unsettled (None)
    scoped_keys: bool = False  # ids are per list: a legacy key is "<the list's path>:<id>"
    cut: Cut | None = None
    comments: int = 0  # comments and trailing commas blanked out (lenient)
    mtime_ns: int = 0  # the file as it was checked: the load reads that one, or refuses
    stat: int | None = None  # its settled stat (tasks/filestat.py) when it held still while read, else None
    repeated_keys: bool = True  # some object of the text names a key twice (False: the load needs no watch for it)

    @property
    def shape(self) -> str:
        return "list" if self.document == "array" else "object"


class _Hashing:
    """A read-only file wrapper that hashes what passes through."""

    def __init__(self, raw: BinaryIO, prefix: bytes = b"") -> None:
        self.raw = raw
        self.sha = hashlib.sha256(prefix)

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        return data


class _Limited:
    """The first `size` bytes of a file: what was pre-checked, however much was appended since."""

    def __init__(self, raw: BinaryIO, size: int) -> None:
        self.raw, self.left = raw, size

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(self.left if n < 0 else min(n, self.left))
        self.left -= len(data)
        return data


def _open_checked(path: str | Path) -> tuple[BinaryIO, bool, int]:
    """Open the file, reject what is plainly not a UTF-8 JSON document, and skip a UTF-8 BOM."""
    try:
        st = os.stat(path)  # one stat, not one per question (a fleet run asks it 100,000 times)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            what = "a symlink to nothing (or a loop of links)" if os.path.islink(path) else "no such file"
            raise SourceError(f"{path}: {what}") from None
        raise SourceError(f"{path}: cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise SourceError(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(f"{path}: not a regular file")
    size = st.st_size
    try:
        f = open(path, "rb")  # noqa: SIM115 (the caller closes it)
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


def file_sha256(path: str | Path) -> str | None:
    """The file's sha256, or None when it cannot be read (the pre-check then says why)."""
    found = file_digest(path)
    return found[0] if found else None


DIGEST_READ = 1 << 20


def file_digest(path: str | Path) -> tuple[str, int] | None:
    """The file's sha256 and the bytes it hashed, or None when it cannot be read. Plain os.read:
    hashlib.file_digest over a buffered file costs twice as much for a small file (14 us against
    7 us a file: 0.7 s at 100,000 files), most of it the file object and its 256 KiB buffer."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO among the files must not hang the run
    except OSError:
        return None
    try:
        digest, size = hashlib.sha256(), 0
        while data := os.read(fd, DIGEST_READ):
            digest.update(data)
            size += len(data)
        return digest.hexdigest(), size
    except OSError:
        return None
    finally:
        os.close(fd)


def precheck(
    path: str | Path, mapping: FieldMapping | None = None, options: ReadOptions = ReadOptions()
) -> SourceInfo:
    """Stream the whole file once: is it a Phase 1 file, where are its records, what do they say?
    Raises SourceError (one line, with the position) if it cannot be migrated."""
    return _survey(Path(path), mapping or FieldMapping.build(), options, keep_upto=-1)[0]


def checked_batches(
    path: str | Path, mapping: FieldMapping, options: ReadOptions, file: int
) -> tuple[SourceInfo, Iterable[Batch]]:
    """precheck() of one file of a run and its records (iter_batches()). A file of up to
    KEEP_BYTES is parsed once: the pre-check's batches are the load's when the layout it chose
    takes every value the survey found records in; anything else is read again."""
    # the path as given: Path() would intern each of its parts for good (100,000 user folders)
    info, kept = _survey(path, mapping, options, keep_upto=KEEP_BYTES)
    if kept is None:
        return info, iter_batches(info, mapping, file)
    for batch in kept:
        batch.file = file
    return info, kept


def _survey(
    path: str | Path, mapping: FieldMapping, options: ReadOptions, *, keep_upto: int
) -> tuple[SourceInfo, list[Batch] | None]:
    """The pre-check, and for a file of up to keep_upto bytes the batches it decoded, if a load
    would decode the same ones (the size is the one the pre-check opened: no second stat)."""
    from tasks.inference import FileStats

    f, bom, size = _open_checked(path)
    kept: list[Batch] | None = [] if size <= keep_upto else None
    with f:
        taken = time.time_ns()  # before the stat: settled then, settled when it was taken
        before = os.fstat(f.fileno())
        mtime_ns = before.st_mtime_ns
        skip = len(UTF8_BOM) if bom else 0
        hashing = _Hashing(_Limited(f, size - skip), UTF8_BOM if bom else b"")  # a growing file: its size now
        text = _Text(hashing, lenient=options.lenient, base=skip)
        reader = _Reader(text, mapping, _explicit(mapping), options.salvage)
        stats = FileStats(mapping)
        twice_before = getattr(_TWICE, "ever", 0)
        try:
            for candidate, batch in reader.surveyed():
                stats.add(candidate, batch)
                if kept is not None:
                    kept.append(batch)
        except _Located as exc:
            raise SourceError(f"{path}: {exc}") from None
        after = os.fstat(f.fileno())
        if after.st_mtime_ns != mtime_ns:
            raise SourceError(f"{path}: changed while being checked (it is being written to?); run again")
    survey = reader.survey
    if mapping.container is not None:
        layout, left = _explicit(mapping), {}
        if not reader.found_path:
            raise SourceError(
                f"{path}: no {'.'.join(mapping.container)!r} in the file "
                f"(top-level keys: {', '.join(survey.seen) or 'none'})"
            )
    elif survey.document == "object":
        layout, left = decide(survey, mapping.vocab)
        if not mapping.vocab.infer and not layout.keys:
            raise SourceError(
                f"{path}: no 'tasks' array (top-level keys: {', '.join(survey.seen) or 'none'}); "
                "use --map KEY=tasks to name it"
            )
    else:
        layout, left = Layout(), {}
    facts = stats.result(layout)
    if kept is not None and not reader.loads_the_same(layout):
        kept = None
    info = SourceInfo(
        path=str(path),
        size=size,
        sha256=hashing.sha.hexdigest(),
        records=facts.records,
        layout=layout,
        bom=bom,
        options=options,
        document=survey.document,
        containers=facts.containers,
        ignored={**survey.ignored, **left},
        duplicate_keys=facts.duplicate_keys,
        repeated_content=facts.repeated_content,
        day_first=facts.day_first,
        scoped_keys=facts.scoped_keys,
        cut=reader.cut,
        comments=text.blanked,
        mtime_ns=mtime_ns,
        stat=read_key(before, taken, after, size),
        repeated_keys=getattr(_TWICE, "ever", 0) != twice_before,
    )
    return info, kept


def _explicit(mapping: FieldMapping) -> Layout | None:
    return Layout(path=mapping.container) if mapping.container is not None else None


# --- the decoder ------------------------------------------------------------------------------------

class Twice(dict):  # type: ignore[type-arg]
    """An object whose text names a key twice (JSON keeps the last value): its record is
    quarantined, never read with a value silently dropped. `keys` are the repeated ones."""

    keys: tuple[str, ...] = ()
    pairs: list[tuple[str, Any]] = []  # every key and value as the text has them, repeats included


_TWICE = threading.local()


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The decoder's objects: a plain dict, unless a key repeats (rare: then a Twice, counted)."""
    d = dict(pairs)
    if len(d) == len(pairs):
        return d
    twice = Twice(d)
    twice.pairs = pairs
    seen: set[str] = set()
    twice.keys = tuple(dict.fromkeys(k for k, _ in pairs if k in seen or seen.add(k)))  # type: ignore[func-returns-value]
    _TWICE.found = getattr(_TWICE, "found", 0) + 1
    _TWICE.ever = getattr(_TWICE, "ever", 0) + 1
    return twice


_DECODER = json.JSONDecoder(
    parse_float=Decimal, parse_constant=lambda c: _reject_constant(c), object_pairs_hook=_pairs
)
# For a file whose pre-check found no key named twice (SourceInfo.repeated_keys): the same values,
# its objects built in C without a call to _pairs each (the 1M-record file of bench/phase1.py read
# back: 1.11-1.55 s against 1.49-1.69 s, runs alternated).
_PLAIN_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=lambda c: _reject_constant(c))
_WS = " \t\n\r"
# Where one object ends and the next begins: `}`, a comma, `{` (blanks allowed between).
_NEXT_OBJECT = re.compile(r"\}[ \t\n\r]*,[ \t\n\r]*(?=\{)")
# Where an array's last object ends: `}`, then `]` (blanks allowed between).
_LAST_OBJECT = re.compile(r"\}[ \t\n\r]*(?=\])")


_CONSTANT = re.compile(r"[:\[,\s](NaN|-?Infinity)(?=[\s,\]}])")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class _Located(Exception):
    def __init__(self, message: str, *, truncated: bool = False, start: int | None = None) -> None:
        super().__init__(message)
        self.truncated = truncated
        self.start = start  # where the value that was cut starts (absolute character index)


class _Text:
    """Incrementally decoded text with absolute positions."""

    def __init__(
        self, f: BinaryIO | _Hashing, *, lenient: bool = False, base: int = 0, pairs: bool = True
    ) -> None:
        """base: bytes of the file before f's position (a BOM), so byte offsets are the file's;
        pairs=False: no object of the text names a key twice (its pre-check said so)."""
        self.f: Any = _Lenient(f) if lenient else f
        self.json = _DECODER if pairs else _PLAIN_DECODER
        self.decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.buf = ""
        self.i = 0
        self.consumed_chars = 0  # characters dropped from the front of buf
        self.consumed_bytes = base  # and their bytes
        self.consumed_lines = 0
        self.last_newline = -1  # absolute char index of the last dropped newline
        self.bytes_read = base
        self.eof = False
        self.careful_until = -1  # absolute index up to which elements are read one by one
        self.last_cut_failed = False  # a cut at an array's end did not decode: not tried again

    @property
    def blanked(self) -> int:
        return self.f.blanked if isinstance(self.f, _Lenient) else 0

    def more(self) -> bool:
        if self.eof:
            return False
        data = self.f.read(BLOCK)
        try:
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            if not data:  # the file ends inside a multi-byte character: it was cut short
                text = ""
            else:
                raise _Located(
                    f"not UTF-8: invalid byte at byte offset {self.bytes_read + exc.start}"
                ) from None
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
        self.consumed_bytes += len(dropped.encode("utf-8", "surrogatepass"))
        self.buf = self.buf[self.i :] + text
        self.i = 0
        return bool(data)

    def at(self) -> int:
        return self.consumed_chars + self.i

    def byte_of(self, absolute: int) -> int:
        return self.consumed_bytes + len(
            self.buf[: absolute - self.consumed_chars].encode("utf-8", "surrogatepass")
        )

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
        start = self.at()
        while True:
            try:
                obj, end = self.json.raw_decode(self.buf, self.i)
            except json.JSONDecodeError as exc:
                # An error near the end of what we have may only mean "read more"; one element is
                # never allowed to grow the buffer past MAX_ELEMENT.
                if not self.eof and len(self.buf) - self.i < MAX_ELEMENT:
                    self.more()
                    continue
                if not self.eof:
                    raise _Located(
                        f"a single value larger than {MAX_ELEMENT >> 20} MB starts at {self.where()}; "
                        "name the array that holds the records with --map PATH=tasks to stream it"
                    ) from None
                if exc.pos >= len(self.buf.rstrip()) or _unterminated(self.buf, exc.pos):
                    raise _Located(
                        f"truncated: the file ends inside a value ({self.where(exc.pos)})",
                        truncated=True,
                        start=start,
                    ) from None
                raise _Located(f"not valid JSON: {_explain(self.buf, exc)} ({self.where(exc.pos)})") from None
            except RecursionError:
                raise _Located(f"a value nests too deeply to be a task record ({self.where()})") from None
            except ValueError as exc:  # NaN / Infinity: say where it is, not where its record starts
                at = _CONSTANT.search(self.buf, self.i)
                raise _Located(f"not valid JSON: {exc} ({self.where(at.start(1) if at else None)})") from None
            if end >= len(self.buf) and not self.eof:  # a number may go on in the next block
                self.more()
                continue
            self.i = end
            return obj

    def objects(self) -> list[Any]:
        """The whole objects from here to the last `}, {` of the next block or so, decoded in one
        call, their commas consumed; [] where that cannot be done (then: one value the careful way).
        Once the rest of the file is read, the cut may be the array's end instead (the `]` is left to
        the caller): a small file's array is then one batch, not its last object apart."""
        while len(self.buf) - self.i < BLOCK and self.more():
            pass
        if (
            self.consumed_chars + self.i <= self.careful_until
            or self.i >= len(self.buf)
            or self.buf[self.i] != "{"
        ):
            return []
        if self.eof and not self.last_cut_failed:
            batch = self._through_last()
            if batch:
                return batch
        end = self.buf.rfind("}", self.i)
        while end > self.i:
            cut = _NEXT_OBJECT.match(self.buf, end)
            if cut is not None:
                break
            end = self.buf.rfind("}", self.i, end)
        else:
            return []
        try:
            batch = self.json.decode("[" + self.buf[self.i : end + 1] + "]")
        except (
            ValueError,
            RecursionError,
        ):  # a cut inside a value, or a real error: the careful way finds which
            self.careful_until = self.consumed_chars + end
            return []
        self.i = cut.end()
        return batch

    def _through_last(self) -> list[Any]:
        """The objects from here to the last `}` followed by `]`, decoded in one call; [] (and not
        tried again) where that `}` does not close the array's last object: it decodes only if it
        does, by the same argument as a `}, {` cut."""
        end = self.buf.rfind("}", self.i)
        while end > self.i and _LAST_OBJECT.match(self.buf, end) is None:
            end = self.buf.rfind("}", self.i, end)
        if end <= self.i:
            self.last_cut_failed = True
            return []
        try:
            batch = self.json.decode("[" + self.buf[self.i : end + 1] + "]")
        except (ValueError, RecursionError):
            self.last_cut_failed = True
            return []
        self.i = end + 1
        return batch

    def expect(self, chars: str, what: str) -> str:
        c = self.skip_ws()
        if not c:
            raise _Located(
                f"truncated: the file ends where {what} was expected ({self.where()})", truncated=True
            )
        if c not in chars:
            hint = _almost_json(self.buf, self.i)
            raise _Located(f"not valid JSON: expected {what}, found {c!r}{hint} ({self.where()})")
        self.i += 1
        return c


def _unterminated(buf: str, pos: int) -> bool:
    """An unterminated string runs to the end of the text (the decoder reports where it started)."""
    return buf[pos : pos + 1] == '"' and '"' not in buf[pos + 1 :].replace('\\"', "")


def _explain(buf: str, exc: json.JSONDecodeError) -> str:
    return exc.msg + _almost_json(buf, exc.pos)


def _almost_json(buf: str, pos: int) -> str:
    """What the text at a JSON error looks like, when it is a known kind of almost-JSON."""
    here = buf[pos : pos + 2]
    if here in ("//", "/*"):
        return ": a comment, which JSON does not allow (--lenient-json accepts comments)"
    if here[:1] in "]}" and buf[:pos].rstrip().endswith(","):
        return ": a trailing comma, which JSON does not allow (--lenient-json accepts it)"
    if here[:1] == "'":
        return ": a single-quoted string (a Python or JavaScript literal, not JSON)"
    if buf.startswith(("True", "False", "None"), pos):
        return ": a Python literal (JSON writes true, false, null)"
    return ""


class _Lenient:
    """A byte stream with `//` and `/* */` comments and trailing commas blanked out (each byte a
    space, newlines kept), so the decoder reads plain JSON and positions stay those of the file.
    Strings never span lines in JSON, so each line is scanned on its own; only an open block
    comment and a comma whose fate the next line decides are carried over."""

    _TOKEN = re.compile(rb'"(?:[^"\\\n]|\\.)*"?|//|/\*|\*/|,|[\]}]|[^\s"/,\]}*]+|[*/]')

    def __init__(self, f: Any) -> None:
        self.f = f
        self.pending = b""
        self.out = bytearray()
        self.in_comment = False
        self.comma: int | None = None  # index in self.out of a comma not yet followed by anything
        self.blanked = 0
        self.done = False

    def read(self, n: int) -> bytes:
        while not self.done and self._ready() < n:
            data = self.f.read(n)
            if not data:
                self.done = True
                self._line(self.pending)
                self.pending = b""
                break
            lines = (self.pending + data).split(b"\n")
            self.pending = lines.pop()
            if len(self.pending) > MAX_ELEMENT:
                raise _Located(f"--lenient-json reads a line at a time, and a line here is longer than {MAX_ELEMENT >> 20} MB")
            for line in lines:
                self._line(line + b"\n")
        take = min(n, self._ready())
        chunk = bytes(self.out[:take])
        del self.out[:take]
        if self.comma is not None:
            self.comma -= take
        return chunk

    def _ready(self) -> int:
        """Bytes that may go out: all of them, but for a comma the next token may still blank."""
        return len(self.out) if self.comma is None or self.done else self.comma

    def _blank(self, token: bytes) -> bytes:
        self.blanked += 1
        return bytes(b if b == 10 else 32 for b in token)

    def _line(self, line: bytes) -> None:
        pos = 0
        while pos < len(line):
            if self.in_comment:
                end = line.find(b"*/", pos)
                stop = len(line) if end < 0 else end + 2
                self.out += bytes(b if b == 10 else 32 for b in line[pos:stop])
                self.in_comment = end < 0
                pos = stop
                continue
            if line[pos : pos + 1] in b" \t\r\n":
                self.out += line[pos : pos + 1]
                pos += 1
                continue
            m = self._TOKEN.match(line, pos)
            token = m.group() if m else line[pos : pos + 1]
            pos += len(token)
            if token == b"//":
                rest = line[pos:]
                self.out += self._blank(token + rest.rstrip(b"\n")) + (b"\n" if rest.endswith(b"\n") else b"")
                pos = len(line)
            elif token == b"/*":
                self.blanked += 1
                self.out += b"  "
                self.in_comment = True
            elif token in (b"]", b"}"):
                if self.comma is not None:
                    self.out[self.comma] = 32
                    self.blanked += 1
                    self.comma = None
                self.out += token
            else:
                self.comma = None
                if token == b",":
                    self.comma = len(self.out)
                self.out += token


# --- walking the document ---------------------------------------------------------------------------


class _Reader:
    """Walks the document and yields its records in batches, with where each batch sits.

    layout None: survey every top-level candidate (the pre-check), each batch tagged with its
    candidate; otherwise only what the layout takes (the load)."""

    def __init__(self, text: _Text, mapping: FieldMapping, layout: Layout | None, salvage: bool) -> None:
        self.t = text
        self.vocab = mapping.vocab
        self.layout = layout
        self.salvage = salvage
        self.survey = Survey("scalar")
        self.found_path = False
        self.cut: Cut | None = None
        self.ended = False
        self.tops: list[tuple[str, str, str]] = []  # (key, kind, candidate) of each top-level value decoded for records

    def loads_the_same(self, layout: Layout) -> bool:
        """Whether a load with `layout` would decode exactly what this survey did: it takes every
        top-level value the survey found records in (so also counts keyed records alike), and
        skips only values the survey found none in."""
        return all(
            layout.takes_value(key, kind) and (kind == "[" or layout.takes_candidate(candidate))
            for key, kind, candidate in self.tops
        )

    def surveyed(self) -> Iterator[tuple[str, Batch]]:
        """(candidate, batch) pairs; every batch is also noted in the survey."""
        for batch in self._document():
            yield batch.group.candidate, batch

    def batches(self) -> Iterator[Batch]:
        yield from self._document()

    # the top level

    def _document(self) -> Iterator[Batch]:
        t = self.t
        first = t.skip_ws()
        try:
            if self.layout is not None and self.layout.path is not None:
                self.survey.document = "object" if first == "{" else "array"
                yield from self._path(self.layout.path)
            elif first == "[":
                self.survey.document = "array"
                yield from self._array(Group("$", ""))
            elif first == "{":
                self.survey.document = "object"
                yield from self._object_top()
            else:
                value = t.value()
                if isinstance(value, str):
                    self.survey.document = "string"
                    batch = Batch(Group("$", ""), 0, [value])
                    self._note("", "string", batch)
                    yield batch
        except _Located as exc:
            if not (self.salvage and exc.truncated):
                raise
            self._cut_at(exc.start)
        if not self.ended and t.skip_ws():
            raise _Located(
                f"not valid JSON: unexpected data after the document ({t.where()}); "
                "the file holds more than one JSON value"
            )

    def _cut_at(self, start: int | None) -> None:
        self.ended = True
        self.cut = Cut(self.t.bytes_read, None if start is None else self.t.byte_of(start))

    def _salvaged(self, start: int) -> Batch:
        """The text of the value the file ends in, from where it starts, as one quarantined record
        (always taken, so the pre-check and the load count it alike)."""
        t = self.t
        self._cut_at(start)
        return Batch(Group("$", ""), 0, [Truncated(t.buf[start - t.consumed_chars :])])

    def _keys(self) -> Iterator[str]:
        """Each key of an object, with the text left at its value; the caller consumes the value
        before asking for the next key."""
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
            yield key
            if self.ended:
                return
            if t.expect(",}", "',' or '}'") == "}":
                return

    def _object_top(self) -> Iterator[Batch]:
        t = self.t
        keyed_index = 0
        for key in self._keys():
            self.survey.seen.append(key)
            kind = t.skip_ws()
            start = t.at()
            try:
                if self.layout is not None and not self.layout.takes_value(key, kind):
                    self._skip()
                    continue
                path = child_path("$", key)
                if kind == "[":
                    self.tops.append((key, kind, key))
                    yield from self._array(named_group(path, key, key, self.vocab))
                elif kind == "{":
                    value = t.value()
                    found = top_object(key, value, path, keyed_index, self.vocab)
                    if found is None:
                        if self.layout is None:
                            self.survey.ignored[key] = _kind(value)
                        continue
                    candidate, batches = found
                    keyed_index += candidate == "*"
                    self.tops.append((key, kind, candidate))
                    if self.layout is None or self.layout.takes_candidate(candidate):
                        for batch in batches:
                            yield from self._emit(batch)
                else:
                    value = t.value()
                    if self.layout is None:
                        self.survey.ignored[key] = _kind(value)
            except _Located as exc:
                if not (self.salvage and exc.truncated and exc.start is not None):
                    raise
                yield self._salvaged(start)
                return

    def _path(self, path: tuple[str, ...]) -> Iterator[Batch]:
        """Follow an explicit path of keys to the container of the records."""
        t = self.t
        here = "$"
        for depth, key in enumerate(path):
            if t.skip_ws() != "{":
                self._skip()
                return
            for k in self._keys():
                if depth == 0:
                    self.survey.seen.append(k)
                if k != key:
                    self._skip()
                    continue
                here = child_path(here, k)
                if depth < len(path) - 1:
                    yield from self._path_rest(path[depth + 1 :], here)
                else:
                    yield from self._container(Group(here, ""))
            return

    def _path_rest(self, rest: tuple[str, ...], here: str) -> Iterator[Batch]:
        t = self.t
        if t.skip_ws() != "{":
            self._skip()
            return
        for k in self._keys():
            if k != rest[0]:
                self._skip()
                continue
            path = child_path(here, k)
            if len(rest) > 1:
                yield from self._path_rest(rest[1:], path)
            else:
                yield from self._container(Group(path, ""))

    def _container(self, group: Group) -> Iterator[Batch]:
        self.found_path = True
        t = self.t
        kind = t.skip_ws()
        if kind == "[":
            yield from self._array(group)
        elif kind == "{":
            keyed = Group(group.path, group.candidate, keyed=True)
            for index, k in enumerate(self._keys()):
                start = t.at()
                try:
                    value = t.value()
                except _Located as exc:
                    if not (self.salvage and exc.truncated):
                        raise
                    yield self._salvaged(start)
                    return
                yield from self._emit(Batch(keyed, index, [value], [k]))
        else:
            raise _Located(f"{group.path} is not an array or an object ({t.where()})")

    def _array(self, group: Group) -> Iterator[Batch]:
        t = self.t
        t.expect("[", "'['")
        if t.skip_ws() == "]":
            t.i += 1
            self._note(group.candidate, "array", Batch(group, 0, []))
            return
        index = 0
        while True:
            batch = t.objects()
            if batch:
                yield from self._emit(Batch(group, index, batch))
                index += len(batch)
                if t.skip_ws() == "]":  # the batch ran to the array's end
                    t.i += 1
                    return
                continue
            if not t.skip_ws():
                raise _Located(
                    f"truncated: the file ends inside the array {group.path} ({t.where()})", truncated=True
                )
            start = t.at()
            try:
                value = t.value()
            except _Located as exc:
                if not (self.salvage and exc.truncated):
                    raise
                yield self._salvaged(start)
                return
            yield from self._emit(Batch(group, index, [value]))
            index += 1
            if t.expect(",]", "',' or ']'") == "]":
                return

    def _emit(self, batch: Batch) -> Iterator[Batch]:
        if getattr(_TWICE, "found", 0):  # some object of this batch repeats a key: find which records
            _TWICE.found = 0
            repeated = {}
            for i, r in enumerate(batch.records):
                text = pairs_json(r) if isinstance(r, (dict, list)) else None  # before Twice goes
                keys = repeated_keys(r)
                if type(r) is Twice:
                    batch.records[i] = dict(r)
                if keys and text is not None:
                    repeated[i] = (keys, text)
            batch.repeated = repeated or None
        self._note(batch.group.candidate, "array" if batch.keys is None else "object", batch)
        yield from expand(batch, self.vocab)

    def _note(self, candidate: str, kind: str, batch: Batch) -> None:
        if self.layout is None and candidate:  # a bare list ("") is taken whole: nothing to decide
            self.survey.note(candidate, "records" if candidate == "*" else kind, batch, self.vocab)

    def _skip(self) -> None:
        """Consume one value without keeping it: arrays and objects element by element, so a large
        value that holds no tasks costs no memory."""
        t = self.t
        kind = t.skip_ws()
        if kind == "[":
            t.expect("[", "'['")
            if t.skip_ws() == "]":
                t.i += 1
                return
            while True:
                if t.objects():
                    if t.skip_ws() == "]":
                        t.i += 1
                        return
                    continue
                self._skip()
                if t.expect(",]", "',' or ']'") == "]":
                    return
        elif kind == "{":
            for _ in self._keys():
                self._skip()
        else:
            t.value()


def pairs_json(value: Any) -> str:
    """JSON text of a value with every key its text had, repeats included (a Twice keeps them)."""
    if isinstance(value, dict):
        items = value.pairs if type(value) is Twice else value.items()
        return "{" + ",".join(f"{readable(dumps_exact(k, ascii_only=False))}:{pairs_json(v)}" for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(pairs_json(v) for v in value) + "]"
    return readable(dumps_exact(value, ascii_only=False))


def repeated_keys(value: Any, depth: int = 0) -> list[str]:
    """The keys an object (or anything inside it) names twice; its Twice objects become plain dicts."""
    found: list[str] = []
    if isinstance(value, dict):
        if type(value) is Twice:
            found += list(value.keys)
        for k, v in value.items():
            if isinstance(v, (dict, list)) and depth < 64:
                found += repeated_keys(v, depth + 1)
                if type(v) is Twice:
                    value[k] = dict(v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if isinstance(v, (dict, list)) and depth < 64:
                found += repeated_keys(v, depth + 1)
                if type(v) is Twice:
                    value[i] = dict(v)
    return found


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return f"an array of {len(value)} values"
    if isinstance(value, dict):
        return f"an object of {len(value)} keys that are not tasks"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "null" if value is None else "a number"


# --- streaming the records --------------------------------------------------------------------------


@dataclass
class Chunk:
    """Consecutive records of the source, with where each one sits."""

    no: int
    first: int  # position of the first record among all the file's records
    segments: list[Batch] = field(default_factory=list)

    @property
    def records(self) -> list[Any]:
        if len(self.segments) == 1:
            return self.segments[0].records
        return [r for s in self.segments for r in s.records]

    def __len__(self) -> int:
        return sum(len(s.records) for s in self.segments)


def iter_batches(info: SourceInfo, mapping: FieldMapping, file: int = 0) -> Iterator[Batch]:
    """Every record of a pre-checked file, in order, in batches of the decoder's choosing, each
    tagged with the file's number in its run. Only the bytes that were pre-checked are read (a
    Phase 1 CLI may append meanwhile), and a file rewritten in place since is refused."""
    try:
        f = open(info.path, "rb")  # noqa: SIM115 - closed below, after the last batch
    except OSError as exc:
        raise SourceError(f"{info.path}: cannot be read any more ({exc.strerror})") from None
    with f:
        _unchanged(f, info)
        f.seek(len(UTF8_BOM) if info.bom else 0)
        bom = len(UTF8_BOM) if info.bom else 0
        text = _Text(
            _Limited(f, info.size - bom), lenient=info.options.lenient, base=bom, pairs=info.repeated_keys
        )
        reader = _Reader(text, mapping, info.layout, info.options.salvage)
        try:
            for batch in reader.batches():
                batch.file = file
                yield batch
        except _Located as exc:
            raise SourceError(f"{info.path}: changed while being read ({exc})") from None
        _unchanged(f, info)


def _unchanged(f: BinaryIO, info: SourceInfo) -> None:
    st = os.fstat(f.fileno())
    if st.st_mtime_ns != info.mtime_ns or st.st_size < info.size:
        raise SourceError(f"{info.path}: changed since it was checked (it is being written to?); run again")


def iter_records(info: SourceInfo, mapping: FieldMapping | None = None) -> Iterator[Any]:
    for batch in iter_batches(info, mapping or FieldMapping.build()):
        yield from batch.records


def iter_chunks(info: SourceInfo, mapping: FieldMapping, chunk_size: int) -> Iterator[Chunk]:
    """Consecutive chunks of chunk_size records (the last one shorter)."""
    return chunked(iter_batches(info, mapping), chunk_size)


def chunked(batches: Iterable[Batch], chunk_size: int) -> Iterator[Chunk]:
    """Batches (of one file or of many, in order) cut into chunks of chunk_size records: the same
    batches give the same chunks, so a resumed run skips exactly the chunks already committed."""
    chunk = Chunk(0, 0)
    size = 0
    for batch in batches:
        at = 0
        while at < len(batch.records):
            take = min(chunk_size - size, len(batch.records) - at)
            part = batch if at == 0 and take == len(batch.records) else _part(batch, at, take)
            chunk.segments.append(part)
            size += take
            at += take
            if size == chunk_size:
                yield chunk
                chunk = Chunk(chunk.no + 1, chunk.first + size)
                size = 0
    if size:
        yield chunk


def _part(batch: Batch, at: int, take: int) -> Batch:
    keys = batch.keys[at : at + take] if batch.keys is not None else None
    repeated = {i - at: k for i, k in batch.repeated.items() if at <= i < at + take} if batch.repeated else None
    return Batch(batch.group, batch.start + at, batch.records[at : at + take], keys, batch.file, repeated or None)
