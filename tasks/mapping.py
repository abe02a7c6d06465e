"""One declarative field mapping from the keys Phase 1 CLIs wrote to the fields we migrate.

Versions of the CLI disagree (`completed` or `is_completed`, `created_at` or none, a bare list or
`{"tasks": …}`). Every known alias is listed here once; `--map SOURCE=TARGET` adds the rest. Keys
that map to nothing are kept, whole, for the row's `legacy_extra`.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.errors import InputError

# Target field -> the source keys that mean it, in order of preference.
BUILTIN_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "task_id"),
    "title": ("title",),
    "description": ("description", "desc", "details"),
    "completed": ("completed", "is_completed", "done", "is_done"),
    "created_at": ("created_at", "createdAt", "created"),
    "updated_at": ("updated_at", "updatedAt", "updated"),
    "owner": ("owner", "user_email", "owner_email"),
}
ARRAY_TARGET = "tasks"
TARGETS = tuple(BUILTIN_ALIASES)


class MappingError(InputError):
    """A --map argument that cannot be applied."""


@dataclass(frozen=True)
class FieldMapping:
    aliases: dict[str, tuple[str, ...]]
    array_keys: tuple[str, ...] = (ARRAY_TARGET,)
    overrides: tuple[str, ...] = field(default=())

    @classmethod
    def build(cls, overrides: Sequence[str] = ()) -> FieldMapping:
        """The built-in aliases plus overrides written as SOURCE=TARGET (an override wins)."""
        aliases = {t: list(keys) for t, keys in BUILTIN_ALIASES.items()}
        array_keys = [ARRAY_TARGET]
        for item in overrides:
            source, sep, target = item.partition("=")
            source, target = source.strip(), target.strip()
            if not sep or not source or not target:
                raise MappingError(f"--map {item!r}: expected SOURCE=TARGET, for example is_done=completed")
            if target == ARRAY_TARGET:
                array_keys.insert(0, source)
                continue
            if target not in aliases:
                raise MappingError(
                    f"--map {item!r}: unknown target {target!r} (one of: {', '.join((*TARGETS, ARRAY_TARGET))})"
                )
            for keys in aliases.values():  # a source key means one thing only
                if source in keys:
                    keys.remove(source)
            aliases[target].insert(0, source)
        return cls(
            aliases={t: tuple(k) for t, k in aliases.items()},
            array_keys=tuple(dict.fromkeys(array_keys)),
            overrides=tuple(overrides),
        )

    @property
    def key_to_target(self) -> dict[str, str]:
        return {key: target for target, keys in self.aliases.items() for key in keys}

    def describe(self, keys_seen: set[str] | None = None) -> dict[str, Any]:
        """For the report: the mapping in force and, given the keys a file used, what was applied."""
        out: dict[str, Any] = {"overrides": list(self.overrides), "array_keys": list(self.array_keys)}
        if keys_seen is not None:
            k2t = self.key_to_target
            out["applied"] = {k: k2t[k] for k in sorted(keys_seen) if k in k2t}
            out["kept_in_legacy_extra"] = sorted(k for k in keys_seen if k not in k2t)
        return out


@dataclass
class MappedChunk:
    """A chunk of source records split into target columns, extras and mapping problems."""

    first_position: int
    raw: list[Any]
    columns: dict[str, list[Any]]
    extras: list[dict[str, Any] | None]
    problems: list[list[str]]
    keys_seen: set[str]

    def __len__(self) -> int:
        return len(self.raw)


def split_records(records: list[Any], first_position: int, mapping: FieldMapping) -> MappedChunk:
    """Pure: spread each record's keys over the target columns; unknown keys go to extras."""
    k2t = mapping.key_to_target
    columns: dict[str, list[Any]] = {t: [None] * len(records) for t in mapping.aliases}
    extras: list[dict[str, Any] | None] = [None] * len(records)
    problems: list[list[str]] = [[] for _ in records]
    keys_seen: set[str] = set()
    rank = {key: i for keys in mapping.aliases.values() for i, key in enumerate(keys)}
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            problems[i].append(f"record is not a JSON object (got {type_name(record)})")
            continue
        keys_seen.update(record)
        chosen: dict[str, str] = {}
        extra = None
        for key, value in record.items():
            target = k2t.get(key)
            if target is None:
                if extra is None:
                    extra = {}
                extra[key] = value
                continue
            if target in chosen:
                other = chosen[target]
                if record[other] != value:
                    problems[i].append(f"{other!r} and {key!r} both give {target} with different values")
                if rank[key] > rank[other]:
                    continue
            chosen[target] = key
            columns[target][i] = value
        extras[i] = extra
    return MappedChunk(first_position, records, columns, extras, problems, keys_seen)


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "number"


def read_owner_map(path: str | Path | None) -> dict[int, str]:
    """--owner-map CSV: a header with legacy_id and email columns, then one task per line."""
    if not path:
        return {}
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip() for c in reader.fieldnames or []]
            if "legacy_id" not in fields or "email" not in fields:
                raise MappingError(f"{path}: owner map needs a header with legacy_id and email columns")
            owners: dict[int, str] = {}
            for line, row in enumerate(reader, start=2):
                row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
                try:
                    legacy_id = int(row["legacy_id"])
                except ValueError:
                    raise MappingError(
                        f"{path}: line {line}: legacy_id {row['legacy_id']!r} is not an integer"
                    ) from None
                email = row["email"].lower()
                if "@" not in email:
                    raise MappingError(f"{path}: line {line}: {row['email']!r} is not an email address")
                owners[legacy_id] = email
            return owners
    except FileNotFoundError:
        raise MappingError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise MappingError(f"{path}: not UTF-8") from None
    except csv.Error as exc:
        raise MappingError(f"{path}: not a CSV file ({exc})") from None
