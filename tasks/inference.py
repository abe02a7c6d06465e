"""What a file says about itself, decided with the whole file seen, and the account of it that
`inspect` prints and every run's report carries.

The pre-check (tasks/source.py) hands every batch of every candidate container here. Kept per
candidate, so that only the containers tasks/shapes.py decides to take count: how many records,
which legacy keys occur more than once, which id-less records occur more than once (so their
derived keys tell the copies apart), and the evidence that settles DD/MM against MM/DD.
"""

from __future__ import annotations

import re
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tasks.conversions import content_hash, day_month_evidence, ids, key_hash
from tasks.mapping import FieldMapping, Truncated, split_records
from tasks.shapes import Batch, Group, Layout

# A quick look for dates written DD/MM/YYYY or MM/DD/YYYY before the per-value one.
_DAY_MONTH_ANYWHERE = re.compile(r"^\s*\d{1,2}[/.\-]\d{1,2}[/.\-]\d{4}", re.MULTILINE)
EVIDENCE_TARGETS = ("created_at", "updated_at")


def identity_context(group: Group) -> list[Any]:
    """What, beside its content, tells an id-less record from an identical one elsewhere."""
    return [group.candidate, group.context]


class _Keys:
    """A container's legacy keys, kept to find the ones that occur more than once.

    Ids numbered from 1 by the Phase 1 CLI are marked in a byte each up to the largest (10 MB at
    10,000,000 records, against 8 bytes each kept and sorted); a key that is not a small
    non-negative integer (a hash, a negative or a far-flung id) turns the marks into the list of
    8-byte keys that is sorted at the end, each key found twice written twice."""

    SPAN = 4  # the marks may span up to SPAN bytes per key seen, plus SLACK
    SLACK = 1 << 20
    # Below this many ids a batch is marked one by one: numpy's fixed cost per call (about 40 µs
    # for np.unique) was a fifth of the pre-check of a 10-record file.
    SMALL = 64

    def __init__(self) -> None:
        self.count = 0
        self.marks: bytearray | None = bytearray()
        self.twice: set[int] = set()  # with marks: the ids found more than once
        self.keys = array("q")  # without marks

    def add_ints(self, values: list[int]) -> None:
        """Integer ids; OverflowError, with nothing added, if one is beyond 64 bits."""
        small = len(values) < self.SMALL
        if small:
            ids: Any = values
            low, high = (min(values), max(values)) if values else (0, 0)
            if low < -(2**63) or high >= 2**63:
                raise OverflowError("an id beyond 64 bits")
        else:
            ids = np.asarray(values, np.int64)  # raises OverflowError beyond 64 bits
            low, high = int(ids.min()), int(ids.max())
        self.count += len(values)
        if self.marks is not None and values:
            if low >= 0 and high < self.SPAN * self.count + self.SLACK:
                marks = self.marks
                if high >= len(marks):
                    marks.extend(bytes(max(high + 1, 2 * len(marks)) - len(marks)))
                if small:
                    for v in values:
                        if marks[v]:
                            self.twice.add(v)
                        marks[v] = 1
                    return
                seen = np.frombuffer(marks, np.uint8)
                distinct, counts = np.unique(ids, return_counts=True)
                self.twice.update(int(v) for v in distinct[(counts > 1) | (seen[distinct] > 0)])
                seen[distinct] = 1
                del seen  # the bytearray cannot grow while a view of it lives
                return
            self._unmark()
        if small:
            self.keys.extend(values)
        else:
            self.keys.frombytes(ids.tobytes())

    def add_hash(self, key: int) -> None:
        """A key's hash (an id that is text): never a small id, so the marks go."""
        if self.marks is not None:
            self._unmark()
        self.count += 1
        self.keys.append(key)

    def _unmark(self) -> None:
        assert self.marks is not None
        self.keys.frombytes(np.flatnonzero(np.frombuffer(self.marks, np.uint8)).astype(np.int64).tobytes())
        self.keys.extend(self.twice)
        self.marks, self.twice = None, set()

    def repeated(self) -> frozenset[int]:
        return frozenset(self.twice) if self.marks is not None else _repeated(self.keys)

    def all(self) -> array:
        """Every key, one found more than once at least twice (for the keys of several containers)."""
        if self.marks is not None:
            self._unmark()
        return self.keys


@dataclass
class _Candidate:
    records: int = 0
    keys: dict[str, _Keys] = field(default_factory=dict)  # container path -> its legacy keys
    contents: array = field(default_factory=lambda: array("q"))
    evidence: dict[str, list[int]] = field(default_factory=dict)  # target -> [day first, month first]


@dataclass(frozen=True)
class Facts:
    records: int
    containers: dict[str, int]  # container -> records taken from it
    duplicate_keys: frozenset[int]
    repeated_content: frozenset[int]
    day_first: dict[str, bool | None]
    scoped_keys: bool = False  # ids repeat across lists but never within one: each list numbers its own


class FileStats:
    def __init__(self, mapping: FieldMapping) -> None:
        self.mapping = mapping
        self.per: dict[str, _Candidate] = {}

    def add(self, candidate: str, batch: Batch) -> None:
        c = self.per.setdefault(candidate, _Candidate())
        records = batch.records
        c.records += len(records)
        if not records:
            return
        mapped = split_records(records, 0, self.mapping, targets=("id", *EVIDENCE_TARGETS))
        values = mapped.columns["id"]
        found = c.keys.setdefault(batch.group.path, _Keys())
        if set(map(type, values)) == {int}:
            try:
                found.add_ints(values)
            except OverflowError:  # ids beyond 64 bits hash like the strings they are
                found.add_ints([v if -(2**63) <= v < 2**63 else key_hash(str(v)) for v in values])
        else:
            sources = mapped.sources.get("id") or [None] * len(values)
            keys = ids(values, sources, batch.keys, self.mapping.vocab)
            context = identity_context(batch.group)
            for i, key in enumerate(keys.legacy_keys):
                if key is not None:
                    found.add_hash(key_hash(key))
                elif (
                    i not in keys.column.problems
                    and i not in mapped.problems
                    and not isinstance(records[i], Truncated)
                ):
                    c.contents.append(content_hash(records[i], context))
        for target in EVIDENCE_TARGETS:
            if target not in mapped.sources and not (target == "created_at" and batch.group.date is not None):
                continue
            column = mapped.columns[target]
            if target == "created_at" and batch.group.date is not None:
                column = [*column, batch.group.date]
            try:
                strings = column
                joined = "\n".join(column)
            except TypeError:
                strings = [v for v in column if type(v) is str]
                joined = "\n".join(strings)
            if _DAY_MONTH_ANYWHERE.search(joined):
                day, month = day_month_evidence(strings)
                seen = c.evidence.setdefault(target, [0, 0])
                seen[0] += day
                seen[1] += month

    def result(self, layout: Layout) -> Facts:
        taken = {
            k: c
            for k, c in self.per.items()
            if k == "" or layout.takes_candidate(k)
        }
        contents: array = array("q")
        evidence: dict[str, list[int]] = {}
        per_container: list[_Keys] = []
        for c in taken.values():
            per_container.extend(c.keys.values())
            contents.extend(c.contents)
            for target, (day, month) in c.evidence.items():
                seen = evidence.setdefault(target, [0, 0])
                seen[0] += day
                seen[1] += month
        order = self.mapping.dates
        pooled = _settled(*(sum(e[k] for e in evidence.values()) for k in (0, 1)))
        day_first: dict[str, bool | None] = {}
        for target in EVIDENCE_TARGETS:
            own = _settled(*evidence.get(target, [0, 0]))
            # a field its own values do not settle follows the file's other time fields
            day_first[target] = (
                (order == "day-first") if order is not None else own if own is not None else pooled
            )
        if len(per_container) == 1:  # the usual file
            duplicates, scoped = per_container[0].repeated(), False
        else:  # repeats across the lists, and whether each list alone has none (it numbers its own)
            within = [k.repeated() for k in per_container]
            keys: array = array("q")
            for found in per_container:
                keys.extend(found.all())
            duplicates = _repeated(keys)
            scoped = bool(duplicates) and not any(within)
        return Facts(
            records=sum(c.records for c in taken.values()),
            containers={_container_name(k): c.records for k, c in taken.items()},
            duplicate_keys=frozenset() if scoped else duplicates,
            repeated_content=_repeated(contents),
            day_first=day_first,
            scoped_keys=scoped,
        )


def _settled(day_first: int, month_first: int) -> bool | None:
    """DD/MM (True) or MM/DD (False) when the values say one and never the other."""
    if day_first and not month_first:
        return True
    if month_first and not day_first:
        return False
    return None


def _container_name(candidate: str) -> str:
    if candidate == "":
        return "$"
    if candidate == "*":
        return "$.* (records stored under their own keys)"
    return f"$.{candidate}" if candidate.isidentifier() else f"$[{candidate!r}]"


def _repeated(values: array) -> frozenset[int]:
    """The values found more than once. Sorts `values` in place: np.unique's sorted copy and index
    arrays took about four times the ids' own 8 bytes each, the peak of a 10,000,000-record file."""
    if len(values) < 2:
        return frozenset()
    arr = np.frombuffer(values, dtype=np.int64)  # a view of the array's own memory
    arr.sort()
    return frozenset(int(v) for v in np.unique(arr[1:][arr[1:] == arr[:-1]]))


# --- the account: what was found and how each rule applied -------------------------------------------


class Holdings:
    """What the accepted files of a run hold, summed as each one is pre-checked (the account of a
    run of many files, without keeping every file's pre-check)."""

    def __init__(self) -> None:
        self.files = 0
        self.containers: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()  # "key: what it holds" -> files
        self.first_ignored: dict[str, str] = {}  # the first file's, as it has them
        self.dates: dict[str, Counter[str]] = {}  # time target -> order -> files
        self.documents: Counter[str] = Counter()
        self.cuts, self.first_cut = 0, ""
        self.comments = 0

    @classmethod
    def of(cls, infos: Any, mapping: FieldMapping) -> Holdings:
        held = cls()
        for info in [infos] if not isinstance(infos, list) else infos:
            held.add(info, mapping)
        return held

    def add(self, info: Any, mapping: FieldMapping) -> None:
        if not self.files:
            self.first_ignored = dict(info.ignored)
        self.files += 1
        self.containers.update(info.containers)
        self.ignored.update(f"{k}: {what}" for k, what in info.ignored.items())
        for t, v in info.day_first.items():
            if v is not None or mapping.dates:
                self.dates.setdefault(t, Counter())[_order(v)] += 1
        self.documents[info.document] += 1
        if info.cut is not None:
            self.cuts += 1
            self.first_cut = self.first_cut or info.cut.describe()
        self.comments += info.comments


def describe(
    infos: Any,
    mapping: FieldMapping,
    rules: Counter[str],
    defaults: Counter[str],
    kept: Counter[str],
    reasons: Counter[str] | None = None,
) -> dict[str, Any]:
    """The inference as data: the container, each field rule and value conversion with how many
    records it covered, every default applied (by rule), and what stays in legacy_extra. infos: one
    file's pre-check, several, or the Holdings of a run of many files (what they hold, summed)."""
    held = infos if isinstance(infos, Holdings) else Holdings.of(infos, mapping)
    vocab = mapping.vocab
    one = held.files == 1
    out: dict[str, Any] = {
        "mode": "inferred" if vocab.infer else "strict",
        "files_read": held.files,
        "document": next(iter(held.documents)) if one else ", ".join(f"{d} ({n})" for d, n in held.documents.most_common()) or "none",
        "records_in": dict(held.containers),
        "not_migrated": dict(held.first_ignored) if one else {k.split(": ", 1)[0]: f"{k.split(': ', 1)[1]} (in {n} files)" for k, n in held.ignored.most_common(20)},
        "rules": dict(sorted(rules.items(), key=lambda kv: (kv[0].split(" ", 1)[0], -kv[1]))),
        "defaults": {vocab.defaults.get(k, k): n for k, n in sorted(defaults.items())},
        "kept_in_legacy_extra": dict(kept.most_common()),
        "dates": {t: (next(iter(c)) if one else ", ".join(f"{o} in {n} files" for o, n in c.items())) for t, c in held.dates.items()},
        "overrides": {k: v for k, v in mapping.spec.items() if v},
    }
    if held.cuts:
        out["salvaged"] = held.first_cut if one else f"{held.cuts} files salvaged; the first: {held.first_cut}"
    if held.comments:
        out["lenient_json"] = f"{held.comments} comments or trailing commas ignored"
    if reasons is not None:
        out["quarantine_reasons"] = dict(reasons.most_common(10))
    return out


def _order(day_first: bool | None) -> str:
    return "DD/MM/YYYY" if day_first else "MM/DD/YYYY"


def lines(account: dict[str, Any], records: int) -> list[str]:
    """The account in a few lines for a person."""
    if account.get("files_read") == 0:  # every file refused, or as its last sync read it
        return [f"no file read: each was refused or is as its last sync read it [{account['mode']}]"]
    where = ", ".join(f"{k} ({n:,})" for k, n in account["records_in"].items()) or "nowhere"
    out = [f"{records:,} records in a JSON {account['document']}, found in {where} [{account['mode']}]"]
    for key, what in account["not_migrated"].items():
        out.append(f"  not migrated: {key}: {what}")
    by_target: dict[str, list[str]] = {}
    for rule, n in account["rules"].items():
        target, _, how = rule.partition(" <- ")
        by_target.setdefault(target, []).append(f"{how} {n:,}")
    for target, hows in by_target.items():
        out.append(f"  {target} <- " + "; ".join(hows))
    for rule, n in account["defaults"].items():
        out.append(f"  default: {rule}: {n:,}")
    for target, order in account["dates"].items():
        out.append(f"  {target}: dates with / . or - read as {order}, as the file's own values settle it")
    if account["kept_in_legacy_extra"]:
        kept = ", ".join(f"{k} ({n:,})" for k, n in list(account["kept_in_legacy_extra"].items())[:12])
        out.append(f"  kept in legacy_extra: {kept}")
    if account.get("salvaged"):
        out.append(f"  salvaged: {account['salvaged']}")
    if account.get("lenient_json"):
        out.append(f"  lenient JSON: {account['lenient_json']}")
    for reason, n in (account.get("quarantine_reasons") or {}).items():
        out.append(f"  quarantined: {reason}: {n:,}")
    return out
