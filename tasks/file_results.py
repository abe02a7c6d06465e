"""What became of each file of a run, read back from its checkpoints (`migration_files`: a row per
file and chunk that held its records, part -1 for a file refused whole).

A run of 100,000 files is never held as 100,000 rows: the totals and the per-file check are
summed in SQL, and the rows themselves are read a page at a time while the report is written
(each page a unit of the retry policy, on the command's session)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from tasks.db import Session
from tasks.report import MIGRATED

FIELDS = ("file_no", "path", "legacy_source", "owner", "status", "error", "records", "inserted", "updated",
          "unchanged", "conflicts", "duplicates", "quarantined")  # fmt: skip
ACCOUNTED = ("inserted", "updated", "unchanged", "conflicts", "duplicates", "quarantined")
PAGE = 5000  # rows a page (100,000 files: 20 reads, each a few milliseconds)

_COLUMNS = ", ".join(FIELDS)


def _per_file(where: str = "") -> str:
    """One row per file of the runs: its parts summed (a file's records may span two chunks)."""
    return (
        "SELECT run_id, file_no, min(path) AS path, min(legacy_source) AS legacy_source, min(owner) AS owner, "
        "min(status) AS status, min(error) AS error, bool_or(part = -1) AS refused, "
        + ", ".join(f"sum({c})::bigint AS {c}" for c in ("records", *ACCOUNTED))
        + f" FROM migration_files WHERE run_id = ANY(%(runs)s::uuid[]){where} GROUP BY run_id, file_no"
    )


@dataclass(frozen=True)
class FileTotals:
    files: int
    refused: int
    unchanged_files: int
    # what the unchanged files (counted from their last sync, not read again) add to the run's counts
    unchanged: dict[str, int]
    problems: list[str]  # a migrated file whose records are not each accounted for once


def totals(conn: psycopg.Connection, run_ids: Sequence[str]) -> FileTotals:
    row = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE refused), count(*) FILTER (WHERE status = 'unchanged'), "
        "coalesce(sum(records) FILTER (WHERE status = 'unchanged'), 0)::bigint, "
        "coalesce(sum(unchanged) FILTER (WHERE status = 'unchanged'), 0)::bigint, "
        f"coalesce(sum(duplicates) FILTER (WHERE status = 'unchanged'), 0)::bigint FROM ({_per_file()}) f",
        {"runs": list(run_ids)},
    ).fetchone()
    assert row is not None  # an aggregate without GROUP BY gives one row
    wrong = conn.execute(
        f"SELECT path, records, {' + '.join(ACCOUNTED)} FROM ({_per_file()}) f "
        f"WHERE status = ANY(%(migrated)s) AND records <> {' + '.join(ACCOUNTED)} ORDER BY run_id, file_no",
        {"runs": list(run_ids), "migrated": list(MIGRATED)},
    ).fetchall()
    return FileTotals(
        files=row[0],
        refused=row[1],
        unchanged_files=row[2],
        unchanged={"records_read": row[3], "unchanged": row[4], "duplicates": row[5]},
        problems=[f"{path}: {records} records read, {accounted} accounted for" for path, records, accounted in wrong],
    )


def first(conn: psycopg.Connection, run_ids: Sequence[str], limit: int) -> list[dict[str, Any]]:
    """The first `limit` rows in report order: the refused files first, then by run and file."""
    return [
        dict(zip(FIELDS, r, strict=True))
        for r in conn.execute(
            f"SELECT {_COLUMNS} FROM ({_per_file()}) f "
            "ORDER BY refused DESC, array_position(%(runs)s::uuid[], run_id), file_no LIMIT %(limit)s",
            {"runs": list(run_ids), "limit": limit},
        )
    ]


def every(session: Session, run_ids: Sequence[str], page: int = PAGE) -> Iterator[dict[str, Any]]:
    """Every row in report order (first()'s), a page at a time."""
    yield from _pages(session, run_ids, page, refused=True)
    yield from _pages(session, run_ids, page, refused=False)


def _pages(session: Session, run_ids: Sequence[str], page: int, *, refused: bool) -> Iterator[dict[str, Any]]:
    for run_id in run_ids:
        after = -1
        while True:
            rows = session.run("report:files", _page, run_id, refused, after, page)
            yield from rows
            if len(rows) < page:
                break
            after = rows[-1]["file_no"]


def _page(conn: psycopg.Connection, run_id: str, refused: bool, after: int, size: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM ({_per_file(' AND file_no > %(after)s')}) f WHERE refused = %(refused)s "
        "ORDER BY file_no LIMIT %(size)s",
        {"runs": [run_id], "after": after, "refused": refused, "size": size},
    )
    return [dict(zip(FIELDS, r, strict=True)) for r in rows]
