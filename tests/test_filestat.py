"""The re-sync's quick check: what a file's stat may vouch for (tasks/filestat.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tasks.filestat import SETTLED_NS, read_key, settled, stat_key


def later(st: os.stat_result) -> int:
    """A moment at which the stat's last change is settled."""
    return st.st_ctime_ns + SETTLED_NS + 1


def test_a_stat_vouches_only_once_its_last_change_has_settled(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    path.write_text('[{"id": 1, "title": "Buy milk"}]')
    st = os.stat(path)
    assert not settled(st, time.time_ns())  # written a moment ago: a write in the same tick would not show
    assert settled(st, later(st))
    assert not settled(os.stat(tmp_path), later(st))  # a directory is no file's stat
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert not settled(os.stat(fifo), later(os.stat(fifo)))


def test_an_edit_that_keeps_size_and_mtime_still_changes_the_key(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    path.write_text('[{"id": 1, "title": "Buy milk"}]')
    before = os.stat(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns - 5 * SETTLED_NS))  # an old file
    old = os.stat(path)
    path.write_text('[{"id": 1, "title": "Buy eggs"}]')  # the same length
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))  # and its mtime put back (touch -r)
    now = os.stat(path)
    assert (now.st_size, now.st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    assert stat_key(now) != stat_key(old)  # the ctime moved with every change


def test_a_read_is_vouched_for_only_if_the_file_held_still(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    path.write_text('[{"id": 1, "title": "Buy milk"}]')
    st = os.stat(path)
    assert read_key(st, later(st), st, st.st_size) == stat_key(st)
    assert read_key(st, time.time_ns(), st, st.st_size) is None  # not settled when read
    assert read_key(st, later(st), st, st.st_size - 1) is None  # grew after the size was taken
    with path.open("a") as f:
        f.write(" ")
    assert read_key(st, later(st), os.stat(path), st.st_size) is None  # written to while read


def test_a_run_hashes_only_the_files_its_stat_cannot_vouch_for_and_cutover_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks import filestat
    from tasks.files import found_files
    from tasks.sources import resolve

    old = tmp_path / "ann@example.com" / "tasks.json"
    old.parent.mkdir()
    old.write_text('[{"id": 1, "title": "Buy milk"}]')
    monkeypatch.setattr(filestat, "SETTLED_NS", 50_000_000)
    time.sleep(0.1)
    new = tmp_path / "bob@example.com" / "tasks.json"
    new.parent.mkdir()
    new.write_text('[{"id": 1, "title": "Fix bike"}]')  # just now: its stat cannot vouch for it yet
    sources = resolve(str(tmp_path))
    found = {f.source.path: f for f in found_files(sources)}
    assert (found[str(old)].settled, found[str(old)].sha256) == (True, None)
    assert not found[str(new)].settled and found[str(new)].sha256 is not None
    assert all(f.sha256 is not None and not f.settled for f in found_files(sources, hashed=True))
    # what a resumed run matches: the same whether a file was hashed or not
    assert [f.stat for f in found_files(sources)] == [f.stat for f in found_files(sources, hashed=True)]


def test_any_time_a_file_system_holds_gives_a_key(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    path.write_text("[]")
    keys = set()
    for seconds in (-86_400 * 365 * 100, 0, 2**33):  # 1870, 1970 and the year 2242
        os.utime(path, ns=(seconds * 10**9, seconds * 10**9))
        keys.add(stat_key(os.stat(path)))
    os.utime(path, ns=(0, 2**63 + 5))  # past what a signed 64-bit nanosecond count holds (2262)
    keys.add(stat_key(os.stat(path)))
    assert len(keys) == 4
