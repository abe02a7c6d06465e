"""What became of each file of a run, read back from its checkpoints (`migration_files`: a row per
file and chunk that held its records; part -1 for a file refused whole, part 0 for one whose
records no chunk holds: none, or counted unchanged from its last sync).

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
from tasks.verify import ACCOUNTED

FIELDS = ("file_no", "path", "legacy_source", "owner", "status", "error", "records", "inserted", "updated",
          "unchanged", "conflicts", "duplicates", "quarantined")  # fmt: skip
PAGE = 5000  # files a page (100,000 files: 20 reads a pass, each a few milliseconds)

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


def every(session: Session, run_ids: Sequence[str], page: int = PAGE) -> Iterator[str]:
    """Every row in report order (first()'s), each as the text of a JSON object PostgreSQL writes
    (100,000 files' rows made into dicts here and dumped took 0.91-1.01 s, the text 0.45-0.52 s):
    the refused files, then the others, each run's by ranges of `page` file numbers (a run numbers
    its files from 0), so a page reads only its own. A run that refused no file is not paged
    through for its refused ones (100,000 files: 20 reads of every row, 0.2 s, for none)."""
    spans = {run_id: session.run("report:files", _span, run_id) for run_id in run_ids}
    for refused in (True, False):
        for run_id in run_ids:
            last, any_refused = spans[run_id]
            if refused and not any_refused:
                continue
            for low in range(0, last + 1, page):
                yield from session.run("report:files", _page, run_id, refused, low, low + page)


def _span(conn: psycopg.Connection, run_id: str) -> tuple[int, bool]:
    """The run's last file number (-1: none), and whether it refused any file (part -1)."""
    row = conn.execute(
        "SELECT max(file_no), coalesce(bool_or(part = -1), false) FROM migration_files WHERE run_id = %s", (run_id,)
    ).fetchone()
    return (-1, False) if row is None or row[0] is None else (int(row[0]), bool(row[1]))


def _page(conn: psycopg.Connection, run_id: str, refused: bool, low: int, high: int) -> list[str]:
    rows = conn.execute(
        f"SELECT row_to_json(f)::text FROM (SELECT {_COLUMNS} FROM "
        f"({_per_file(' AND file_no >= %(low)s AND file_no < %(high)s')}) p "
        "WHERE refused = %(refused)s ORDER BY file_no) f",
        {"runs": [run_id], "low": low, "high": high, "refused": refused},
    )
    return [r[0] for r in rows]
