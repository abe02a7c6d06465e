"""Records -> rows, as pure functions: deterministic keys, owners, timestamps, legacy_extra,
duplicates and quarantine entries.

Keys are uuid5 over a fixed project namespace and "<source>:<legacy id>", so a re-run (or anyone
with `uuid.uuid5`) gets the same ids. A record's own created_at is kept; one without gets the run's
start time (fixed per run, so a resumed run renders identical rows).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from tasks.checksum import line_checksums, row_lines
from tasks.mapping import MappedChunk
from validation.records import frame, parse_timestamps, validate

# Fixed forever: changing it would give every migrated row a new id.
PROJECT_NAMESPACE = uuid.UUID("3f0b8a52-5c1e-4d6f-9a8e-2b7c4e1d9f60")
_NS = PROJECT_NAMESPACE.bytes


def uuid5_hexes(prefix: str, suffixes: Iterable[str]) -> list[str]:
    """[uuid.uuid5(PROJECT_NAMESPACE, prefix + suffix).hex …] for a batch, without UUID objects
    (render's hot path): the namespace and prefix are hashed once and each name continues a copy
    of that state (copying is cheaper than a new hash object), then the version and variant bits
    are set for all at once."""
    base = hashlib.sha1(_NS + prefix.encode(), usedforsecurity=False)
    digests = []
    for suffix in suffixes:
        h = base.copy()
        h.update(suffix.encode())
        digests.append(h.digest()[:16])
    if not digests:
        return []
    a = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, 16).copy()
    a[:, 6] = (a[:, 6] & 0x0F) | 0x50
    a[:, 8] = (a[:, 8] & 0x3F) | 0x80
    text = a.tobytes().hex()
    return [text[k : k + 32] for k in range(0, len(text), 32)]


def task_keys(source: str, legacy_ids: Iterable[int]) -> list[str]:
    return uuid5_hexes(f"{source}:", map(str, legacy_ids))


def task_key(source: str, legacy_id: int) -> str:
    return task_keys(source, [legacy_id])[0]


def user_key(email: str) -> str:
    return uuid5_hexes("user:", [email])[0]


def normalize_email(email: str) -> str:
    return email.strip().lower()


@dataclass(frozen=True)
class TransformContext:
    source_name: str
    default_owner: str
    fallback_timestamp: str  # the run's start, in the canonical format
    owner_map: Mapping[int, str] = field(default_factory=dict)


@dataclass
class QuarantineEntry:
    position: int
    legacy_id: str | None
    raw: str
    reasons: list[str]


@dataclass
class Rows:
    """The chunk's records that go to `tasks`, column by column."""

    positions: list[int] = field(default_factory=list)
    legacy_ids: list[int] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    descriptions: list[str | None] = field(default_factory=list)
    completed: list[bool] = field(default_factory=list)
    created_at: list[str] = field(default_factory=list)
    updated_at: list[str] = field(default_factory=list)
    extras: list[str | None] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)
    raw: list[Any] = field(default_factory=list)
    # True where the source had no created_at and the run's start time stands in for it
    defaulted_ts: list[bool] = field(default_factory=list)

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


class DuplicateTracker:
    """Copies of a legacy id: the first valid one migrates, identical later ones are duplicates,
    different later ones go to quarantine. Only ids the pre-check saw twice are remembered."""

    def __init__(self, duplicate_ids: frozenset[int]) -> None:
        self.ids = duplicate_ids
        self.first: dict[int, tuple[int, tuple[Any, ...]]] = {}

    def classify(self, legacy_id: int, position: int, content: tuple[Any, ...]) -> str | None:
        """None for the first copy, "duplicate" for an identical one, else a quarantine reason."""
        if legacy_id not in self.ids:
            return None
        seen = self.first.get(legacy_id)
        if seen is None:
            self.first[legacy_id] = (position, content)
            return None
        if seen[1] == content:
            return "duplicate"
        return f"conflicting duplicate: an earlier record has the same id and other content (id {legacy_id}, first at position {seen[0]})"


_DECIMAL = re.compile(r'"\\u0000dec:([^"\\]*)\\u0000"')


def dumps_exact(value: Any, *, ascii_only: bool) -> str:
    """Compact JSON with numbers written exactly as parsed (the decoder gives Decimal for fractions)."""

    def mark(v: Any) -> Any:
        if isinstance(v, Decimal):
            return f"\x00dec:{v}\x00"
        if isinstance(v, dict):
            return {k: mark(x) for k, x in v.items()}
        if isinstance(v, list):
            return [mark(x) for x in v]
        return v

    text = json.dumps(mark(value), ensure_ascii=ascii_only, separators=(",", ":"))
    return _DECIMAL.sub(r"\1", text) if "\\u0000dec:" in text else text


def raw_json(record: Any) -> str:
    """The record as text PostgreSQL can store whatever it holds (NULs, lone surrogates escaped)."""
    return dumps_exact(record, ascii_only=True)


_TZ_SUFFIX = re.compile(r"(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$")


def is_naive(text: str) -> bool:
    """True when an ISO-8601 timestamp carries no offset (read as UTC); the date part is skipped."""
    return _TZ_SUFFIX.search(text.strip()[10:]) is None


def _timestamps(df: pd.DataFrame, name: str) -> list[str | None]:
    """A timestamp column in the canonical format; None throughout when the chunk has none."""
    return canonical_timestamps(parse_timestamps(df[name])) if name in df else [None] * len(df)


def canonical_timestamps(parsed: pd.Series) -> list[str | None]:
    """datetime64[us, UTC] -> 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (the format ROW_LINE_SQL renders)."""
    missing = parsed.isna()
    if missing.all():  # a column the file does not have (often updated_at)
        return [None] * len(parsed)
    values = parsed.dt.tz_convert(None).to_numpy(dtype="datetime64[us]")
    texts: list[str | None] = np.datetime_as_string(values, unit="us", timezone="UTC").tolist()
    return [None if t == "NaT" else t for t in texts] if missing.any() else texts


def count_naive(values: list[Any]) -> int:
    """How many timestamp strings carry no offset (read as UTC); a trailing Z settles most at once."""
    return sum(1 for v in values if type(v) is str and not v.rstrip().endswith(("Z", "z")) and is_naive(v))


def owners_of(legacy_ids: list[Any], named: list[Any], ctx: TransformContext) -> list[str]:
    """Each record's owner: the owner map, else the record's own owner, else the default."""
    if not ctx.owner_map and named.count(None) == len(named):
        return [normalize_email(ctx.default_owner)] * len(named)
    return [
        normalize_email(ctx.owner_map.get(lid) or own or ctx.default_owner)
        for lid, own in zip(legacy_ids, named, strict=True)
    ]


def transform_chunk(
    chunk_no: int, mapped: MappedChunk, ctx: TransformContext, dups: DuplicateTracker
) -> TransformedChunk:
    """Validate a mapped chunk with pandera and turn it into rows and quarantine entries.
    Column by column: per-record work is left to the records that need it (failures, legacy_extra,
    legacy ids the pre-check saw twice)."""
    n, first, cols = len(mapped), mapped.first_position, mapped.columns
    df = frame(cols)
    why: dict[int, list[str]] = {i: list(p) for i, p in mapped.problems.items()}
    for i, reasons in validate(df).items():
        why.setdefault(i, []).extend(reasons)
    extra_texts: list[str | None] = [None] * n
    for i, extra in enumerate(mapped.extras):
        if extra is not None and i not in why:
            text = dumps_exact(extra, ascii_only=False)
            try:
                text.encode("utf-8")
                extra_texts[i] = text
            except UnicodeEncodeError:
                why[i] = ["a field kept for legacy_extra contains an unpaired surrogate"]
    ids = cols["id"]
    quarantine = [
        QuarantineEntry(first + i, None if ids[i] is None else str(ids[i])[:100], raw_json(mapped.raw[i]), r)
        for i, r in why.items()
    ]
    keep = [i for i in range(n) if i not in why] if why else list(range(n))

    def pick(values: list[Any]) -> list[Any]:
        return values if len(keep) == n else [values[i] for i in keep]

    created = pick(_timestamps(df, "created_at"))
    updated = pick(_timestamps(df, "updated_at"))
    created_at = [c or ctx.fallback_timestamp for c in created]
    rows = Rows(
        positions=[first + i for i in keep],
        legacy_ids=pick(ids),
        titles=pick(cols["title"]),
        descriptions=pick(cols["description"]),
        completed=pick(cols["completed"]),
        created_at=created_at,
        updated_at=[u or c for u, c in zip(updated, created_at, strict=True)],
        extras=pick(extra_texts),
        owners=owners_of(pick(ids), pick(cols["owner"]), ctx),
        raw=pick(mapped.raw),
        defaulted_ts=[c is None for c in created],
    )
    rows, duplicates = _settle_duplicates(rows, dups, quarantine)
    quarantine.sort(key=lambda q: q.position)
    return TransformedChunk(
        chunk_no, first, n, rows, quarantine, duplicates, mapped.keys_seen, count_naive(cols["created_at"])
    )


def _settle_duplicates(
    rows: Rows, dups: DuplicateTracker, quarantine: list[QuarantineEntry]
) -> tuple[Rows, int]:
    """Rows less the later copies of a legacy id: identical ones are counted, conflicting ones go
    to quarantine. Only ids the pre-check saw more than once are looked at."""
    drop: set[int] = set()
    duplicates = 0
    for j, lid in enumerate(rows.legacy_ids if dups.ids else ()):
        if lid not in dups.ids:
            continue
        content = (
            rows.titles[j],
            rows.descriptions[j],
            rows.completed[j],
            rows.created_at[j],
            rows.updated_at[j],
            rows.extras[j],
            rows.owners[j],
        )
        verdict = dups.classify(lid, rows.positions[j], content)
        if verdict is None:
            continue
        drop.add(j)
        if verdict == "duplicate":
            duplicates += 1
        else:
            quarantine.append(QuarantineEntry(rows.positions[j], str(lid), raw_json(rows.raw[j]), [verdict]))
    return (rows.without(drop) if drop else rows), duplicates


@dataclass
class Rendered:
    """COPY input for a chunk: CSV text, and the exact sum of the rows' checksums."""

    csv: bytes
    checksum: int
    count: int
    task_ids: list[str]
    checksums: list[int]


def render(rows: Rows, source: str, user_ids: Mapping[str, str], run_id: str) -> Rendered:
    """Pure: the chunk's rows as COPY … (FORMAT csv) input, ending in migration_run_id."""
    ids = task_keys(source, rows.legacy_ids)
    lines = row_lines(
        ids,
        [user_ids[o] for o in rows.owners],
        source,
        rows.legacy_ids,
        rows.titles,
        rows.descriptions,
        rows.completed,
        rows.created_at,
        rows.updated_at,
        rows.extras,
    )
    encoded = [line.encode("utf-8") for line in lines]
    sums = line_checksums(encoded)
    tail = f",{run_id}\n".encode()
    body = tail.join(encoded) + tail if encoded else b""
    return Rendered(body, sum(sums), len(encoded), ids, sums)
