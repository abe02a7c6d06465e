"""The per-file results of runs (tasks/file_results.py) on real PostgreSQL: totals and the per-file
check summed in SQL, the rows read a page at a time in report order, and a report that writes
them all without the run ever holding them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest

from flows.outcome import OUTCOME_ROWS, brief
from tasks import file_results
from tasks.db import Session
from tasks.report import Rows, markdown, write


def _run(conn: psycopg.Connection) -> str:
    run_id = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO migration_runs (id, kind, status, source_path, source_name, source_sha256, chunk_size, "
        "parameters) VALUES (%s, 'phase1', 'running', 'uploads', 'phase1', '', 100, '{}')",
        (run_id,),
    )
    return run_id


def _part(conn: psycopg.Connection, run_id: str, no: int, part: int, status: str, **counts: int) -> None:
    columns = ["run_id", "file_no", "part", "legacy_source", "path", "owner", "status", *counts]
    conn.execute(
        f"INSERT INTO migration_files ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
        (run_id, no, part, f"phase1:u{no}/tasks.json", f"uploads/u{no}/tasks.json", f"u{no}@example.com",
         status, *counts.values()),
    )  # fmt: skip


def _refused(conn: psycopg.Connection, run_id: str, no: int, folder: str, status: str, error: str) -> None:
    """A file refused whole: its one row, part -1, with the reason."""
    conn.execute(
        "INSERT INTO migration_files (run_id, file_no, part, legacy_source, path, status, error) "
        "VALUES (%s, %s, -1, %s, %s, %s, %s)",
        (run_id, no, f"phase1:{folder.split('/')[-1]}/tasks.json", f"{folder}/tasks.json", status, error),
    )


@pytest.fixture
def two_runs(db_url: str) -> tuple[str, str, str]:
    """Run a: 12 files, file 5 spanning two chunks, file 7 refused, file 9 unchanged since its
    last sync, file 11 with a record unaccounted for; run b: 3 files, its file 1 refused."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        a, b = _run(conn), _run(conn)
        for no in range(12):
            if no == 7:
                _refused(conn, a, 7, "uploads/u7", "rejected", "cut short")
            elif no == 9:
                _part(conn, a, no, 0, "unchanged", records=4, unchanged=3, duplicates=1)
            elif no == 5:
                _part(conn, a, no, 0, "loaded", records=2, inserted=2)
                _part(conn, a, no, 1, "loaded", records=3, inserted=1, quarantined=1, conflicts=1)
            else:
                _part(conn, a, no, no // 4, "loaded", records=2, inserted=1 if no == 11 else 2)
        for no in range(3):
            if no == 1:
                _refused(conn, b, 1, "other/v1", "closed", "closed at cutover")
            else:
                _part(conn, b, no, 0, "loaded", records=1, inserted=1)
    return db_url, a, b


def test_totals_and_the_per_file_check_are_summed_in_sql(two_runs: tuple[str, str, str]) -> None:
    url, a, b = two_runs
    with psycopg.connect(url) as conn:
        one = file_results.totals(conn, [a])
        both = file_results.totals(conn, [a, b])
        none = file_results.totals(conn, [])
    assert (one.files, one.refused, one.unchanged_files) == (12, 1, 1)
    assert one.unchanged == {"records_read": 4, "unchanged": 3, "duplicates": 1}
    assert one.problems == ["uploads/u11/tasks.json: 2 records read, 1 accounted for"]
    assert (both.files, both.refused) == (15, 2) and both.problems == one.problems
    assert (none.files, none.refused, none.problems) == (0, 0, [])


@pytest.mark.parametrize("page", [1, 2, 5, 100])
def test_every_row_is_read_page_by_page_in_report_order(two_runs: tuple[str, str, str], page: int) -> None:
    url, a, b = two_runs
    with Session(url) as session:
        rows = [json.loads(text) for text in file_results.every(session, [a, b], page=page)]
        head = session.run("t", file_results.first, [a, b], 6)
    assert [(r["path"].split("/")[1], r["status"]) for r in rows[:2]] == [("u7", "rejected"), ("v1", "closed")]
    assert [r["file_no"] for r in rows[2:]] == [n for n in range(12) if n != 7] + [0, 2]
    assert rows[:6] == head and len(rows) == 15
    spanning = next(r for r in rows if r["path"] == "uploads/u5/tasks.json")  # its two chunks summed
    assert (spanning["records"], spanning["inserted"], spanning["quarantined"], spanning["conflicts"]) == (5, 3, 1, 1)
    assert rows[0]["error"] == "cut short" and set(rows[0]) == set(file_results.FIELDS)


def test_a_run_that_refused_no_file_is_paged_through_once(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        clean, mixed = _run(conn), _run(conn)
        for no in range(5):
            _part(conn, clean, no, 0, "loaded", records=1, inserted=1)
            _part(conn, mixed, no, 0, "loaded", records=1, inserted=1)
        _refused(conn, mixed, 5, "uploads/w5", "rejected", "not JSON")
    pages, page = [], file_results._page

    def counted(conn: psycopg.Connection, run_id: str, refused: bool, *span: int) -> list[str]:
        pages.append((run_id, refused))
        return page(conn, run_id, refused, *span)

    monkeypatch.setattr(file_results, "_page", counted)
    with Session(db_url) as session:
        rows = [json.loads(text) for text in file_results.every(session, [clean, mixed], page=2)]
    assert [r["path"] for r in rows] == ["uploads/w5/tasks.json"] + [f"uploads/u{n}/tasks.json" for n in [*range(5), *range(5)]]
    assert (clean, True) not in pages and pages.count((mixed, True)) == 3  # files 0-5 of the mixed run, two a page


def test_a_report_writes_every_row_it_never_held(two_runs: tuple[str, str, str], tmp_path: Path) -> None:
    url, a, b = two_runs
    with Session(url) as session:
        totals = file_results.totals(session.connection(), [a, b])
        reads = []

        def read():  # counted: the rows are read when the report is written, and only then
            reads.append(1)
            return file_results.every(session, [a, b], page=4)

        files = Rows(totals.files, totals.refused, session.run("t", file_results.first, [a, b], 3), read)
        report = {"run_id": "r", "status": "completed", "files": files, "notes": []}
        kept = brief(report)
        assert not reads and kept["files"] == files.head and "rows_total" not in kept
        write(report, tmp_path)
        assert len(reads) == 1  # once, for report.json: report.md's table is made from the head
    on_disk = json.loads((tmp_path / "r" / "report.json").read_text(encoding="utf-8"))["files"]
    assert len(on_disk) == 15 and on_disk[:3] == files.head
    text = markdown(report)
    assert "## Files (15, 2 refused)" in text and "cut short" in text


def test_a_run_result_keeps_the_head_of_long_rows_and_how_many_there_are() -> None:
    head = [{"path": f"u{i}/tasks.json", "status": "loaded"} for i in range(OUTCOME_ROWS + 10)]
    rows = Rows(100_000, 0, head, lambda: pytest.fail("a run's result never reads every row"))
    kept = brief({"run_id": "r", "files": rows})
    assert kept["files"] == head[:OUTCOME_ROWS] and kept["rows_total"] == {"files": 100_000}


def test_found_files_hash_what_they_hold_and_a_fifo_or_a_folder_hangs_nothing(tmp_path: Path) -> None:
    """The digest a re-sync compares (tasks/files.py found_files): the file's sha256 and size,
    read however large; what is not a readable file gets none, and the pre-check says why."""
    import hashlib
    import os
    import threading

    from tasks.files import found_files
    from tasks.source import DIGEST_READ
    from tasks.sources import FileSource

    big = tmp_path / "big.json"
    big.write_bytes(b"[" + b'{"title": "x"},' * (DIGEST_READ // 8) + b"{}]")
    small = tmp_path / "small.json"
    small.write_text('{"tasks": []}')
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    paths = [big, small, fifo, tmp_path, tmp_path / "gone.json"]
    found: list = []
    worker = threading.Thread(target=lambda: found.extend(found_files([FileSource(str(p), str(p), None) for p in paths])))
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "a FIFO with no writer must not block the run"
    assert [(f.sha256, f.size) for f in found[:2]] == [
        (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size) for p in (big, small)
    ]
    assert [f.sha256 for f in found[3:]] == [None, None]  # a folder, a file that is not there


def test_a_report_whose_rows_cannot_be_read_is_not_written_and_says_so(tmp_path: Path) -> None:
    """The rows are read from the database as report.json is written: a database gone by then
    fails the report as ReportNotWritten (exit 3: the same command writes it), and no report.json
    cut short is left where one is looked for."""
    from flows.outcome import write as write_report
    from tasks.errors import ReportNotWritten
    from tasks.retry import RetriesExhausted

    def rows():
        yield json.dumps({"path": "u1/tasks.json", "status": "loaded"})
        raise RetriesExhausted("report:files still failed after 5 attempts over 60 s (server closed the connection)")

    report = {"run_id": "r", "status": "completed", "files": Rows(2, 0, [], rows), "notes": []}
    with pytest.raises(ReportNotWritten) as failed:
        write_report(report, str(tmp_path))
    assert failed.value.exit_code == 3 and "\n" not in str(failed.value)
    assert "server closed the connection" in str(failed.value) and "same command" in str(failed.value)
    assert not (tmp_path / "r" / "report.json").exists()
