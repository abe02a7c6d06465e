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
    problems: dict[int, list[str]]  # record index -> what the mapping found wrong with it
    keys_seen: set[str]

    def __len__(self) -> int:
        return len(self.raw)


@dataclass(frozen=True)
class _Plan:
    """How the records with one particular sequence of keys spread over the targets."""

    take: tuple[tuple[str, str], ...]  # (target, the key that gives it)
    extra_keys: tuple[str, ...]
    clashes: tuple[tuple[str, str, str], ...]  # (target, first key, second key): values must agree


def _plan(keys: tuple[str, ...], mapping: FieldMapping) -> _Plan:
    k2t = mapping.key_to_target
    rank = {key: i for keys_ in mapping.aliases.values() for i, key in enumerate(keys_)}
    chosen: dict[str, str] = {}
    extra: list[str] = []
    clashes: list[tuple[str, str, str]] = []
    for key in keys:
        target = k2t.get(key)
        if target is None:
            extra.append(key)
            continue
        if target in chosen:
            other = chosen[target]
            clashes.append((target, other, key))
            if rank[key] > rank[other]:
                continue
        chosen[target] = key
    return _Plan(tuple(chosen.items()), tuple(extra), tuple(clashes))


def split_records(records: list[Any], first_position: int, mapping: FieldMapping) -> MappedChunk:
    """Pure: spread each record's keys over the target columns; unknown keys go to extras.
    Records are grouped by their sequence of keys (a file usually has one or two), so the mapping
    is decided once per group and each column is gathered in one pass."""
    n = len(records)
    columns: dict[str, list[Any]] = {t: [None] * n for t in mapping.aliases}
    extras: list[dict[str, Any] | None] = [None] * n
    problems: dict[int, list[str]] = {}
    shapes = [tuple(r) if type(r) is dict else None for r in records]
    distinct = set(shapes)
    groups: dict[tuple[str, ...] | None, list[int]] = {}
    if len(distinct) == 1:
        groups[shapes[0] if n else None] = list(range(n))
    else:
        for i, shape in enumerate(shapes):
            groups.setdefault(shape, []).append(i)
    for shape, idx in groups.items():
        if shape is None:
            for i in idx:
                problems[i] = [f"record is not a JSON object (got {type_name(records[i])})"]
            continue
        plan = _plan(shape, mapping)
        whole = len(idx) == n
        members = records if whole else [records[i] for i in idx]
        for target, key in plan.take:
            values = [r[key] for r in members]
            if whole:
                columns[target] = values
            else:
                column = columns[target]
                for i, v in zip(idx, values, strict=True):
                    column[i] = v
        if plan.extra_keys:
            for i, r in zip(idx, members, strict=True):
                extras[i] = {k: r[k] for k in plan.extra_keys}
        for target, first, second in plan.clashes:
            for i, r in zip(idx, members, strict=True):
                if r[first] != r[second]:
                    problems.setdefault(i, []).append(
                        f"{first!r} and {second!r} both give {target} with different values"
                    )
    keys_seen = {k for shape in distinct if shape is not None for k in shape}
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
