"""Records -> rows, as pure functions: keys, owners, converted values, legacy_extra, duplicates and
quarantine entries.

Keys are uuid5 over a fixed project namespace and "<source>:<legacy key>", where the legacy key is
the record's own id as the file wrote it (an integer's digits, a string as it is), so a re-run (or
anyone with `uuid.uuid5`) gets the same ids. A record without an id gets a key derived from its
content and, among identical records, which one it is: deterministic for the same file, and never
one row for two records. A record's own created_at is kept; one without gets its group's date, or
the run's start time (fixed per run, so a resumed run renders identical rows) -- each counted by rule.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tasks import conversions as conv
from tasks.checksum import line_checksums, row_lines
from tasks.conversions import normalize_email
from tasks.inference import identity_context
from tasks.jsontext import dumps_exact, has_surrogate, raw_json
from tasks.mapping import FieldMapping, MappedChunk
from tasks.shapes import GROUP_KEY, OBJECT_KEY, Group, location
from tasks.source import Chunk, SourceInfo
from validation.records import validate

# Fixed forever: changing it would give every migrated row a new id.
PROJECT_NAMESPACE = uuid.UUID("3f0b8a52-5c1e-4d6f-9a8e-2b7c4e1d9f60")
_NS = PROJECT_NAMESPACE.bytes


def uuid5_hexes(prefix: str, suffixes: Iterable[str]) -> list[str]:
    """[uuid.uuid5(PROJECT_NAMESPACE, prefix + suffix).hex …] for a batch, without UUID objects
    (render's hot path): the namespace and prefix are hashed once and each name continues a copy
    of that state (copying is cheaper than a new hash object), then the version and variant bits
    are set for all at once."""
    base = _hashed_prefix(prefix)
    return _uuid_hexes([_digest(base, suffix) for suffix in suffixes])


def _hashed_prefix(prefix: str) -> Any:
    return hashlib.sha1(_NS + prefix.encode(), usedforsecurity=False)


def _digest(base: Any, suffix: str) -> bytes:
    h = base.copy()
    h.update(suffix.encode("utf-8", "surrogatepass"))
    return h.digest()[:16]


def _uuid_hexes(digests: list[bytes]) -> list[str]:
    """SHA-1 heads as version-5 UUIDs' 32 hex digits, the bits set for all at once."""
    if not digests:
        return []
    a = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, 16).copy()
    a[:, 6] = (a[:, 6] & 0x0F) | 0x50
    a[:, 8] = (a[:, 8] & 0x3F) | 0x80
    text = a.tobytes().hex()
    return [text[k : k + 32] for k in range(0, len(text), 32)]


def task_keys(source: str, legacy_keys: Iterable[str | int]) -> list[str]:
    return uuid5_hexes(f"{source}:", map(str, legacy_keys))


def task_key(source: str, legacy_key: str | int) -> str:
    return task_keys(source, [legacy_key])[0]


def user_key(email: str) -> str:
    return uuid5_hexes("user:", [email])[0]


@dataclass(frozen=True)
class TransformContext:
    source_name: str
    default_owner: str
    fallback_timestamp: str  # the run's start, in the canonical format
    owner_map: Mapping[str, str] = field(default_factory=dict)  # legacy key -> email
    mapping: FieldMapping = field(default_factory=FieldMapping.build)


@dataclass
class QuarantineEntry:
    position: int
    legacy_id: str | None  # the record's legacy key, as far as it has one
    raw: str
    reasons: list[str]
    location: str | None = None  # where in the file: `$.tasks[17]`, `$.days[2].tasks[0]`
    file: int = 0  # which file of the run
    legacy_source: str | None = None  # its legacy source


@dataclass
class Rows:
    """The chunk's records that go to `tasks`, column by column."""

    positions: list[int] = field(default_factory=list)
    legacy_keys: list[str] = field(default_factory=list)
    legacy_ids: list[int | None] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    descriptions: list[str | None] = field(default_factory=list)
    completed: list[bool] = field(default_factory=list)
    created_at: list[str] = field(default_factory=list)
    updated_at: list[str] = field(default_factory=list)
    priorities: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)  # text[] as PostgreSQL prints it
    extras: list[str | None] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)
    raw: list[Any] = field(default_factory=list)
    # True where the source had no created_at and the run's start time stands in for it
    defaulted_ts: list[bool] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # each row's legacy source (its file's)
    files: list[int] = field(default_factory=list)  # each row's file in the run

    def __len__(self) -> int:
        return len(self.positions)

    def without(self, drop: set[int]) -> Rows:
        """The same rows, less those at the given indexes."""
        return Rows(
            **{
                name: [v for j, v in enumerate(values) if j not in drop]
                for name, values in vars(self).items()
            }
        )


@dataclass
class TransformedChunk:
    chunk_no: int
    first_position: int
    records: int
    rows: Rows
    quarantine: list[QuarantineEntry]
    duplicates: int
    keys_seen: set[str]
    naive_timestamps: int = 0
    rules: Counter[str] = field(default_factory=Counter)  # rule -> records it gave a value
    defaults: Counter[str] = field(default_factory=Counter)  # target -> records given its default
    kept: Counter[str] = field(default_factory=Counter)  # source key -> records keeping it in legacy_extra
    files: dict[int, int] = field(default_factory=dict)  # file -> its records in this chunk
    duplicates_by_file: Counter[int] = field(default_factory=Counter)
    # a record's quarantine entry (where it is in its file included) by its position and reasons:
    # what a re-sync's conflicts are written with, once the database has told which they are
    entry: Callable[[int, list[str]], QuarantineEntry] | None = None


@dataclass
class FileContext:
    """What a file of the run gives its records: their legacy source, their default owner, and
    what the transform remembers across the file's chunks."""

    no: int
    legacy_source: str
    owner: str
    state: FileState


class ChunkFiles:
    """The file of each record of a chunk: one for all when the chunk is one file's (the common
    case, and every chunk of a single-file run), else one per record."""

    def __init__(self, chunk: Chunk, contexts: Mapping[int, FileContext]) -> None:
        numbers = {s.file for s in chunk.segments}
        self.one = contexts[numbers.pop()] if len(numbers) == 1 else None
        self.each = None if self.one is not None else [contexts[s.file] for s in chunk.segments for _ in s.records]

    def __getitem__(self, i: int) -> FileContext:
        return self.one if self.one is not None else self.each[i]  # type: ignore[index]

    def day_first(self, target: str) -> bool | None | list[bool | None]:
        if self.one is not None:
            return self.one.state.day_first.get(target)
        return [c.state.day_first.get(target) for c in self.each or ()]


class FileState:
    """What the transform remembers across a file's chunks, in order: the first copy of each legacy
    key the pre-check saw twice (identical later copies are duplicates, different ones go to
    quarantine), and how many of each repeated id-less record came before (their derived keys)."""

    def __init__(
        self,
        duplicate_keys: frozenset[int] = frozenset(),
        repeated: frozenset[int] = frozenset(),
        day_first: Mapping[str, bool | None] | None = None,
        scoped_keys: bool = False,
    ) -> None:
        self.duplicate_keys = duplicate_keys
        self.repeated = repeated
        self.day_first = day_first or {}
        self.scoped_keys = scoped_keys
        self.first: dict[str, tuple[int, tuple[Any, ...]]] = {}
        self.occurrences: Counter[int] = Counter()

    @classmethod
    def of(cls, info: SourceInfo) -> FileState:
        return cls(info.duplicate_keys, info.repeated_content, info.day_first, info.scoped_keys)

    def classify(self, key: str, position: int, content: tuple[Any, ...]) -> str | None:
        """None for the first copy, "duplicate" for an identical one, else a quarantine reason."""
        seen = self.first.get(key)
        if seen is None:
            self.first[key] = (position, content)
            return None
        if seen[1] == content:
            return "duplicate"
        return f"conflicting duplicate: an earlier record has the same id and other content (id {key}, first at position {seen[0]})"

    def derived_key(self, record: Any, group: Group) -> str:
        digest = conv.content_hash(record, identity_context(group))
        occurrence = 1
        if digest in self.repeated:
            self.occurrences[digest] += 1
            occurrence = self.occurrences[digest]
        return conv.derived_key(digest, occurrence)


_TARGET_OF_COLUMN = {"legacy_key": "id"}


def transform_chunk(
    chunk: Chunk, mapped: MappedChunk, ctx: TransformContext, files: FileState | Mapping[int, FileContext]
) -> TransformedChunk:
    """Convert and validate a mapped chunk, and turn it into rows and quarantine entries. Column by
    column: per-record work is left to the records that need it (failures, legacy_extra, groups,
    records without an id, legacy keys the pre-check saw twice). files: each file's context (a
    FileState alone stands for the one file of a run named ctx.source_name)."""
    n, first, cols, vocab = len(mapped), mapped.first_position, mapped.columns, ctx.mapping.vocab
    if isinstance(files, FileState):
        files = {s.file: FileContext(s.file, ctx.source_name, ctx.default_owner, files) for s in chunk.segments}
    of = ChunkFiles(chunk, files)
    none: list[str | None] = [None] * n
    src = {t: mapped.sources.get(t) or none for t in cols}
    groups, object_keys = _origins(chunk)
    why: dict[int, list[str]] = {i: list(p) for i, p in mapped.problems.items()}
    repeated = _repeated(chunk)
    for i, (keys, _text) in repeated.items():
        shown = ", ".join(repr(k) for k in keys[:5])
        why.setdefault(i, []).insert(0, f"the record names {shown} twice (JSON keeps the last value; which was meant cannot be told)")

    keys = conv.ids(cols["id"], src["id"], object_keys, vocab)
    if any(c.state.scoped_keys for c in ([of.one] if of.one else of.each or ())):
        _scope(keys, groups, chunk, of)
    status_of_group = [g.status for g in groups] if groups and any(g.status for g in groups) else None
    done = conv.completion(
        cols["completed"], src["completed"], cols["status"], src["status"],
        cols["completed_at"], src["completed_at"], status_of_group, vocab,
    )  # fmt: skip
    created = conv.times(cols["created_at"], src["created_at"], vocab, "created_at", of.day_first("created_at"))
    updated = conv.times(cols["updated_at"], src["updated_at"], vocab, "updated_at", of.day_first("updated_at"))
    if groups and any(g.date is not None for g in groups):
        _group_dates(created, groups, vocab, of.day_first("created_at"))
    desc = conv.description(cols["description"], src["description"])
    owner = conv.owners(cols["owner"], src["owner"], vocab)
    prio = conv.priority(cols["priority"], src["priority"], vocab)
    tag = conv.tags(cols["tags"], src["tags"], vocab)
    converted = {"id": keys.column, "completed": done, "created_at": created, "updated_at": updated,
                 "description": desc, "priority": prio, "tags": tag, "owner": owner}  # fmt: skip
    for column in converted.values():
        for i, problem in column.problems.items():
            why.setdefault(i, []).append(problem)

    frame = _frame(
        keys.legacy_keys, cols["title"], desc.values, done.values, owner.values, prio.values, done.problems
    )
    for i, found in validate(frame).items():
        if i in mapped.problems and type(mapped.raw[i]) is not dict:
            continue  # not a record at all: that is its reason
        for column, problem in found:
            target = _TARGET_OF_COLUMN.get(column, column)
            if target == "title" and problem == "is missing" and src["title"][i] is None:
                names = vocab.aliases["title"][:4]
                why.setdefault(i, []).append(f"title is missing (the record has no {' or '.join(names)} key)")
                continue
            why.setdefault(i, []).append(conv.reason(target, problem, src[target][i], cols[target][i]))

    rules = Counter(mapped.taken)
    defaults = Counter[str]()
    kept = Counter[str]()
    for target, column in converted.items():
        rules.update(column.rules)
        defaults[target] += len(column.defaulted - why.keys())

    extra_texts: list[str | None] = [None] * n
    kept_at = _kept(converted, src, n)
    if groups is None and object_keys is None:  # only records with something to keep
        candidates = sorted(set(kept_at) | {i for i, e in enumerate(mapped.extras) if e is not None})
    else:
        candidates = range(n)
    for i in candidates:
        if i in why:
            continue
        extra = _extra(mapped, i, kept_at.get(i), groups[i] if groups else None, object_keys, keys)
        if extra is None:
            continue
        kept.update(k for k in extra if k not in (GROUP_KEY, OBJECT_KEY))
        text = dumps_exact(extra, ascii_only=False)
        if has_surrogate(text):
            why[i] = [
                "a field kept for legacy_extra contains an unpaired surrogate, which PostgreSQL cannot store"
            ]
        else:
            extra_texts[i] = text

    raw, legacy_keys = mapped.raw, keys.legacy_keys

    def entry(position: int, reasons: list[str]) -> QuarantineEntry:  # holds what it needs, not the columns
        return _entry(raw, first, chunk, groups, object_keys, legacy_keys, of, position - first, reasons)

    quarantine = [entry(first + i, r) for i, r in why.items()]
    for q in quarantine:  # a record that names a key twice is kept as its text had it, both values
        if q.position - first in repeated:
            q.raw = repeated[q.position - first][1]
    keep = [i for i in range(n) if i not in why] if why else list(range(n))

    def pick(values: list[Any]) -> list[Any]:
        return values if len(keep) == n else [values[i] for i in keep]

    legacy_keys = list(keys.legacy_keys)
    for i in keep:
        if legacy_keys[i] is None:
            legacy_keys[i] = of[i].state.derived_key(mapped.raw[i], groups[i] if groups else chunk.segments[0].group)
    created_at = [c or ctx.fallback_timestamp for c in pick(created.values)]
    rows = Rows(
        positions=[first + i for i in keep],
        legacy_keys=pick(legacy_keys),
        legacy_ids=pick(keys.legacy_ids),
        titles=pick(cols["title"]),
        descriptions=pick(desc.values),
        completed=pick(done.values),
        created_at=created_at,
        updated_at=[u or c for u, c in zip(pick(updated.values), created_at, strict=True)],
        priorities=pick(prio.values),
        tags=pick(tag.values),
        extras=pick(extra_texts),
        owners=owners_of(pick(legacy_keys), pick(owner.values), ctx, [of[i].owner for i in keep] if of.one is None else of.one.owner),
        raw=pick(mapped.raw),
        defaulted_ts=[c is None for c in pick(created.values)],
        sources=[of.one.legacy_source] * len(keep) if of.one else [of[i].legacy_source for i in keep],
        files=[of.one.no] * len(keep) if of.one else [of[i].no for i in keep],
    )
    defaults["created_at"] = sum(rows.defaulted_ts)
    defaults["updated_at"] = sum(1 for u in pick(updated.values) if u is None)
    rows, duplicates = _settle_duplicates(rows, files, quarantine, lambda j: entry(j, []))
    quarantine.sort(key=lambda q: q.position)
    per_file: dict[int, int] = {}
    for s in chunk.segments:
        per_file[s.file] = per_file.get(s.file, 0) + len(s.records)
    return TransformedChunk(
        chunk.no, first, n, rows, quarantine, sum(duplicates.values()), mapped.keys_seen,
        created.naive + updated.naive, +rules, +defaults, kept, per_file, duplicates, entry,
    )  # fmt: skip


def _repeated(chunk: Chunk) -> dict[int, tuple[list[str], str]]:
    """Record index in the chunk -> (the keys its text names twice, the record's text with them)."""
    out: dict[int, tuple[list[str], str]] = {}
    at = 0
    for s in chunk.segments:
        for i, keys in (s.repeated or {}).items():
            out[at + i] = keys
        at += len(s.records)
    return out


def _origins(chunk: Chunk) -> tuple[list[Group] | None, list[str | None] | None]:
    """Per record: its group and its object key. None where every record of the chunk is in one
    plain container (the common case: then chunk.segments[0].group is every record's)."""
    segments = chunk.segments
    keyed = any(s.keys is not None for s in segments)
    object_keys = [k for s in segments for k in (s.keys or [None] * len(s.records))] if keyed else None
    one = segments[0].group if segments else None
    if one is not None and all(s.group is one for s in segments):
        plain = one.context is None and one.status is None and one.date is None
        return (None if plain else [one] * len(chunk)), object_keys
    return [s.group for s in segments for _ in s.records], object_keys


def _scope(keys: conv.Keys, groups: list[Group] | None, chunk: Chunk, of: ChunkFiles) -> None:
    """Ids that each list numbers on its own (`work` and `home` both have a task 1): the key is the
    list's path and the id, and legacy_id (unique per source) is left empty."""
    scoped = 0
    for i, key in enumerate(keys.legacy_keys):
        if key is not None and of[i].state.scoped_keys:
            group = groups[i] if groups else chunk.segments[0].group
            keys.legacy_keys[i] = f"{group.path}:{key}"
            keys.legacy_ids[i] = None
            scoped += 1
    keys.column.rules["id: numbered per list (ids repeat across lists, never within one): <list>:<id>"] += (
        scoped
    )


def _group_dates(
    created: conv.Column, groups: list[Group], vocab: Any, day_first: bool | None | list[bool | None]
) -> None:
    """A record without its own creation time takes its group's date (a day's list), by rule."""
    for i, g in enumerate(groups):
        if created.values[i] is None and i not in created.problems and g.date is not None:
            order = day_first[i] if isinstance(day_first, list) else day_first
            when = conv.times([g.date], ["(group)"], vocab, "created_at", order)
            if when.values[0] is not None:
                created.values[i] = when.values[0]
                created.rules["created_at <- the date of the group it is in (records without their own)"] += 1


def _frame(
    legacy_keys: list[Any], titles: list[Any], descriptions: list[Any], completed: list[Any],
    owners: list[Any], priorities: list[Any], failed: dict[int, str],
) -> pd.DataFrame:  # fmt: skip
    """The converted record as pandera sees it; a completion that did not convert (already a
    reason) stands as False so it is not reported twice."""
    if failed or None in completed:
        completed = [False if v is None else v for v in completed]
    columns = {
        "legacy_key": legacy_keys,
        "title": titles,
        "description": descriptions,
        "completed": completed,
        "owner": owners,
        "priority": priorities,
    }
    return pd.DataFrame(
        {
            name: pd.Series(values, dtype=object)
            for name, values in columns.items()
            if name not in ("legacy_key", "description", "owner") or any(v is not None for v in values)
        }
    )


def _kept(converted: dict[str, conv.Column], src: dict[str, list[str | None]], n: int) -> dict[int, set[str]]:
    """record index -> the source keys whose values the conversions changed (kept in legacy_extra)."""
    out: dict[int, set[str]] = {}
    for target, column in converted.items():
        for i in column.kept:
            key = src[target][i]
            if key is not None:
                out.setdefault(i, set()).add(key)
    return out


def _extra(
    mapped: MappedChunk,
    i: int,
    kept: set[str] | None,
    group: Group | None,
    object_keys: list[str | None] | None,
    keys: conv.Keys,
) -> dict[str, Any] | None:
    """What of record i stays in legacy_extra: keys that map to nothing, values a conversion
    changed, the group it was found in and the object key it was stored under (unless that is its id)."""
    record = mapped.raw[i]
    extra = mapped.extras[i]
    if kept and type(record) is dict:
        extra = {k: v for k, v in record.items() if (extra and k in extra) or k in kept}
    if group is not None and group.context:
        extra = {**(extra or {}), GROUP_KEY: group.context}
    own_key = object_keys[i] if object_keys else None
    if own_key is not None and keys.legacy_keys[i] != own_key:
        extra = {**(extra or {}), OBJECT_KEY: own_key}
    return extra or None


def _entry(
    raw: list[Any],
    first: int,
    chunk: Chunk,
    groups: list[Group] | None,
    object_keys: list[str | None] | None,
    legacy_keys: list[Any],
    of: ChunkFiles,
    i: int,
    reasons: list[str],
) -> QuarantineEntry:
    """The quarantine entry of the chunk's record i (its raw record, legacy key and where it is)."""
    group = groups[i] if groups else chunk.segments[0].group
    index = _index_in_container(chunk, i)
    key = legacy_keys[i]
    return QuarantineEntry(
        first + i,
        None if key is None else str(key)[:100],
        raw_json(raw[i]),
        reasons,
        location(group, index, object_keys[i] if object_keys else None),
        of[i].no,
        of[i].legacy_source,
    )


def _index_in_container(chunk: Chunk, i: int) -> int:
    for s in chunk.segments:
        if i < len(s.records):
            return s.start + i
        i -= len(s.records)
    return i


def owners_of(
    legacy_keys: list[Any], named: list[Any], ctx: TransformContext, default: str | list[str] | None = None
) -> list[str]:
    """Each record's owner: the owner map, else the record's own owner, else its file's owner (one
    for all, or per record), else the run's default user."""
    fallback = ctx.default_owner if default is None else default
    defaults = fallback if isinstance(fallback, list) else [fallback] * len(named)
    if not ctx.owner_map and named.count(None) == len(named):
        if not isinstance(fallback, list):
            return [normalize_email(fallback)] * len(named)
        return [normalize_email(d) for d in defaults]
    return [
        normalize_email(ctx.owner_map.get(key) or own or d)
        for key, own, d in zip(legacy_keys, named, defaults, strict=True)
    ]


def _settle_duplicates(
    rows: Rows,
    files: Mapping[int, FileContext],
    quarantine: list[QuarantineEntry],
    entry: Callable[[int], QuarantineEntry],
) -> tuple[Rows, Counter[int]]:
    """Rows less the later copies of a legacy key in their file: identical ones are counted,
    conflicting ones go to quarantine (entry(position) makes their entry). Only keys the pre-check
    saw twice are looked at."""
    drop: set[int] = set()
    duplicates: Counter[int] = Counter()
    if not any(f.state.duplicate_keys for f in files.values()):
        return rows, duplicates
    for j, key in enumerate(rows.legacy_keys):
        state = files[rows.files[j]].state
        if not state.duplicate_keys or conv.key_hash(key) not in state.duplicate_keys:
            continue
        content = (
            rows.titles[j], rows.descriptions[j], rows.completed[j], rows.created_at[j], rows.updated_at[j],
            rows.priorities[j], rows.tags[j], rows.extras[j], rows.owners[j],
        )  # fmt: skip
        verdict = state.classify(key, rows.positions[j], content)
        if verdict is None:
            continue
        drop.add(j)
        if verdict == "duplicate":
            duplicates[rows.files[j]] += 1
        else:
            conflict = entry(rows.positions[j])
            conflict.reasons = [verdict]
            quarantine.append(conflict)
    return (rows.without(drop) if drop else rows), duplicates


@dataclass
class Rendered:
    """COPY input for a chunk: CSV text, and the exact sum of the rows' checksums. A chunk that a
    re-sync will stage keeps each row's line instead of the text (some() of them are staged): the
    two at once were one more chunk's worth of memory for each chunk in flight."""

    text: bytes | None
    checksum: int
    count: int
    task_ids: list[str]
    checksums: list[int]
    lines: list[str] | None = None  # each row's CSV line, when asked for

    @property
    def csv(self) -> bytes:
        return self.text if self.text is not None else self.some(range(self.count))

    def some(self, rows: Sequence[int]) -> bytes:
        """The CSV of these rows alone (lines were kept)."""
        assert self.lines is not None
        return "".join([self.lines[j] for j in rows]).encode("utf-8")


def render(rows: Rows, source: str, user_ids: Mapping[str, str], run_id: str, *, each: bool = False) -> Rendered:
    """Pure: the chunk's rows as COPY … (FORMAT csv) input: the canonical line, then the line's
    checksum (legacy_checksum) and migration_run_id. Rows carry their own legacy sources (a chunk
    of many files); source names the one of rows that do not. each: keep each row's line too."""
    sources = rows.sources or [source] * len(rows)
    ids = _keys_by_source(sources, rows.legacy_keys)
    lines = row_lines(
        ids,
        [user_ids[o] for o in rows.owners],
        sources[0] if len(set(sources)) == 1 else sources,
        rows.legacy_keys,
        rows.legacy_ids,
        rows.titles,
        rows.descriptions,
        rows.completed,
        rows.created_at,
        rows.updated_at,
        rows.priorities,
        rows.tags,
        rows.extras,
    )
    encoded = [line.encode("utf-8") for line in lines]
    sums = line_checksums(encoded)
    tail = f",{run_id}\n"
    csv_lines = [f"{line},{c}{tail}" for line, c in zip(lines, sums, strict=True)]
    if each:
        return Rendered(None, sum(sums), len(encoded), ids, sums, csv_lines)
    return Rendered("".join(csv_lines).encode("utf-8"), sum(sums), len(encoded), ids, sums)


def _keys_by_source(sources: list[str], legacy_keys: list[str]) -> list[str]:
    """uuid5 keys of rows that may come from several legacy sources (each source's prefix hashed
    once; the UUID bits set once for the whole chunk, not once per source: a chunk of a fleet
    holds hundreds of files)."""
    if len(set(sources)) <= 1:
        return task_keys(sources[0] if sources else "", legacy_keys)
    prefixes: dict[str, Any] = {}
    digests = []
    for source, key in zip(sources, legacy_keys, strict=True):
        base = prefixes.get(source)
        if base is None:
            base = prefixes[source] = _hashed_prefix(f"{source}:")
        digests.append(_digest(base, str(key)))
    return _uuid_hexes(digests)
