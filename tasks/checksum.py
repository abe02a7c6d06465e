"""The canonical text of a migrated row, on both sides of the wire.

A row's content is one CSV line: id, user_id, legacy_source, legacy_key, legacy_id, title,
notes, status, created_at, updated_at, priority, tags, legacy_extra (a Phase 1 record's completion
is its status: done, or todo; revision 0009). The load sends exactly that line to COPY, and its
checksum is md5 over it. `ROW_LINE_SQL` rebuilds the same line from what PostgreSQL stored, so a
checksum computed from the source and one computed from the database agree only if every byte of
the row survived. The two definitions live side by side because they must never drift apart.

Checksums are summed as signed 64-bit integers into an exact numeric: order does not matter (chunks
commit in any order) and, unlike XOR, two identical rows do not cancel out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

TIMESTAMP_FORMAT_SQL = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'

# The columns of the line, then its checksum and the run that wrote it: what a chunk COPYs.
COPY_COLUMNS = (
    "id, user_id, legacy_source, legacy_key, legacy_id, title, notes, status, created_at, "
    "updated_at, priority, tags, legacy_extra, legacy_checksum, migration_run_id"
)


def quoted(values: Sequence[str | None]) -> list[str]:
    """CSV fields for COPY … (FORMAT csv): always quoted, so '' is an empty string, and None is the
    empty field COPY reads as NULL. A column of one value (a default) is quoted once."""
    if values and values[0] is not None and values.count(values[0]) == len(values):
        return ['"' + values[0].replace('"', '""') + '"'] * len(values)
    return ["" if v is None else '"' + v.replace('"', '""') + '"' for v in values]


def row_lines(
    task_hex: Sequence[str],
    user_hex: Sequence[str],
    source: str | Sequence[str],
    legacy_keys: Sequence[str],
    legacy_ids: Sequence[int | None],
    titles: Sequence[str],
    descriptions: Sequence[str | None],
    completed: Sequence[bool],
    created_at: Sequence[str],
    updated_at: Sequence[str],
    priorities: Sequence[str],
    tags: Sequence[str],
    extra_json: Sequence[str | None],
) -> list[str]:
    """The canonical lines of a column-wise batch of rows (uuids as 32 hex digits, timestamps as
    TIMESTAMP_FORMAT_SQL, tags as PostgreSQL prints a text[]); source: one legacy source for all
    rows, or one per row."""
    srcs = quoted([source] * len(task_hex) if isinstance(source, str) else source)
    return [
        f"{tid},{uid},{src},{key},{'' if lid is None else lid},{title},{desc},{'done' if done else 'todo'},"
        f"{created},{updated},{prio},{tag},{extra}"
        for tid, uid, src, key, lid, title, desc, done, created, updated, prio, tag, extra in zip(
            task_hex,
            user_hex,
            srcs,
            quoted(legacy_keys),
            legacy_ids,
            quoted(titles),
            quoted(descriptions),
            completed,
            created_at,
            updated_at,
            quoted(priorities),
            quoted(tags),
            quoted(extra_json),
            strict=True,
        )
    ]


def line_checksums(lines: Sequence[bytes]) -> list[int]:
    """Each line's checksum: the first 8 bytes of its md5, as a signed big-endian integer. Each
    hash continues a copy of one empty md5 state (cheaper than a new hash object per line)."""
    base = hashlib.md5(usedforsecurity=False)
    heads = []
    for line in lines:
        h = base.copy()
        h.update(line)
        heads.append(h.digest()[:8])
    return np.frombuffer(b"".join(heads), dtype=">i8").tolist() if heads else []


def hex_sql(uuid_expr: str) -> str:
    """A uuid as its 32 hex digits, in SQL (the bytes hex-encoded: cheaper than text, then replace)."""
    return f"encode(uuid_send({uuid_expr}), 'hex')"


def _q(expr: str) -> str:
    return f"""'"' || replace({expr}, '"', '""') || '"'"""


def row_line_sql(
    alias: str = "t", *, timestamps: bool = True, created: str | None = None, updated: str | None = None
) -> str:
    """The same line, rebuilt in SQL from a `tasks` row (or a table shaped like it) named alias.
    timestamps=False leaves created_at/updated_at empty (for records whose source had none);
    created / updated are SQL expressions standing in for the row's own timestamps."""
    a = alias

    def ts(column: str) -> str:
        expr = {"created_at": created, "updated_at": updated}[column] or f"{a}.{column}"
        return f"to_char({expr} AT TIME ZONE 'UTC', '{TIMESTAMP_FORMAT_SQL}')" if timestamps else "''"

    # A row written before legacy_key existed (revision 0008) has its integer id as its key.
    return (
        f"concat_ws(',', {hex_sql(f'{a}.id')}, {hex_sql(f'{a}.user_id')}, "
        f"coalesce({_q(f'{a}.legacy_source')}, ''), "
        f"coalesce({_q(f'coalesce({a}.legacy_key, {a}.legacy_id::text)')}, ''), "
        f"coalesce({a}.legacy_id::text, ''), {_q(f'{a}.title')}, "
        f"coalesce({_q(f'{a}.notes')}, ''), {a}.status, "
        f"{ts('created_at')}, {ts('updated_at')}, {_q(f'{a}.priority')}, {_q(f'{a}.tags::text')}, "
        f"coalesce({_q(f'{a}.legacy_extra::text')}, ''))"
    )


def row_checksum_sql(alias: str = "t") -> str:
    """line_checksums() of the row, computed by PostgreSQL."""
    return f"('x' || left(md5({row_line_sql(alias)}), 16))::bit(64)::bigint"
