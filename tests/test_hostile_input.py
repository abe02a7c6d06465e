"""Hostile and pathological Phase 1 files: each is refused with one line naming the file and the
position (exit 2), or its record is quarantined with a reason; never a traceback, never an
exception's name, never unbounded memory (a value may be at most tasks.source.MAX_ELEMENT
characters; a --lenient-json line likewise)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.phase1 import dry_load, prepare
from tasks.errors import UserFacingError
from tasks.source import SourceError, iter_batches, precheck
from tests.conftest import ROOT


def outcome(path: Path) -> tuple[int, list[list[str]]]:
    """(records landed, quarantine reasons) of the pure pipeline; raises the one-line error."""
    summary = dry_load(prepare(str(path)), "00000000-0000-4000-8000-000000000000")
    return summary.inserted, [q.reasons for q in summary.sample]


def refused(path: Path) -> str:
    with pytest.raises(UserFacingError) as err:
        outcome(path)
    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message, message
    assert "Error" not in message.split(":", 1)[1], message  # no exception names
    return message


def test_a_value_nested_too_deeply_is_refused_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text(
        '{"tasks": [{"id": 1, "title": "a"},\n {"id": 2, "title": "b", "x": '
        + "[" * 50_000
        + "]" * 50_000
        + "}]}"
    )
    assert "nests too deeply to be a task record (line 2" in refused(path)


PATHOLOGICAL = {
    "huge float": (
        '{"id": 1, "title": "a", "created_at": 1e400}',
        "created_at is a number that is not a plausible Unix time",
    ),
    "400 digits": ('{"id": ' + "9" * 400 + ', "title": "a"}', "id is longer than 200 characters"),
    "10 MB string": (
        '{"id": 1, "title": "' + "x" * (10 << 20) + '"}',
        "title is longer than 200 characters (title: 10,485,760 characters)",
    ),
    "key twice": ('{"id": 1, "title": "a", "id": 2}', "the record names 'id' twice"),
    "nested key twice": ('{"id": 1, "title": "a", "meta": {"x": 1, "x": 2}}', "the record names 'x' twice"),
    "surrogate key": (
        '{"\\ud800": 1, "id": 1, "title": "a"}',
        "a field kept for legacy_extra contains an unpaired surrogate",
    ),
}


@pytest.mark.parametrize("case", sorted(PATHOLOGICAL))
def test_a_pathological_record_is_quarantined_with_a_reason(tmp_path: Path, case: str) -> None:
    record, reason = PATHOLOGICAL[case]
    path = tmp_path / "tasks.json"
    path.write_text('{"tasks": [' + record + ', {"id": 7, "title": "fine"}]}')
    landed, reasons = outcome(path)
    assert landed == 1 and any(r.startswith(reason) for r in reasons[0]), (case, reasons)


def test_a_record_naming_a_key_twice_keeps_both_values_in_quarantine(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    path.write_text('[{"id": 1, "title": "Купить", "done": false, "done": true}]')
    summary = dry_load(prepare(str(path)), "00000000-0000-4000-8000-000000000000")
    assert summary.sample[0].raw == '{"id":1,"title":"Купить","done":false,"done":true}'


def test_an_integer_too_long_to_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    path.write_text('[{"id": ' + "1" * 5000 + ', "title": "a"}]')
    assert "line 1, column" in refused(path)


def test_a_symlink_to_a_device_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "tasks.json"
    link.symlink_to("/dev/zero")
    assert "not a regular file" in refused(link)


def test_a_file_written_to_after_its_check_is_refused_not_mixed(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps([{"id": i, "title": f"t{i}"} for i in range(100)]))
    info = precheck(path)
    with path.open("a") as f:  # the Phase 1 CLI (or anything) still writing
        f.write("\n")
    os.utime(path, ns=(info.mtime_ns + 1, info.mtime_ns + 1))
    with pytest.raises(SourceError, match="changed since it was checked"):
        list(iter_batches(info, prepare(str(path), chunk_size=10).mapping))


def test_a_file_that_grows_while_it_is_checked_is_read_as_it_was_then_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.source as source

    path = tmp_path / "tasks.json"
    path.write_text(json.dumps([{"id": i, "title": f"t{i}"} for i in range(2000)]))
    monkeypatch.setattr(source, "BLOCK", 4096)
    grow = source._Limited.read

    def read_and_grow(self, n: int = -1) -> bytes:
        with path.open("a") as f:
            f.write(" " * 4096)  # it never stops growing: only the size it had is read
        return grow(self, n)

    monkeypatch.setattr(source._Limited, "read", read_and_grow)
    with pytest.raises(SourceError, match="changed while being checked"):
        precheck(path)


def test_a_huge_single_line_file_streams_in_bounded_memory(tmp_path: Path) -> None:
    """200 MB on one line, through the pre-check and the whole dry pipeline, in a process whose
    peak RSS is measured: it stays bounded by the chunk, not the file."""
    path = tmp_path / "one-line.json"
    record = (
        '{"id": %d, "title": "a task on a very long line", "completed": false, "notes": "' + "n" * 150 + '"}'
    )
    with path.open("w") as f:
        f.write("[")
        f.write(",".join(record % i for i in range(1, 900_001)))
        f.write("]")
    assert path.stat().st_size > 200e6
    code = (  # VmHWM: this process's own peak (ru_maxrss would carry the parent's over exec)
        "import re, sys; from flows.phase1 import prepare, dry_load; "
        "s = dry_load(prepare(sys.argv[1]), '00000000-0000-4000-8000-000000000000'); "
        "print(s.inserted, re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    inserted, peak_kib = map(int, out.stdout.split())
    assert inserted == 900_000 and peak_kib < 300 * 1024, peak_kib


def test_a_lenient_line_longer_than_the_cap_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tasks.source as source

    monkeypatch.setattr(source, "MAX_ELEMENT", 1 << 16)
    path = tmp_path / "tasks.json"
    path.write_text("[" + ",".join(f'{{"id": {i}, "title": "t"}}' for i in range(1, 10_000)) + "]")
    with pytest.raises(SourceError, match="a line here is longer than"):
        precheck(path, options=source.ReadOptions(lenient=True))
