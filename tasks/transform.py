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
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from tasks.checksum import line_checksum, row_line
from tasks.mapping import MappedChunk
from validation.records import frame, parse_timestamps, validate

# Fixed forever: changing it would give every migrated row a new id.
PROJECT_NAMESPACE = uuid.UUID("3f0b8a52-5c1e-4d6f-9a8e-2b7c4e1d9f60")
_NS = PROJECT_NAMESPACE.bytes


def uuid5_hex(name: str) -> str:
    """uuid.uuid5(PROJECT_NAMESPACE, name).hex, without building UUID objects (hot path)."""
    digest = bytearray(hashlib.sha1(_NS + name.encode("utf-8"), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    return digest.hex()


def task_key(source: str, legacy_id: int) -> str:
    return uuid5_hex(f"{source}:{legacy_id}")


def user_key(email: str) -> str:
    return uuid5_hex(f"user:{email}")


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
    """Compact JSON with numbers written exactly as parsed (ijson gives Decimal for non-integers)."""

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


def canonical_timestamps(parsed: pd.Series) -> list[str | None]:
    """datetime64[us, UTC] -> 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (the format ROW_LINE_SQL renders)."""
    values = parsed.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    texts = np.datetime_as_string(values, unit="us")
    return [None if t == "NaT" else f"{t}Z" for t in texts.tolist()]


def transform_chunk(
    chunk_no: int, mapped: MappedChunk, ctx: TransformContext, dups: DuplicateTracker
) -> TransformedChunk:
    """Validate a mapped chunk with pandera and turn it into rows and quarantine entries."""
    df = frame(mapped.columns)
    reasons = validate(df)
    cols = mapped.columns
    created = canonical_timestamps(parse_timestamps(df["created_at"]))
    updated = canonical_timestamps(parse_timestamps(df["updated_at"]))
    naive = sum(1 for v in cols["created_at"] if isinstance(v, str) and is_naive(v))
    rows = Rows()
    quarantine: list[QuarantineEntry] = []
    duplicates = 0
    for i, record in enumerate(mapped.raw):
        position = mapped.first_position + i
        why = list(mapped.problems[i]) + reasons.get(i, [])
        extra = mapped.extras[i]
        extra_text = None
        if extra is not None and not why:
            extra_text = dumps_exact(extra, ascii_only=False)
            try:
                extra_text.encode("utf-8")
            except UnicodeEncodeError:
                why.append("a field kept for legacy_extra contains an unpaired surrogate")
        legacy_id = cols["id"][i]
        if why:
            lid = None if legacy_id is None else str(legacy_id)[:100]
            quarantine.append(QuarantineEntry(position, lid, raw_json(record), why))
            continue
        owner = ctx.owner_map.get(legacy_id) or cols["owner"][i] or ctx.default_owner
        owner = normalize_email(owner)
        created_at = created[i] or ctx.fallback_timestamp
        updated_at = updated[i] or created_at
        title, description, completed = cols["title"][i], cols["description"][i], cols["completed"][i]
        verdict = dups.classify(
            legacy_id, position, (title, description, completed, created_at, updated_at, extra_text, owner)
        )
        if verdict == "duplicate":
            duplicates += 1
            continue
        if verdict is not None:
            quarantine.append(QuarantineEntry(position, str(legacy_id), raw_json(record), [verdict]))
            continue
        rows.positions.append(position)
        rows.legacy_ids.append(legacy_id)
        rows.titles.append(title)
        rows.descriptions.append(description)
        rows.completed.append(completed)
        rows.created_at.append(created_at)
        rows.updated_at.append(updated_at)
        rows.extras.append(extra_text)
        rows.owners.append(owner)
        rows.raw.append(record)
        rows.defaulted_ts.append(created[i] is None)
    return TransformedChunk(
        chunk_no, mapped.first_position, len(mapped), rows, quarantine, duplicates, mapped.keys_seen, naive
    )


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
    lines: list[str] = []
    ids: list[str] = []
    sums: list[int] = []
    src = source
    for legacy_id, title, desc, done, created, updated, extra, owner in zip(
        rows.legacy_ids,
        rows.titles,
        rows.descriptions,
        rows.completed,
        rows.created_at,
        rows.updated_at,
        rows.extras,
        rows.owners,
        strict=True,
    ):
        tid = task_key(src, legacy_id)
        line = row_line(tid, user_ids[owner], src, legacy_id, title, desc, done, created, updated, extra)
        sums.append(line_checksum(line))
        lines.append(line)
        ids.append(tid)
    tail = f",{run_id}\n"
    body = tail.join(lines) + tail if lines else ""
    return Rendered(body.encode("utf-8"), sum(sums), len(lines), ids, sums)
