"""Values as Phase 1 files wrote them -> the values Phase 2 stores, column by column, losing nothing.

Every converter returns the converted column, the records whose value does not convert (with the
reason, the key and the value: they go to quarantine, never to a guess), the records whose
original value is kept in legacy_extra because the conversion changed its form (a `status`, "yes",
a Unix time, a date without a time), and how many records each rule covered, for the report.
Values that are already what Phase 2 stores (true, an ISO 8601 time with its zone) pass as they are.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
import pandas as pd

from tasks.jsontext import dumps_exact
from tasks.vocabulary import DAY_MONTH, MS_DATE, ZONE_NAMES, Vocabulary, norm

INT4 = 2**31
_CANONICAL_INT = re.compile(r"-?(?:0|[1-9]\d*)")
_LONG_FRACTION = re.compile(r"[.,]\d{7,}")
_EPOCH_UNITS = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
_EPOCH0 = datetime(1970, 1, 1, tzinfo=UTC)
_NUMERIC = re.compile(r"-?\d+(?:\.\d+)?")


def show(value: Any, limit: int = 60) -> str:
    """A value as a reason quotes it: JSON, cut at limit characters; long text by its length."""
    if isinstance(value, str) and len(value) > limit:
        return f"{len(value):,} characters"
    text = dumps_exact(value, ascii_only=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def reason(target: str, problem: str, key: str | None, value: Any = None) -> str:
    """`<target> <problem> (<key>: <value>)`: the part before " (" is what reports group by."""
    return f"{target} {problem} ({key}: {show(value)})" if key is not None else f"{target} {problem}"


@dataclass
class Column:
    """A converted column, what did not convert, what is kept, and which rule gave each value."""

    values: list[Any]
    problems: dict[int, str] = field(default_factory=dict)
    kept: set[int] = field(default_factory=set)  # records whose source value stays in legacy_extra
    rules: Counter[str] = field(default_factory=Counter)
    defaulted: set[int] = field(default_factory=set)  # records given a default
    naive: int = 0  # times without a zone, read as UTC


def _types(values: Sequence[Any]) -> set[type]:
    return set(map(type, values))


def _by_key(target: str, sources: Sequence[str | None], how: str) -> Counter[str]:
    """Rule counts for a column converted in one go: one rule per source key (a chunk may mix them)."""
    if len(set(sources)) == 1:
        return Counter({f"{target} <- {sources[0]} ({how})": len(sources)})
    return Counter(f"{target} <- {key} ({how})" for key in sources)


# --- ids ---------------------------------------------------------------------------------------------


@dataclass
class Keys:
    legacy_keys: list[str | None]  # None: no id of its own; the transform derives one
    legacy_ids: list[int | None]
    column: Column


def ids(
    values: list[Any], sources: list[str | None], object_keys: list[str | None] | None, vocab: Vocabulary
) -> Keys:
    """The record's own id as its legacy key, whatever its type: an integer, a numeric string (also
    legacy_id when it fits an int4), a UUID or any other string; a number with a fraction keeps its
    text (and its original, in legacy_extra). An object key stands in for a record that has none."""
    n = len(values)
    col = Column([None] * n)
    legacy_ids: list[int | None] = [None] * n
    if _types(values) == {int}:  # the common case, in one go
        col.values = list(map(str, values))
        legacy_ids = [v if -INT4 <= v < INT4 else None for v in values]
        col.rules.update(_by_key("id", sources, "integer"))
        if not vocab.infer:
            _strict_ids(values, sources, col)
        return Keys(col.values, legacy_ids, col)
    for i, v in enumerate(values):
        key = sources[i] if sources else None
        if not vocab.infer:
            if type(v) is int:
                col.values[i], legacy_ids[i] = str(v), v
            elif v is None:
                col.problems[i] = "id is missing"
            else:
                col.problems[i] = reason("id", "must be an integer", key, v)
            continue
        if type(v) is int:
            col.values[i] = str(v)
            legacy_ids[i] = v if -INT4 <= v < INT4 else None
            col.rules[f"id <- {key} (integer)"] += 1
        elif isinstance(v, str) and v.strip():
            col.values[i] = v
            if _CANONICAL_INT.fullmatch(v):
                number = int(v)
                legacy_ids[i] = number if -INT4 <= number < INT4 else None
                col.rules[f"id <- {key} (numeric string)"] += 1
            else:
                col.rules[f"id <- {key} (string)"] += 1
        elif isinstance(v, Decimal) and v.is_finite():
            col.values[i] = str(v)
            col.kept.add(i)
            col.rules[f"id <- {key} (number with a fraction, kept as text)"] += 1
        elif v is None or (isinstance(v, str) and not v.strip()):
            own = object_keys[i] if object_keys else None
            if own is not None and own.strip():
                col.values[i] = own
                if _CANONICAL_INT.fullmatch(own):
                    number = int(own)
                    legacy_ids[i] = number if -INT4 <= number < INT4 else None
                col.rules["id <- the object key the record is stored under"] += 1
            else:
                col.defaulted.add(i)
        else:
            col.problems[i] = reason("id", "is not a number or a string", key, v)
    return Keys(col.values, legacy_ids, col)


def _strict_ids(values: list[int], sources: list[str | None], col: Column) -> None:
    for i, v in enumerate(values):
        if not 1 <= v < INT4:
            col.problems[i] = reason("id", f"must be between 1 and {INT4 - 1}", sources[i], v)


def derived_key(digest: int, occurrence: int) -> str:
    """A key for a record without an id: the hash of its content (with the group it is in) and, for
    the second and later identical records, which one it is -- two "Buy milk" entries stay two tasks."""
    return f"~{digest % 2**64:016x}" + (f".{occurrence}" if occurrence > 1 else "")


def content_hash(record: Any, context: Any) -> int:
    """A signed 64-bit hash of a record's content and context."""
    text = dumps_exact([record, context], ascii_only=True)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)


def key_hash(key: str) -> int:
    """A legacy key as a 64-bit number, for finding keys that occur twice (an integer is itself)."""
    if _CANONICAL_INT.fullmatch(key) and len(key) < 19:
        return int(key)
    return int.from_bytes(
        hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big", signed=True
    )


# --- completion ------------------------------------------------------------------------------------


def completion(
    completed: list[Any],
    completed_src: list[str | None],
    status: list[Any],
    status_src: list[str | None],
    completed_at: list[Any],
    completed_at_src: list[str | None],
    group_status: list[str | None] | None,
    vocab: Vocabulary,
) -> Column:
    """completed, from the first that says: a completion field (true/false, 0/1, "yes"/"no", a time
    it was done), a status word, a completion time being set, the name of the list the record is in
    (`done`, `todo`); else false, as a named default."""
    n = len(completed)
    col = Column([None] * n)
    if _types(completed) == {bool} and not any(status_src) and not any(completed_at_src):
        col.values = list(completed)
        col.rules.update(_by_key("completed", completed_src, "boolean"))
        return col
    for i in range(n):
        v, key = completed[i], completed_src[i]
        own: bool | None = None
        if key is not None and v is not None:
            own = _boolean(v, key, i, col, vocab)
            if own is None:
                continue
        word = status[i] if status_src[i] is not None else None
        said: bool | None = None
        if word is not None:
            said = _status(word, status_src[i], i, col, vocab, needed=own is None)
            if said is None and own is None:
                continue
        if own is not None:
            if said is not None and said != own:
                col.problems[i] = (
                    f"completed disagrees with {status_src[i]} ({key}: {show(v)}, {status_src[i]}: {show(word)})"
                )
                continue
            col.values[i] = own
            continue
        if said is not None:
            col.values[i] = said
            col.rules[f"completed <- {status_src[i]} (status words)"] += 1
            continue
        if completed_at_src[i] is not None:
            when = completed_at[i]
            done = (
                when is not None
                and not (isinstance(when, str) and norm(when) in _no_time(vocab))
                and when != 0
            )
            col.values[i] = done
            col.rules[f"completed <- {completed_at_src[i]} (set: done, empty: not done)"] += 1
            continue
        if key is not None and vocab.infer:  # the completion field is there, and null
            col.values[i] = False
            col.kept.add(i)
            col.rules[f"completed <- {key} (null read as not done)"] += 1
            continue
        group = group_status[i] if group_status else None
        if group is not None and vocab.infer:
            col.values[i] = vocab.statuses[group]
            col.rules["completed <- the name of the list the record is in"] += 1
            continue
        if not vocab.infer:
            col.problems[i] = "completed is missing"
            continue
        col.values[i] = False
        col.defaulted.add(i)
    return col


def _boolean(v: Any, key: str, i: int, col: Column, vocab: Vocabulary) -> bool | None:
    if type(v) is bool:
        col.rules[f"completed <- {key} (boolean)"] += 1
        return v
    if not vocab.infer:
        col.problems[i] = reason("completed", "must be true or false", key, v)
        return None
    if type(v) is int and v in (0, 1):
        col.kept.add(i)
        col.rules[f"completed <- {key} (0/1)"] += 1
        return bool(v)
    if isinstance(v, str):
        word = norm(v)
        if word in vocab.booleans:
            col.kept.add(i)
            col.rules[f"completed <- {key} (yes/no words)"] += 1
            return vocab.booleans[word]
        if word in vocab.statuses:
            col.kept.add(i)
            col.rules[f"completed <- {key} (status words)"] += 1
            return vocab.statuses[word]
        if time_of(v, vocab) is not None:
            col.kept.add(i)
            col.rules[f"completed <- {key} (the time it was done)"] += 1
            return True
    col.problems[i] = reason("completed", "is not true or false", key, v)
    return None


def _status(
    word: Any, key: str | None, i: int, col: Column, vocab: Vocabulary, *, needed: bool
) -> bool | None:
    """A status word -> done or not; the word itself stays in legacy_extra (status has no column)."""
    if type(word) is bool:
        return word
    if isinstance(word, str) and norm(word) in vocab.statuses:
        return vocab.statuses[norm(word)]
    if needed:
        known = ", ".join(sorted({w for w in vocab.statuses})[:12])
        col.problems[i] = reason(
            "completed", f"cannot be told: the status is not a known word (known: {known}, …)", key, word
        )
    return None


def _no_time(vocab: Vocabulary) -> frozenset[str]:
    return frozenset(norm(w) for w in vocab.no_time)


# --- times -------------------------------------------------------------------------------------------

CANONICAL = "%Y-%m-%dT%H:%M:%S.%fZ"
ZERO_TIME = "0001-01-01"  # any time that day is how Go and .NET write "no time" (their zero value)


def time_of(value: Any, vocab: Vocabulary, day_first: bool | None = None) -> datetime | None:
    """One value as a UTC time, by the table's rules (None: not a time)."""
    col = times([value], [""], vocab, "t", day_first)
    text = col.values[0]
    return None if text is None or col.problems else datetime.strptime(text, CANONICAL).replace(tzinfo=UTC)


def times(
    values: list[Any],
    sources: list[str | None],
    vocab: Vocabulary,
    target: str,
    day_first: bool | None | Sequence[bool | None],
) -> Column:
    """A time column -> 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (None where the record has none). ISO 8601
    with or without zone or fraction, the table's formats, Unix seconds to nanoseconds by size, and
    DD/MM vs MM/DD only as the whole file settles it (day_first None: not settled -> quarantine)."""
    n = len(values)
    col = Column([None] * n)
    if not any(s is not None for s in sources):
        return col
    kinds = _types(values)
    strings_at = list(range(n)) if kinds == {str} else [i for i, v in enumerate(values) if type(v) is str]
    empty = _no_time(vocab)
    todo: list[int] = []
    strings = [values[i] for i in strings_at]
    if strings:
        parsed = pd.to_datetime(pd.Series(strings, dtype=object), format="ISO8601", utc=True, errors="coerce")
        texts = _canonical(parsed)
        lens = np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
        for j in np.flatnonzero(parsed.isna().to_numpy() | (lens <= 10) | (lens > 26)).tolist():
            i, s = strings_at[j], strings[j]
            if texts[j] is not None and len(s) > 10 and not _LONG_FRACTION.search(s):
                continue  # a long but plain ISO 8601 time (an offset, a fraction)
            if texts[j] is not None:
                col.kept.add(i)  # a date without a time, or a fraction finer than microseconds
                continue
            texts[j] = None
            todo.append(i)
        for j, t in enumerate(texts):
            if t is not None and t.startswith(ZERO_TIME):
                t = None
                col.kept.add(strings_at[j])
            col.values[strings_at[j]] = t
        if vocab.infer:  # a trailing Z settles most at once
            col.naive += sum(
                1 for j in [j for j, s in enumerate(strings) if s[-1:] not in "Zz"] if texts[j] is not None and _naive(strings[j])
            )
        count = len(strings) - len(todo)
        if count:
            col.rules[f"{target} <- {_first(sources)} (ISO 8601)"] += count
    if kinds != {str}:
        todo += [i for i, v in enumerate(values) if type(v) is not str and sources[i] is not None]
    for i in todo:
        v, key = values[i], sources[i]
        if (
            v is None
            or (isinstance(v, str) and norm(v) in empty)
            or (vocab.infer and v == 0 and type(v) is not bool)
        ):
            col.values[i] = None
            if v is not None:
                col.kept.add(i)
            continue
        if not vocab.infer:
            col.problems[i] = reason(target, "is not an ISO-8601 timestamp", key, v)
            continue
        order = day_first[i] if isinstance(day_first, Sequence) else day_first  # per record: files differ
        converted, rule = _other_time(v, vocab, order)
        if converted is None:
            col.problems[i] = reason(target, rule, key, v)
            continue
        col.kept.add(i)
        if converted.startswith(ZERO_TIME):
            continue
        col.values[i] = converted
        col.kept.add(i)
        col.rules[f"{target} <- {key} ({rule})"] += 1
        if rule != "Unix time" and not rule.endswith("zone"):
            col.naive += 1
    return col


def _first(sources: list[str | None]) -> str:
    return next((s for s in sources if s is not None), "?")


_TZ_SUFFIX = re.compile(r"(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$")


def _naive(text: str) -> bool:
    t = text.rstrip()
    return not t.endswith(("Z", "z")) and _TZ_SUFFIX.search(t[10:]) is None


def _canonical(parsed: pd.Series) -> list[str | None]:
    """datetime64[UTC] -> 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (the format ROW_LINE_SQL renders)."""
    missing = parsed.isna()
    if missing.all():
        return [None] * len(parsed)
    values = parsed.dt.tz_convert(None).to_numpy(dtype="datetime64[us]")
    texts: list[str | None] = np.datetime_as_string(values, unit="us", timezone="UTC").tolist()
    return [None if t == "NaT" else t for t in texts] if missing.any() else texts


def _fmt(moment: datetime) -> str | None:
    """The canonical text (strftime would not pad a year below 1000 to four digits)."""
    try:
        m = moment.astimezone(UTC)
    except OverflowError:
        return None
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond:06d}Z"


def _other_time(value: Any, vocab: Vocabulary, day_first: bool | None) -> tuple[str | None, str]:
    """(canonical time, the rule that read it) or (None, why it is not a time)."""
    number: Decimal | None = None
    if isinstance(value, bool):
        return None, "is not a date or time"
    if isinstance(value, (int, Decimal)):
        number = Decimal(value)
    elif isinstance(value, str) and _NUMERIC.fullmatch(value.strip()):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            number = None
    if number is not None:
        return _epoch(number, vocab)
    if isinstance(value, (list, dict)):
        return _structured_time(value)
    if not isinstance(value, str):
        return None, "is not a date or time"
    ms_date = MS_DATE.match(value.strip())
    if ms_date:
        return _epoch(Decimal(ms_date.group(1)), vocab, unit="ms")
    text = _plain(value)
    try:  # ISO 8601 beyond what pandas holds (before 1677, after 2262)
        moment = datetime.fromisoformat(text)
        zoned = moment.tzinfo is not None
        out = _fmt(moment if zoned else moment.replace(tzinfo=UTC))
        if out is not None:
            return out, "ISO 8601" + (" with zone" if zoned else "")
    except ValueError:
        pass
    for fmt in vocab.time_formats:
        try:
            moment = datetime.strptime(text, fmt)
        except ValueError:
            continue
        zoned = moment.tzinfo is not None
        out = _fmt(moment if zoned else moment.replace(tzinfo=UTC))
        if out is not None:
            return out, f"{fmt}{' with zone' if zoned else ''}"
    match = DAY_MONTH.match(text)
    if match:
        return _day_month(match, day_first)
    return None, "is not a date or time in a known format"


_GO_MONOTONIC = re.compile(r" m=[+-]\d+(?:\.\d+)?$")
_ZONE_AFTER_OFFSET = re.compile(r"([+-]\d{2}:?\d{2}) [A-Z]{2,5}$")  # "+0200 CEST": the offset says it
_ZONE_NAME = re.compile(r"(?<=\s)([A-Z]{1,5})(?=$|\s\d{4}$)")
_FRACTION = re.compile(r"(\.\d{6})\d+")
_NARROW_SPACES = str.maketrans({"\u202f": " ", "\u00a0": " ", "\u2009": " "})


def _plain(value: str) -> str:
    """A time as strptime can read it: odd spaces made plain, JavaScript's "(zone name)" and Go's
    monotonic clock cut off, a zone name that stands for one offset replaced by it, and a fraction
    finer than microseconds cut to microseconds (the original is kept in legacy_extra)."""
    text = value.translate(_NARROW_SPACES).strip()
    if text.endswith(")") and " (" in text:
        text = text[: text.index(" (")]
    text = _GO_MONOTONIC.sub("", text)
    text = _ZONE_AFTER_OFFSET.sub(r"\1", text)
    zone = _ZONE_NAME.search(text)
    if zone and zone.group(1) in ZONE_NAMES:
        text = text[: zone.start()] + ZONE_NAMES[zone.group(1)] + text[zone.end() :]
    return _FRACTION.sub(r"\1", text)


def _structured_time(value: list[Any] | dict[str, Any]) -> tuple[str | None, str]:
    """Times serialisers wrote as structures: Jackson's [y, m, d, h, mi, s, ns] for a LocalDateTime,
    serde's {secs_since_epoch, nanos_since_epoch} for a Rust SystemTime, PHP's json_encode of a
    DateTime {date, timezone_type, timezone}."""
    if isinstance(value, list) and 3 <= len(value) <= 7 and all(type(v) is int for v in value):
        parts = list(value) + [0] * (7 - len(value))
        try:
            moment = datetime(*parts[:6], parts[6] // 1000, tzinfo=UTC)
        except ValueError:
            return None, "is not a valid date"
        return _fmt(moment), "Jackson [y, m, d, h, mi, s, ns]"
    if isinstance(value, dict) and set(value) == {"secs_since_epoch", "nanos_since_epoch"}:
        secs, nanos = value["secs_since_epoch"], value["nanos_since_epoch"]
        if type(secs) is int and type(nanos) is int:
            return _fmt(_EPOCH0 + timedelta(seconds=secs, microseconds=nanos // 1000)), "Rust SystemTime"
    if isinstance(value, dict) and set(value) == {"date", "timezone_type", "timezone"}:
        try:
            from zoneinfo import ZoneInfo

            moment = datetime.strptime(str(value["date"]), "%Y-%m-%d %H:%M:%S.%f")
            zone = value["timezone"]
            tz = ZoneInfo(zone) if value["timezone_type"] == 3 else datetime.strptime(zone, "%z").tzinfo
            return _fmt(moment.replace(tzinfo=tz)), "PHP DateTime"
        except (ValueError, KeyError, TypeError, OSError):
            return None, "is not a valid date"
    return None, "is not a date or time"


def _epoch(number: Decimal, vocab: Vocabulary, unit: str | None = None) -> tuple[str | None, str]:
    """A Unix time, its unit told by its size (or given)."""
    if unit is None:
        unit = next((u for u, low, high in vocab.epochs if low <= abs(number) < high), None)
    out = None
    if unit is not None:
        try:
            out = _fmt(_EPOCH0 + timedelta(microseconds=int(number * 10**6 / _EPOCH_UNITS[unit])))
        except OverflowError:
            out = None
    return (out, "Unix time") if out else (None, "is a number that is not a plausible Unix time")


def _day_month(match: re.Match[str], day_first: bool | None) -> tuple[str | None, str]:
    """A date written DD/MM/YYYY or MM/DD/YYYY: a value above 12 on one side settles it by itself;
    otherwise the file's own values do (day_first), and where they do not, it is not guessed."""
    a, _sep, b, year, hour, minute, second, half = match.groups()
    first, second_n = int(a), int(b)
    if first == second_n:
        own = True if day_first is None else day_first  # the same either way
    elif first > 12 >= second_n:
        own = True
    elif second_n > 12 >= first:
        own = False
    else:
        own = day_first
    if own is None:
        return (
            None,
            "is ambiguous: this file never settles whether it is DD/MM or MM/DD (see --mapping dates)",
        )
    day, month = (first, second_n) if own else (second_n, first)
    h = int(hour or 0)
    if half:
        if not 1 <= h <= 12:
            return None, "is not a date or time in a known format"
        h = h % 12 + (12 if half.lower() == "pm" else 0)
    try:
        moment = datetime(int(year), month, day, h, int(minute or 0), int(second or 0), tzinfo=UTC)
    except ValueError:
        return None, "is not a valid date"
    return _fmt(moment), "DD/MM/YYYY" if own else "MM/DD/YYYY"


def day_month_evidence(values: Sequence[Any]) -> tuple[int, int]:
    """(values that can only be DD/MM, values that can only be MM/DD) among values of that shape."""
    day_first = month_first = 0
    for v in values:
        if isinstance(v, str):
            match = DAY_MONTH.match(v)
            if match:
                a, b = int(match.group(1)), int(match.group(3))
                day_first += a > 12 >= b
                month_first += b > 12 >= a
    return day_first, month_first


# --- optional columns: description, owner, priority, tags --------------------------------------------

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize_email(email: str) -> str:
    """An account's email as accounts are matched: no blanks around it, in lower case."""
    return email.strip().lower()


def owners(values: list[Any], sources: list[str | None], vocab: Vocabulary) -> Column:
    """An owner is an account's email; a name that is not one (`"owner": "sam"`) cannot be matched
    to an account, so the record goes to the default owner and the name stays in legacy_extra
    (--owner-map assigns them). --strict quarantines it instead (validation refuses it). An email
    written otherwise than accounts are matched (` Sam@Example.com`) is kept as written too."""
    if not vocab.infer or not any(sources):
        return Column(list(values))
    col = Column(list(values))
    for i, v in enumerate(values):
        if v is not None and not (isinstance(v, str) and _EMAIL.match(v.strip())):
            col.values[i] = None
            col.kept.add(i)
            col.defaulted.add(i)
        elif isinstance(v, str) and v != normalize_email(v):
            col.kept.add(i)
    return col


def description(values: list[Any], sources: list[str | None]) -> Column:
    """Text goes to the column; anything else (a list of lines, an object) stays in legacy_extra."""
    if _types(values) <= {str, type(None)}:
        return Column(list(values))
    col = Column([v if v is None or isinstance(v, str) else None for v in values])
    col.kept = {i for i, v in enumerate(values) if v is not None and not isinstance(v, str)}
    return col


def priority(values: list[Any], sources: list[str | None], vocab: Vocabulary) -> Column:
    """low | medium | high (as the table spells them); anything else keeps the column's default,
    with the value in legacy_extra."""
    n = len(values)
    col = Column(["medium"] * n)
    if not any(sources):
        col.defaulted = set(range(n))
        return col
    for i, v in enumerate(values):
        if sources[i] is None or v is None:
            col.defaulted.add(i)
            continue
        word = vocab.priorities.get(norm(v)) if isinstance(v, str) else None
        if word is None:
            col.defaulted.add(i)
            col.kept.add(i)
            continue
        col.values[i] = word
        if v != word:
            col.kept.add(i)
        col.rules[f"priority <- {sources[i]}"] += 1
    return col


_ARRAY_SPECIAL = re.compile(r'[{}",\\\s]')


def pg_array(items: Sequence[str]) -> str:
    """A text[] exactly as PostgreSQL prints it (so COPY's input and the checksum line agree): an
    element is quoted when it is empty, NULL, or holds a brace, comma, quote, backslash or blank."""
    out = []
    for item in items:
        if item == "" or item.upper() == "NULL" or _ARRAY_SPECIAL.search(item):
            out.append('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            out.append(item)
    return "{" + ",".join(out) + "}"


def tags(values: list[Any], sources: list[str | None], vocab: Vocabulary) -> Column:
    """A list of strings goes to tags; so does text of comma-separated tags ("work,urgent", as a
    CLI's --tags option was typed), the text kept in legacy_extra; anything else keeps the default
    (no tags), the value kept."""
    n = len(values)
    col = Column(["{}"] * n)
    if not any(sources):
        col.defaulted = set(range(n))
        return col
    for i, v in enumerate(values):
        if sources[i] is None or v is None:
            col.defaulted.add(i)
            continue
        if isinstance(v, list) and all(isinstance(t, str) and t.strip() for t in v):
            col.values[i] = pg_array(v)
            col.rules[f"tags <- {sources[i]}"] += 1
        elif isinstance(v, str) and vocab.infer and v.strip():
            col.values[i] = pg_array([t.strip() for t in v.split(",") if t.strip()])
            col.kept.add(i)
            col.rules[f"tags <- {sources[i]} (comma-separated text)"] += 1
        else:
            col.defaulted.add(i)
            col.kept.add(i)
    return col
