"""What the toolkit knows about Phase 1 files, in one table: the keys CLIs used for each field, the
words they wrote for "done", the ways they wrote a time, and where they put the records.

Everything here is data. Keys are compared normalised (lower case, without `_`, `-`, `.` and
blanks), so `created_at`, `createdAt`, `CreatedAt` and `created-at` are one alias. A mapping file
(`--mapping FILE`, YAML) extends or overrides any entry with the same names (see `extended()`);
`--strict` replaces the table by STRICT, which is what the flow accepted before inference.

Order matters where it says so: the first alias a record has wins, the others stay in legacy_extra.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

# The fields a record is mapped onto. Phase 2 has a column for all but status, completed_at and
# due_date: those are understood (for completion, and to say what they are) and kept in legacy_extra.
TARGETS = (
    "id", "title", "description", "completed", "status", "created_at", "updated_at", "owner", "priority",
    "tags", "completed_at", "due_date",
)  # fmt: skip
TIME_TARGETS = ("created_at", "updated_at", "completed_at", "due_date")


@dataclass(frozen=True, eq=False)  # hashed by identity: the per-shape caches key on it
class Vocabulary:
    # target -> aliases, normalised, in order of preference
    aliases: dict[str, tuple[str, ...]]
    # keys that hold the title only when the record has no title alias ("description" as the only text)
    title_fallbacks: tuple[str, ...]
    # keys whose array (or object of records) holds the records: named outright, and generic names
    # that hold a titled task's checklist as often as a list of tasks
    containers: tuple[str, ...]
    generic_containers: tuple[str, ...]
    # keys whose array holds groups of records (lists, days, projects, ...)
    group_containers: tuple[str, ...]
    # keys whose array of strings is not a list of tasks (checked before reading strings as titles)
    not_tasks: tuple[str, ...]
    # status word (normalised) -> completed
    statuses: dict[str, bool]
    # boolean spellings (normalised text) -> value
    booleans: dict[str, bool]
    # priority spellings (normalised) -> the Phase 2 value
    priorities: dict[str, str]
    # values of a time field that mean "no time" (Go's zero time, "None", ...)
    no_time: tuple[str, ...]
    # strptime formats tried, in order, after ISO 8601; day-first / month-first ones are chosen per
    # file (see DAY_MONTH), never guessed per value
    time_formats: tuple[str, ...]
    # numeric times: (unit, smallest, largest) -- a number in no range is not a time
    epochs: tuple[tuple[str, float, float], ...]
    # infer anything at all: False is --strict (exact keys, these containers, no conversions, and a
    # record that needs a default is quarantined)
    infer: bool = True
    # what a record that lacks the field gets, and the rule's name in the report
    defaults: dict[str, str] = field(default_factory=dict)

    def extended(self, spec: dict[str, Any]) -> Vocabulary:
        """This table with a mapping file's `vocabulary:` section merged in (its entries first)."""
        changes: dict[str, Any] = {}
        for name, value in spec.items():
            current = getattr(self, name)
            if isinstance(current, dict) and name == "aliases":
                merged = dict(current)
                for target, keys in value.items():
                    merged[target] = tuple(dict.fromkeys([*map(norm, keys), *current.get(target, ())]))
                changes[name] = merged
            elif isinstance(current, dict):
                normalise = norm if name in ("statuses", "booleans", "priorities") else str
                changes[name] = {**current, **{normalise(k): v for k, v in value.items()}}
            elif isinstance(current, tuple) and name in ("time_formats", "no_time"):
                changes[name] = tuple(dict.fromkeys([*value, *current]))
            elif isinstance(current, tuple):
                changes[name] = tuple(dict.fromkeys([*map(norm, value), *current]))
            else:
                changes[name] = value
        return replace(self, **changes)


_SEPARATORS = re.compile(r"[\s_\-.]+")


def norm(key: str) -> str:
    """A key or word as the table compares it: `Created_At` -> `createdat`."""
    return _SEPARATORS.sub("", key).lower()


def _n(*keys: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(norm(k) for k in keys))


# fmt: off
BUILTIN = Vocabulary(
    aliases={
        "id": _n("id", "_id", "task_id", "todo_id", "item_id", "uuid", "guid", "uid"),
        "title": _n(
            "title", "name", "task", "text", "todo", "item", "content", "label", "summary", "subject",
            "task_name", "task_title", "todo_text", "task_text", "title_text",
        ),
        # content and text are titles, unless the record has a title: then they describe it
        "description": _n("description", "desc", "details", "detail", "notes", "note", "body", "content", "text"),
        "completed": _n(
            "completed", "is_completed", "is_complete", "complete", "done", "is_done", "finished",
            "is_finished", "checked", "is_checked", "completed_flag",
        ),
        "status": _n("status", "state", "task_status", "todo_status"),
        "created_at": _n(
            "created_at", "created", "created_on", "created_date", "created_time", "creation_date",
            "creation_time", "date_created", "date_added", "added_at", "added_on", "added", "create_at",
            "create_time", "create_date", "inserted_at", "date", "datetime", "timestamp", "time", "ts",
        ),
        "updated_at": _n(
            "updated_at", "updated", "updated_on", "updated_date", "update_at", "update_time", "modified",
            "modified_at", "modified_on", "last_modified", "last_updated", "date_updated", "date_modified",
            "edited_at", "last_edited", "changed_at",
        ),
        "owner": _n("owner", "owner_email", "user_email", "email"),
        "priority": _n("priority", "prio", "pri"),
        "tags": _n("tags", "labels"),
        "completed_at": _n(
            "completed_at", "completed_on", "completed_date", "completion_date", "completed_time",
            "date_completed", "done_at", "done_on", "done_date", "finished_at", "finished_on", "closed_at",
            "resolved_at",
        ),
        "due_date": _n("due_date", "due", "due_at", "due_on", "due_time", "deadline", "due_by"),
    },
    title_fallbacks=_n("description", "desc", "details", "notes", "note", "body"),
    containers=_n(
        "tasks", "todos", "todo", "task_list", "todo_list", "todo_items", "task_items", "my_tasks", "all_tasks",
    ),
    generic_containers=_n("items", "entries", "records", "data", "list"),
    group_containers=_n(
        "lists", "projects", "categories", "days", "groups", "boards", "columns", "sections", "folders", "dates",
    ),
    not_tasks=_n(
        "tags", "labels", "categories", "users", "people", "settings", "config", "options", "filters", "colors",
        "history", "deleted_ids", "order", "keys",
    ),
    statuses={
        **dict.fromkeys(_n(
            "done", "completed", "complete", "finished", "closed", "resolved", "checked",
            # the names of lists that hold done tasks
            "completed tasks", "done tasks", "finished tasks", "completed todos", "done todos", "done items",
        ), True),
        **dict.fromkeys(_n(
            "todo", "to-do", "to do", "pending", "open", "new", "not started", "not-started", "in-progress",
            "in_progress", "in progress", "doing", "started", "active", "wip", "ongoing", "working",
            "in review", "review", "blocked", "waiting", "on hold", "paused", "backlog", "planned", "ready",
            "incomplete", "not done", "not-done", "undone", "uncompleted", "not completed", "unfinished",
            "needs action", "in process",  # iCalendar VTODO (RFC 5545); Google Tasks' needsAction
            "pending tasks", "open tasks", "active tasks", "todo items",
        ), False),
    },
    booleans={
        **dict.fromkeys(_n("true", "yes", "y", "1", "on", "t", "x", "[x]", "✓", "✔"), True),
        **dict.fromkeys(_n("false", "no", "n", "0", "off", "f", "[ ]"), False),
    },
    priorities={
        **dict.fromkeys(_n("low", "l"), "low"),
        **dict.fromkeys(_n("medium", "med", "m", "normal", "mid"), "medium"),
        **dict.fromkeys(_n("high", "h"), "high"),
    },
    # and any time on 0001-01-01: how Go and .NET write "no time" (their zero value)
    no_time=("", "null", "none", "nil", "n/a", "-", "0000-00-00", "0000-00-00 00:00:00"),
    time_formats=(
        "%Y-%m-%d %H:%M:%S.%f %z",  # Rust chrono's to_string(), Go's Time.String() (zone name cut off)
        "%Y-%m-%d %H:%M:%S %z",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d",  # one-digit month or day, which ISO 8601 does not allow
        "%Y/%m/%d %H:%M:%S",
        "%Y/%m/%d %H:%M",
        "%Y/%m/%d",
        "%a %b %d %H:%M:%S %Y",  # time.ctime(): "Sun Sep 15 10:30:00 2024"
        "%a %b %d %H:%M:%S %z %Y",  # Java's Date.toString(), its zone name read as an offset
        "%a %b %d %Y %H:%M:%S GMT%z",  # JavaScript's Date.toString(), its "(zone name)" cut off
        "%a, %d %b %Y %H:%M:%S %z",  # RFC 2822, Date.toUTCString() (GMT read as +0000)
        "%a %b %d %Y",  # Date.toDateString()
        "%b %d, %Y, %I:%M:%S %p",  # Gson's default for java.util.Date
        "%b %d, %Y %I:%M:%S %p",
        "%B %d, %Y %I:%M %p",
        "%B %d, %Y %H:%M",
        "%B %d, %Y",
        "%b %d, %Y %I:%M %p",
        "%b %d, %Y",
        "%d %B %Y %H:%M",
        "%d %B %Y",
        "%d %b %Y %H:%M",
        "%d %b %Y",
    ),
    # From 2000 on: a smaller number is not taken for a Unix time (Swift's JSONEncoder writes seconds
    # since 2001 by default, which would read as a plausible time in the 1990s).
    epochs=(
        ("s", 946_684_800, 1e11),  # 2000 .. 5138
        ("ms", 946_684_800e3, 1e14),
        ("us", 946_684_800e6, 1e17),
        ("ns", 946_684_800e9, 1e20),
    ),
    defaults={
        "completed": "no completion field: completed = false",
        "created_at": "no creation time: created_at = the run's start",
        "updated_at": "no update time: updated_at = created_at",
        "id": "no id: a key derived from the record's content and occurrence",
        "priority": "no priority Phase 2 accepts: priority = medium (any value is kept in legacy_extra)",
        "tags": "no list of tags: tags = {} (any value is kept in legacy_extra)",
        "owner": "an owner that is not an email address: the default owner (the value is kept in legacy_extra)",
    },
)

# Zone names that stand for one offset only (CST, IST or BST could be any of several: never guessed).
ZONE_NAMES = {
    "UTC": "+0000", "GMT": "+0000", "Z": "+0000", "WET": "+0000", "WEST": "+0100", "CET": "+0100",
    "CEST": "+0200", "MET": "+0100", "MEST": "+0200", "EET": "+0200", "EEST": "+0300", "MSK": "+0300",
    "EST": "-0500", "EDT": "-0400", "CDT": "-0500", "MST": "-0700", "MDT": "-0600", "PST": "-0800",
    "PDT": "-0700", "AKST": "-0900", "AKDT": "-0800", "HST": "-1000", "JST": "+0900", "KST": "+0900",
    "AEST": "+1000", "AEDT": "+1100", "NZST": "+1200", "NZDT": "+1300",
}
# fmt: on

# .NET's DataContractJsonSerializer: "/Date(1726396200123)/" or "/Date(1726396200123+0200)/" (ms).
MS_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")

# Day and month written with `/`, `.` or `-` and a four-digit year, with an optional time: which is
# which is decided for the whole file from values where one of them is above 12.
DAY_MONTH = re.compile(
    r"^\s*(\d{1,2})([/.\-])(\d{1,2})\2(\d{4})(?:[ ,T]+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*([AaPp][Mm])?)?\s*$"
)

# --strict: what the flow accepted before inference, exactly.
STRICT = replace(
    BUILTIN,
    aliases={
        "id": ("id", "task_id"),
        "title": ("title",),
        "description": ("description", "desc", "details"),
        "completed": ("completed", "is_completed", "done", "is_done"),
        "status": (),
        "created_at": ("created_at", "createdAt", "created"),
        "updated_at": ("updated_at", "updatedAt", "updated"),
        "owner": ("owner", "user_email", "owner_email"),
        "priority": (),
        "tags": (),
        "completed_at": (),
        "due_date": (),
    },
    title_fallbacks=(),
    containers=("tasks",),
    generic_containers=(),
    group_containers=(),
    statuses={},
    booleans={},
    priorities={},
    no_time=(),
    time_formats=(),
    epochs=(),
    infer=False,
)
