"""The canonical text of a migrated row, on both sides of the wire.

A row's content is one CSV line: id, user_id, legacy_source, legacy_id, title, description,
completed, created_at, updated_at, legacy_extra. The load sends exactly that line to COPY, and its
checksum is md5 over it. `ROW_LINE_SQL` rebuilds the same line from what PostgreSQL stored, so a
checksum computed from the source and one computed from the database agree only if every byte of
the row survived. The two definitions live side by side because they must never drift apart.

Checksums are summed as signed 64-bit integers into an exact numeric: order does not matter (chunks
commit in any order) and, unlike XOR, two identical rows do not cancel out.
"""

from __future__ import annotations

import hashlib

TIMESTAMP_FORMAT_SQL = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'


def quote(text: str) -> str:
    """A CSV field for COPY … (FORMAT csv): always quoted, so '' is an empty string and not NULL."""
    return '"' + text.replace('"', '""') + '"'


def row_line(
    task_hex: str,
    user_hex: str,
    source: str,
    legacy_id: int,
    title: str,
    description: str | None,
    completed: bool,
    created_at: str,
    updated_at: str,
    extra_json: str | None,
) -> str:
    """The canonical line of one row (uuids as 32 hex digits, timestamps as TIMESTAMP_FORMAT_SQL)."""
    return (
        f"{task_hex},{user_hex},{quote(source)},{legacy_id},{quote(title)},"
        f"{'' if description is None else quote(description)},{'t' if completed else 'f'},"
        f"{created_at},{updated_at},{'' if extra_json is None else quote(extra_json)}"
    )


def line_checksum(line: str) -> int:
    return int.from_bytes(
        hashlib.md5(line.encode("utf-8"), usedforsecurity=False).digest()[:8], "big", signed=True
    )


def _q(expr: str) -> str:
    return f"""'"' || replace({expr}, '"', '""') || '"'"""


def row_line_sql(alias: str = "t", *, timestamps: bool = True) -> str:
    """The same line, rebuilt in SQL from a `tasks` row (or a table shaped like it) named alias.
    timestamps=False leaves created_at/updated_at empty (for records whose source had none)."""
    a = alias

    def ts(column: str) -> str:
        return f"to_char({a}.{column} AT TIME ZONE 'UTC', '{TIMESTAMP_FORMAT_SQL}')" if timestamps else "''"

    return (
        f"concat_ws(',', replace({a}.id::text, '-', ''), replace({a}.user_id::text, '-', ''), "
        f"coalesce({_q(f'{a}.legacy_source')}, ''), coalesce({a}.legacy_id::text, ''), {_q(f'{a}.title')}, "
        f"coalesce({_q(f'{a}.description')}, ''), CASE WHEN {a}.completed THEN 't' ELSE 'f' END, "
        f"{ts('created_at')}, {ts('updated_at')}, coalesce({_q(f'{a}.legacy_extra::text')}, ''))"
    )


def row_checksum_sql(alias: str = "t") -> str:
    """line_checksum() of the row, computed by PostgreSQL."""
    return f"('x' || left(md5({row_line_sql(alias)}), 16))::bit(64)::bigint"
