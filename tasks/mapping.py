"""Which key of a record gives which field: the built-in table (tasks/vocabulary.py), a mapping file
(`--mapping FILE`, YAML) and `--map SOURCE=TARGET` on top, in that order of strength.

The decision is made once per distinct sequence of keys (a file usually has one or two): the first
alias present wins a field, a lower-ranked alias of the same field stays in legacy_extra, and a key
that maps to nothing is kept there whole. Text under `description` is the title when the record has
no title key at all ("description used as the only text").
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from tasks.errors import InputError
from tasks.vocabulary import BUILTIN, STRICT, TARGETS, Vocabulary, norm

ARRAY_TARGET = "tasks"
EXTRA_TARGET = "legacy_extra"  # --map KEY=legacy_extra: keep the key in legacy_extra, map it to nothing
NO_COLUMN = ("status", "completed_at", "due_date")  # understood, and kept in legacy_extra as written
AS_IS = ("title", "description", "owner")  # taken as they are (validation judges them)
# A record saying "done" twice, under two keys, must say the same thing both times.
MUST_AGREE = ("completed",)
DATE_ORDERS = ("day-first", "month-first")


class MappingError(InputError):
    """A --map argument or a mapping file that cannot be applied."""


class Truncated(str):
    """The text of the record a truncated file ends in (loaded with --salvage): quarantined."""


@dataclass(frozen=True)
class Plan:
    """How the records with one sequence of keys spread over the targets."""

    take: dict[str, str]  # target -> the key that gives it
    extra_keys: tuple[str, ...]  # keys kept whole in legacy_extra
    title_fallback: bool = False  # the title comes from a description-like key
    clashes: tuple[tuple[str, str], ...] = ()  # (key taken, another key of the same meaning): must agree


@dataclass(frozen=True, eq=False)
class FieldMapping:
    vocab: Vocabulary = BUILTIN
    overrides: dict[str, str] = field(default_factory=dict)  # exact source key -> target
    container: tuple[str, ...] | None = None  # --map PATH=tasks
    dates: str | None = None  # "day-first" or "month-first": settles DD/MM for the whole file
    spec: dict[str, Any] = field(default_factory=dict)  # what built it, for run parameters and reports

    @classmethod
    def build(
        cls, overrides: Sequence[str] = (), mapping_file: str | None = None, strict: bool = False
    ) -> FieldMapping:
        """The built-in table (or STRICT), a mapping file on top and --map overrides above that."""
        spec: dict[str, Any] = {"map": list(overrides), "strict": strict}
        if mapping_file:
            spec["mapping_file"] = read_mapping_file(mapping_file)
        return cls.from_spec(spec)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> FieldMapping:
        """The mapping a spec describes (what build() records, and what a run keeps in its
        parameters, so an audit or a resume rebuilds the very same)."""
        vocab = STRICT if spec.get("strict") else BUILTIN
        file_spec = spec.get("mapping_file") or {}
        fields: dict[str, str] = {}
        container: tuple[str, ...] | None = None
        if file_spec.get("vocabulary"):
            vocab = vocab.extended(file_spec["vocabulary"])
        fields.update(file_spec.get("fields") or {})
        if file_spec.get("records"):
            container = _path(str(file_spec["records"]))
        for item in spec.get("map") or ():
            source, sep, target = item.partition("=")
            source, target = source.strip(), target.strip()
            if not sep or not source or not target:
                raise MappingError(f"--map {item!r}: expected SOURCE=TARGET, for example is_done=completed")
            if target == ARRAY_TARGET:
                container = _path(source)
                continue
            fields[source] = target
        for source, target in fields.items():
            if target not in (*TARGETS, EXTRA_TARGET):
                raise MappingError(
                    f"mapping {source}={target}: unknown target {target!r} "
                    f"(one of: {', '.join((*TARGETS, EXTRA_TARGET, ARRAY_TARGET))})"
                )
        return cls(vocab, fields, container, file_spec.get("dates"), spec)

    def key_of(self, key: str) -> str:
        return norm(key) if self.vocab.infer else key

    def plan(self, keys: tuple[str, ...]) -> Plan:
        return _plan(self, keys)

    def aliases_of(self, target: str) -> tuple[str, ...]:
        return self.vocab.aliases.get(target, ())


@lru_cache(maxsize=4096)
def _plan(mapping: FieldMapping, keys: tuple[str, ...]) -> Plan:
    ranks = {t: {k: i for i, k in enumerate(mapping.vocab.aliases.get(t, ()))} for t in TARGETS}
    chosen: dict[str, tuple[int, str]] = {}
    extra: list[str] = []
    for key in keys:
        if key in mapping.overrides:
            target, rank = mapping.overrides[key], -1
        else:
            n = mapping.key_of(key)
            hits = [(r[n], t) for t, r in ranks.items() if n in r]
            if not hits:
                extra.append(key)
                continue
            rank, target = min(hits)
        if target == EXTRA_TARGET:
            extra.append(key)
            continue
        held = chosen.get(target)
        if held is None or rank < held[0]:
            if held is not None:
                extra.append(held[1])
            chosen[target] = (rank, key)
        else:
            extra.append(key)
    # A key that lost its first meaning to a better one takes its next, if still free: `content`
    # beside a `title` is the description.
    for key in list(extra):
        if key in mapping.overrides:
            continue
        n = mapping.key_of(key)
        free = sorted((r[n], t) for t, r in ranks.items() if n in r and t not in chosen)
        if free:
            chosen[free[0][1]] = (free[0][0], key)
            extra.remove(key)
    take = {t: k for t, (_, k) in chosen.items()}
    fallback = False
    if "title" not in take and mapping.vocab.infer:
        for key in keys:
            if mapping.key_of(key) in mapping.vocab.title_fallbacks and take.get("description") == key:
                take["title"] = key
                del take["description"]
                fallback = True
                break
    kept = [k for k in extra if k not in take.values()]
    kept += [take[t] for t in NO_COLUMN if t in take]
    order = {k: i for i, k in enumerate(keys)}
    clashes = tuple(
        (take[t], k)
        for t in MUST_AGREE
        if t in take
        for k in keys
        if k != take[t] and k not in mapping.overrides and mapping.key_of(k) in ranks[t]
    )
    return Plan(take, tuple(sorted(set(kept), key=order.__getitem__)), fallback, clashes)


def _path(text: str) -> tuple[str, ...]:
    parts = tuple(p for p in text.split("."))
    if not all(parts):
        raise MappingError(f"--map {text}=tasks: expected KEY or KEY.KEY... naming where the records are")
    return parts


def read_mapping_file(path: str | Path) -> dict[str, Any]:
    """A YAML mapping file: `records`, `fields`, `dates` and `vocabulary` (all optional)."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MappingError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"{p}: cannot be read ({exc})") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise MappingError(f"{p}: not valid YAML{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MappingError(f"{p}: expected a mapping with records, fields, dates or vocabulary")
    allowed = {"records", "fields", "dates", "vocabulary"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise MappingError(f"{p}: unknown section {unknown[0]!r} (known: {', '.join(sorted(allowed))})")
    if data.get("fields") is not None and not (
        isinstance(data["fields"], dict) and all(isinstance(v, str) for v in data["fields"].values())
    ):
        raise MappingError(f"{p}: fields: expected SOURCE_KEY: TARGET lines")
    if data.get("dates") not in (None, *DATE_ORDERS):
        raise MappingError(f"{p}: dates: expected one of {', '.join(DATE_ORDERS)}")
    vocab = data.get("vocabulary")
    if vocab is not None:
        _check_vocabulary(p, vocab)
    return data


def _check_vocabulary(p: Path, vocab: Any) -> None:
    shapes = {
        "aliases": dict,
        "title_fallbacks": list,
        "containers": list,
        "generic_containers": list,
        "group_containers": list,
        "not_tasks": list,
        "statuses": dict,
        "booleans": dict,
        "priorities": dict,
        "no_time": list,
        "time_formats": list,
    }
    if not isinstance(vocab, dict):
        raise MappingError(f"{p}: vocabulary: expected a mapping")
    for name, value in vocab.items():
        kind = shapes.get(name)
        if kind is None:
            raise MappingError(f"{p}: vocabulary: unknown entry {name!r} (known: {', '.join(shapes)})")
        if not isinstance(value, kind):
            raise MappingError(f"{p}: vocabulary: {name} must be a {'mapping' if kind is dict else 'list'}")
    for word, done in (vocab.get("statuses") or {}).items():
        if not isinstance(done, bool):
            raise MappingError(f"{p}: vocabulary: statuses: {word}: expected true (done) or false")
    for target in vocab.get("aliases") or {}:
        if target not in TARGETS:
            raise MappingError(f"{p}: vocabulary: aliases: unknown target {target!r}")
    for word, value in (vocab.get("priorities") or {}).items():
        if value not in ("low", "medium", "high"):
            raise MappingError(f"{p}: vocabulary: priorities: {word}: expected low, medium or high")


@dataclass
class MappedChunk:
    """A chunk of source records split into target columns, what stays in legacy_extra, and what
    the mapping found wrong."""

    first_position: int
    raw: list[Any]
    columns: dict[str, list[Any]]  # target -> value per record (None where absent)
    sources: dict[str, list[str | None]]  # target -> the key that gave it, per record (None: absent)
    extras: list[dict[str, Any] | None]
    problems: dict[int, list[str]]  # record index -> what the mapping found wrong with it
    keys_seen: set[str]
    taken: Counter[str] = field(
        default_factory=Counter
    )  # "title <- text" -> records (values taken as they are)

    def __len__(self) -> int:
        return len(self.raw)


def split_records(
    records: list[Any], first_position: int, mapping: FieldMapping, targets: tuple[str, ...] = TARGETS
) -> MappedChunk:
    """Pure: spread each record's keys over the target columns; other keys go to extras. Records
    are grouped by their sequence of keys, so the plan is made once per group and each column is
    gathered in one pass. `targets` narrows the columns gathered (the pre-check needs three)."""
    whole_record = targets == TARGETS
    n = len(records)
    columns: dict[str, list[Any]] = {t: [None] * n for t in targets}
    sources: dict[str, list[str | None]] = {}
    extras: list[dict[str, Any] | None] = [None] * n
    problems: dict[int, list[str]] = {}
    shapes = [tuple(r) if type(r) is dict else None for r in records]
    groups: dict[tuple[str, ...] | None, list[int]] = {}
    if len(set(shapes)) == 1:
        groups[shapes[0] if n else None] = list(range(n))
    else:
        for i, shape in enumerate(shapes):
            groups.setdefault(shape, []).append(i)
    taken: Counter[str] = Counter()
    for shape, idx in groups.items():
        if shape is None:
            _not_objects(records, idx, columns, problems, mapping)
            continue
        plan = mapping.plan(shape)
        whole = len(idx) == n
        members = records if whole else [records[i] for i in idx]
        for target in AS_IS:
            if target in plan.take:
                fallback = " (the only text)" if target == "title" and plan.title_fallback else ""
                taken[f"{target} <- {plan.take[target]}{fallback}"] += len(idx)
        for target, key in plan.take.items():
            if target not in columns:
                continue
            values = [r[key] for r in members]
            if whole:
                columns[target] = values
                sources[target] = [key] * n
                continue
            column = columns[target]
            source = sources.setdefault(target, [None] * n)
            for i, v in zip(idx, values, strict=True):
                column[i] = v
                source[i] = key
        if plan.extra_keys and whole_record:
            for i, r in zip(idx, members, strict=True):
                extras[i] = {k: r[k] for k in plan.extra_keys}
        for first, second in plan.clashes:
            for i, r in zip(idx, members, strict=True):
                if r[first] != r[second]:
                    problems.setdefault(i, []).append(
                        f"{first!r} and {second!r} both give completed with different values"
                    )
    keys_seen = {k for shape in groups if shape is not None for k in shape}
    strings = sum(1 for r in records if type(r) is str) if None in groups else 0
    if strings:
        taken["title <- the record itself, a plain string"] += strings
    return MappedChunk(first_position, records, columns, sources, extras, problems, keys_seen, taken)


def _not_objects(
    records: list[Any],
    idx: list[int],
    columns: dict[str, list[Any]],
    problems: dict[int, list[str]],
    mapping: FieldMapping,
) -> None:
    """Records that are not objects: a plain string is a title (where inference is on); the rest
    is quarantined."""
    for i in idx:
        r = records[i]
        if isinstance(r, Truncated):
            problems[i] = [
                f"truncated: the file ends inside this record ({len(r.encode('utf-8', 'replace')):,} bytes of it)"
            ]
        elif isinstance(r, str) and mapping.vocab.infer:
            if "title" in columns:
                columns["title"][i] = r
        else:
            problems[i] = [f"record is not a JSON object (got {type_name(r)})"]


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


def legacy_key_text(value: str) -> str:
    """A legacy key as an owner map or a user writes it: a number in its canonical form."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return str(int(text))
    return text


def is_email(text: str) -> bool:
    """The records' own rule for an email address (validation/records.py), printable and at most
    254 characters: what an owner may be before it becomes a user."""
    from validation.records import EMAIL  # it imports this module

    return len(text) <= 254 and text.isprintable() and EMAIL.match(text) is not None


def read_owner_map(path: str | Path | None) -> dict[str, str]:
    """--owner-map CSV: a header with legacy_id and email columns, then one task per line (the
    legacy_id is the record's id as the file wrote it)."""
    if not path:
        return {}
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip() for c in reader.fieldnames or []]
            if "legacy_id" not in fields or "email" not in fields:
                raise MappingError(f"{path}: owner map needs a header with legacy_id and email columns")
            owners: dict[str, str] = {}
            for line, row in enumerate(reader, start=2):
                row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
                if not row["legacy_id"]:
                    raise MappingError(f"{path}: line {line}: legacy_id is empty")
                email = row["email"].lower()
                if not is_email(email):
                    raise MappingError(f"{path}: line {line}: {row['email']!r} is not an email address")
                owners[legacy_key_text(row["legacy_id"])] = email
            return owners
    except FileNotFoundError:
        raise MappingError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise MappingError(f"{path}: not UTF-8") from None
    except csv.Error as exc:
        raise MappingError(f"{path}: not a CSV file ({exc})") from None
