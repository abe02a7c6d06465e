"""Where a Phase 1 file keeps its records: the container shapes, decided from the file itself.

CLIs wrote a bare list, `{"tasks": [...], "next_id": 7}`, a list of plain strings, an object whose
values are the records (`{"task1": {...}}`, or keyed by id), records grouped under days, lists or
projects (`{"days": [{"date": ..., "tasks": [...]}]}`), or one array per list or status
(`{"work": [...], "home": [...]}`, `{"todo": [...], "done": [...]}`).

The file is read as a stream. Each top-level value is a *candidate*; the pre-check surveys them all
and `decide()` picks, with the whole file seen, which ones hold tasks (a `users` array beside
`tasks` does not). An array's elements, and a top-level object value, are decoded one at a time and
classified here: a record, a plain string (a title), or a group whose inner arrays hold the records
(its scalar fields go with each of them, as `_group` in legacy_extra).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import repeat
from typing import Any

from tasks.vocabulary import TIME_TARGETS, Vocabulary, norm

SAMPLE = 1000  # values of a candidate classified to decide whether it holds tasks
GROUP_DEPTH = 6  # groups nested deeper are taken as records (and quarantined if they are not)
GROUP_KEY = "_group"  # legacy_extra: the group a record was found in
OBJECT_KEY = "_key"  # legacy_extra: the object key a record was stored under (when it is not its id)


@dataclass(frozen=True)
class Group:
    """The container a run of records sits in."""

    path: str  # JSON path of the container, e.g. `$.tasks`, `$.days[3].tasks`, `$`
    candidate: str  # the top-level key it is under ("" for a bare list, "*" for keyed records at the top)
    keyed: bool = False  # an object: its records carry their keys
    context: dict[str, Any] | None = None  # the group's scalar fields and names, for legacy_extra
    status: str | None = None  # the container's key when it is a status word (`done`, `todo`)
    date: Any = None  # the group's own date or time, for records that have none
    holds_groups: bool = False  # a container of groups by name (`lists`, `days`): its objects are groups


@dataclass
class Batch:
    """Consecutive records of one container."""

    group: Group
    start: int  # index of the first record in its container
    records: list[Any]
    keys: list[str] | None = None  # object keys, for a keyed container
    file: int = 0  # which file of the run (tasks/files.py) the records are from
    repeated: dict[int, tuple[list[str], str]] | None = None  # record -> (keys named twice, its text)


def location(group: Group, index: int, key: str | None) -> str:
    if key is None:
        return f"{group.path}[{index}]"
    return f"{group.path}.{key}" if key.isidentifier() else f"{group.path}[{json_str(key)}]"


def json_str(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)


def child_path(path: str, key: str) -> str:
    return f"{path}.{key}" if key.isidentifier() else f"{path}[{json_str(key)}]"


# --- what a decoded value is --------------------------------------------------------------------------


@dataclass(frozen=True)
class _KeyRoles:
    """What the keys of one record shape tell (decided once per distinct sequence of keys)."""

    title: bool  # a title alias or fallback
    signal: bool  # completion, status, a time, priority or tags: a task, not some other object
    done: bool  # completion or status: a task's own state, which a group of tasks does not have
    inner: tuple[str, ...]  # keys that may hold records (containers, group containers, status words)
    explicit: bool  # one of the inner keys names tasks outright (`tasks`, `todos`, a status)


@lru_cache(maxsize=4096)
def _roles(vocab: Vocabulary, keys: tuple[str, ...]) -> _KeyRoles:
    k2t = key_targets(vocab)
    title = signal = done = explicit = False
    inner: list[str] = []
    explicit_names = set(vocab.containers) | set(vocab.statuses) | set(vocab.group_containers)
    for key in keys:
        n = norm(key) if vocab.infer else key
        target = k2t.get(n)
        if target == "title" or n in vocab.title_fallbacks:
            title = True
        elif target in ("completed", "status", "priority", "tags", *TIME_TARGETS):
            signal = True
            done = done or target in ("completed", "status")
        if n in vocab.containers or n in vocab.generic_containers or n in explicit_names:
            inner.append(key)
            explicit = explicit or n in explicit_names
    return _KeyRoles(title, signal, done, tuple(inner), explicit)


@lru_cache(maxsize=64)
def key_targets(vocab: Vocabulary) -> dict[str, str]:
    """Normalised alias -> target, the first target listing it winning."""
    out: dict[str, str] = {}
    for target, keys in vocab.aliases.items():
        for key in keys:
            out.setdefault(key, target)
    return out


def _holds_records(value: Any) -> bool:
    if isinstance(value, list):
        return any(isinstance(v, (dict, str)) for v in value[:50])
    if isinstance(value, dict):
        return any(isinstance(v, dict) for v in list(value.values())[:50])
    return False


def group_arrays(record: dict[str, Any], vocab: Vocabulary, in_groups: bool = False) -> list[str]:
    """The keys of record whose values hold its records, if record is a group rather than a task:
    it has an inner container of records and no completion of its own (a day's date or a list's
    name does not make it a task), and it is no titled task whose only inner list has a generic
    name (`items` of a "Groceries" task are its checklist) -- unless it sits in a container of
    groups (`lists`, `categories`), where `{name, items}` is a list and its items are tasks."""
    if not vocab.infer:
        return []
    roles = _roles(vocab, tuple(record))
    if not roles.inner or roles.done:
        return []
    if roles.title and not roles.explicit and not in_groups:
        # a titled object with a generic `items`: a list when its items are tasks with a state of their
        # own (`{"title": "My Tasks", "items": [{"title": ..., "status": ...}]}`), else a checklist
        return [k for k in roles.inner if _holds_tasks_with_state(record[k], vocab)]
    return [k for k in roles.inner if _holds_records(record[k])]


def _holds_tasks_with_state(value: Any, vocab: Vocabulary) -> bool:
    sample = (
        value[:20]
        if isinstance(value, list)
        else list(value.values())[:20]
        if isinstance(value, dict)
        else []
    )
    dicts = [v for v in sample if type(v) is dict]
    return bool(dicts) and sum(_roles(vocab, tuple(v)).done for v in dicts) * 2 > len(sample)


def is_task_like(value: Any, vocab: Vocabulary) -> tuple[bool, bool]:
    """(looks like a task at all, with more than a title): what decides a candidate of unknown name."""
    if not isinstance(value, dict):
        return False, False
    roles = _roles(vocab, tuple(value))
    return roles.title or roles.signal, roles.signal and (roles.title or bool(roles.inner))


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool)) or type(v).__name__ == "Decimal"


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def named_group(path: str, candidate: str, name: str, vocab: Vocabulary) -> Group:
    """The group of an array found under a name (`"work": [...]`, `"2024-03-05": [...]`,
    `"done": [...]`): the name goes with each record; a date names its day, a status word its
    records' completion (each only for records that do not say so themselves)."""
    n = norm(name)
    plain = (n in vocab.containers or n in vocab.generic_containers or n in vocab.group_containers) and (
        n not in vocab.statuses
    )
    return Group(
        path,
        candidate,
        context=None if plain else {"list": name},
        status=n if n in vocab.statuses else None,
        date=name if _ISO_DATE.match(name) else None,
        holds_groups=n in vocab.group_containers,
    )


def top_object(
    key: str, value: dict[str, Any], path: str, index: int, vocab: Vocabulary
) -> tuple[str, list[Batch]] | None:
    """A top-level value that is an object, decoded whole: (its candidate, its batches), or None
    when it holds no records. It may be an object of records or of groups (`"tasks": {"1": {...}}`,
    `"projects": {"work": {...}}`), an object of lists (`"dates": {"2024-03-05": [...]}`), one
    group, or a record stored under its own key (`{"task1": {...}}`, candidate "*")."""
    if not vocab.infer or not value:
        return None
    values = list(value.values())
    n = norm(key)
    named = n in vocab.containers or n in vocab.generic_containers or n in vocab.group_containers
    sample = values[:SAMPLE]
    groups = n in vocab.group_containers
    if all(isinstance(v, dict) for v in values) and (
        named
        or sum(bool(group_arrays(v, vocab, groups)) or is_task_like(v, vocab)[0] for v in sample) * 2
        >= len(sample)
    ):
        return key, [Batch(Group(path, key, keyed=True, holds_groups=groups), 0, values, list(value))]
    if all(isinstance(v, list) for v in values) and (named or n in vocab.statuses):
        return key, [Batch(named_group(child_path(path, k), key, k, vocab), 0, v) for k, v in value.items()]
    if group_arrays(value, vocab):
        return key, [Batch(Group("$", key, keyed=True), 0, [value], [key])]
    if is_task_like(value, vocab)[0]:
        return "*", [Batch(Group("$", "*", keyed=True), index, [value], [key])]
    return None


def _group_for(
    parent: Group, record: dict[str, Any], key: str, path: str, name: str | None, vocab: Vocabulary
) -> Group:
    """The group of the records under record[key]: the parent's context, the record's own scalar
    fields and the name it is stored under; its date (or the name, when that is a date)."""
    context = dict(parent.context or {})
    if name is not None:
        context["list"] = name
    for k, v in record.items():
        if _scalar(v) and k not in context:
            context[k] = v
    date = name if name is not None and _ISO_DATE.match(name) else parent.date
    k2t = key_targets(vocab)
    for k, v in record.items():
        if _scalar(v) and v is not None and k2t.get(norm(k)) in ("created_at", "due_date"):
            date = v
            break
    n = norm(key)
    status = n if n in vocab.statuses else parent.status
    return Group(
        path,
        parent.candidate,
        isinstance(record[key], dict),
        context or None,
        status,
        date,
        n in vocab.group_containers,
    )


def expand(batch: Batch, vocab: Vocabulary, depth: int = 0) -> list[Batch]:
    """The batch with every group in it replaced by the records it holds (in document order)."""
    records = batch.records
    if not vocab.infer or not _may_hold_groups(records, vocab):
        return [batch]
    out: list[Batch] = []
    run_start = 0
    in_groups = batch.group.holds_groups
    for i, r in enumerate(records):
        inner = group_arrays(r, vocab, in_groups) if type(r) is dict and depth < GROUP_DEPTH else []
        if not inner:
            continue
        if i > run_start:
            out.append(_slice(batch, run_start, i))
        run_start = i + 1
        name = batch.keys[i] if batch.keys else None
        here = location(batch.group, batch.start + i, name)
        for key in inner:
            path = child_path(here, key)
            group = _group_for(batch.group, r, key, path, name, vocab)
            value = r[key]
            if isinstance(value, dict):
                sub = Batch(group, 0, list(value.values()), list(value))
            else:
                sub = Batch(group, 0, value)
            out.extend(expand(sub, vocab, depth + 1))
    if run_start < len(records):
        out.append(_slice(batch, run_start, len(records)))
    return out


def _may_hold_groups(records: list[Any], vocab: Vocabulary) -> bool:
    """Whether any record has a key that may hold records: the union of the keys is taken in C,
    so a batch of plain records costs one pass."""
    dicts = [r for r in records if type(r) is dict]
    if not dicts:
        return False
    names = _inner_names(vocab)
    candidates = [k for k in set().union(*dicts) if (norm(k) if vocab.infer else k) in names]
    # `completed` names a list of done tasks as often as it holds true/false: the values tell
    return any({list, dict} & set(map(type, map(dict.get, dicts, repeat(k)))) for k in candidates)


@lru_cache(maxsize=64)
def _inner_names(vocab: Vocabulary) -> frozenset[str]:
    return frozenset((*vocab.containers, *vocab.generic_containers, *vocab.group_containers, *vocab.statuses))


def _slice(batch: Batch, a: int, b: int) -> Batch:
    keys = batch.keys[a:b] if batch.keys else None
    repeated = {i - a: k for i, k in batch.repeated.items() if a <= i < b} if batch.repeated else None
    return Batch(batch.group, batch.start + a, batch.records[a:b], keys, batch.file, repeated or None)


# --- which candidates hold tasks ---------------------------------------------------------------------


@dataclass
class Candidate:
    """One top-level value of an object document, as the pre-check saw it."""

    key: str  # "*" stands for the top-level values that are records themselves
    kind: str  # "array", "object" (an object of records) or "records"
    values: int = 0  # elements seen
    sampled: int = 0  # elements classified (the first SAMPLE)
    task_like: int = 0
    strong: int = 0  # task-like with more than a title
    strings: int = 0
    groups: int = 0


@dataclass
class Survey:
    """What the pre-check saw of the document's top level."""

    document: str  # "array", "object", "string" or "scalar"
    seen: list[str] = field(default_factory=list)  # top-level keys, in order
    candidates: dict[str, Candidate] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)  # top-level key -> what it held

    def note(self, key: str, kind: str, batch: Batch, vocab: Vocabulary) -> None:
        """Count the candidate's values; the first SAMPLE of them are classified (the decision is
        a proportion, and a container of a million records need not be classified a million times)."""
        c = self.candidates.setdefault(key, Candidate(key, kind))
        c.values += len(batch.records)
        room = SAMPLE - c.sampled
        if room <= 0:
            return
        sample = batch.records[:room]
        c.sampled += len(sample)
        for r in sample:
            if isinstance(r, str):
                c.strings += 1
            elif isinstance(r, dict):
                if group_arrays(r, vocab, batch.group.holds_groups):
                    c.groups += 1
                else:
                    like, strong = is_task_like(r, vocab)
                    c.task_like += like
                    c.strong += strong


@dataclass(frozen=True)
class Layout:
    """Which containers of the document hold the records (what the load reads)."""

    path: tuple[str, ...] | None = None  # a container named with --map PATH=tasks
    keys: frozenset[str] = frozenset()  # top-level keys whose values hold records
    root_records: bool = False  # top-level values that are records themselves (`{"t1": {...}}`)

    def takes(self, key: str) -> bool:
        return key in self.keys

    def takes_value(self, key: str, kind: str) -> bool:
        """Whether the load decodes a top-level key's value (kind: its first character)."""
        return self.takes(key) or (self.root_records and kind == "{")

    def takes_candidate(self, candidate: str) -> bool:
        """Whether the load takes the records a top-level object gave as this candidate."""
        return self.takes(candidate) or (candidate == "*" and self.root_records)


def decide(survey: Survey, vocab: Vocabulary) -> tuple[Layout, dict[str, str]]:
    """Which candidates are tasks, and for each one left out, why (for the report). A candidate
    under a container's name (`tasks`, `items`, `days`, `done`) is taken; one of another name is
    taken when most of its values are tasks with more than a title (a `users` list beside `tasks`
    is not), or, in a file with no container named as such, when most are task-like at all."""
    named = {
        k
        for k, c in survey.candidates.items()
        if k != "*"
        and _named(k, vocab)
        and (
            _explicit(k, vocab)
            or c.values == 0
            or c.task_like + c.groups > 0
            or (c.strings and _status(k, vocab))
        )
    }
    taken: set[str] = set(named)
    left: dict[str, str] = {}
    for key, c in survey.candidates.items():
        if key in taken:
            continue
        if vocab.infer and norm(key) in vocab.not_tasks:
            left[key] = f"{c.kind} of {c.values} values (a {key!r} list, not tasks)"
        elif vocab.infer and _holds_tasks(key, c, bool(named)):
            taken.add(key)
        else:
            left[key] = f"{c.kind} of {c.values} values that do not look like tasks"
    return Layout(keys=frozenset(taken - {"*"}), root_records="*" in taken), left


def _holds_tasks(key: str, c: Candidate, named_elsewhere: bool) -> bool:
    if not c.sampled:
        return False
    if (c.strong + c.groups) * 2 >= c.sampled:
        return True
    if named_elsewhere:
        return False
    objects = c.sampled - c.strings
    return (c.task_like + c.groups) * 2 >= max(objects, 1) or (c.strings == c.sampled and key != "*")


def _status(key: str, vocab: Vocabulary) -> bool:
    return norm(key) in vocab.statuses


def _explicit(key: str, vocab: Vocabulary) -> bool:
    """Named as tasks outright (`tasks`, `todos`): taken whatever its records look like."""
    return (norm(key) if vocab.infer else key) in vocab.containers


def _named(key: str, vocab: Vocabulary) -> bool:
    n = norm(key) if vocab.infer else key
    if not vocab.infer:
        return n in vocab.containers
    return (
        n in vocab.containers
        or n in vocab.generic_containers
        or n in vocab.group_containers
        or n in vocab.statuses
    )
