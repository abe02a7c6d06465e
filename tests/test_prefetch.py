"""A run of many files has them pre-checked by a helper process (tasks/prefetch.py). The load must
get exactly what checking each file itself gives -- records, positions, repeated keys, refusals and
their reasons, files read again -- and go on by itself when the helper cannot start or stops."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from flows.phase1 import dry_load, phase1_migration, prepare
from tasks import files as files_module
from tasks import prefetch, source
from tasks.files import FileStream


def fleet(base: Path, n: int = 240) -> Path:
    """n users' files as Phase 1 CLIs wrote them, with the cases a pre-check refuses or marks."""
    for i in range(n):
        folder = base / f"u{i:04d}"
        folder.mkdir(parents=True)
        path = folder / "tasks.json"
        records = [{"id": j, "title": f"u{i} t{j}", "completed": j % 3 == 0} for j in range(1, 2 + i % 9)]
        if i % 50 == 7:
            path.write_text('{"tasks": [{"id": 1, "title": "a"},', encoding="utf-8")  # cut short: refused
        elif i % 50 == 11:
            path.write_text("", encoding="utf-8")  # empty: refused
        elif i % 50 == 13:  # a key named twice: its record is marked (quarantined by the load)
            path.write_text('[{"id": 1, "title": "a", "title": "b"}, {"id": 2, "title": "c"}]', encoding="utf-8")
        elif i % 50 == 17:  # a BOM, and a list beside the tasks that the load leaves out
            text = json.dumps({"tasks": records, "users": [{"name": "x"}]}, ensure_ascii=False)
            path.write_bytes(b"\xef\xbb\xbf" + text.encode())
        elif i % 50 == 23:
            path.write_bytes(b'[{"id": 1, "title": "caf\xe9"}]')  # Latin-1, not UTF-8: refused
        else:
            path.write_text(json.dumps({"tasks": records, "next_id": len(records) + 1}), encoding="utf-8")
    return base


def stream(base: Path, monkeypatch: pytest.MonkeyPatch, helper: bool, **options: Any) -> tuple[list[Any], list[Any]]:
    """(every batch as the load takes it, every file as the stream leaves it)."""
    monkeypatch.setattr(files_module, "PREFETCH_FROM", 1 if helper else 10**9)
    job = prepare(str(base), **options)
    s = FileStream(job.files, job.mapping, job.options)
    batches = [(b.file, b.group, b.start, b.records, b.keys, b.repeated) for b in s.batches()]
    return batches, [(f.no, f.error, f.sha256, f.size, f.records, f.salvaged) for f in s.files]


@pytest.mark.parametrize("options", [{}, {"salvage": True}, {"field_map": ["name=title"]}])
def test_the_helper_gives_what_checking_each_file_here_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: dict[str, Any]
) -> None:
    base = fleet(tmp_path / "users")
    monkeypatch.setattr(source, "KEEP_BYTES", 300)  # some files are read again by the load, as large ones are
    here = stream(base, monkeypatch, helper=False, **options)
    groups: list[int] = []
    receive = prefetch._receive
    monkeypatch.setattr(prefetch, "_receive", lambda inp: groups.append(1) or receive(inp))
    assert stream(base, monkeypatch, helper=True, **options) == here
    assert len(groups) >= 2, "the helper's results must have been used"
    refused = [f for f in here[1] if f[1]]
    assert len(refused) == (10 if options.get("salvage") else 15)  # the cut files load their part with --salvage


def test_a_dry_run_through_the_helper_counts_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = fleet(tmp_path / "users")
    counts = []
    for threshold in (10**9, 1):
        monkeypatch.setattr(files_module, "PREFETCH_FROM", threshold)
        s = dry_load(prepare(str(base)), "00000000-0000-4000-8000-000000000000")
        counts.append((s.inserted, s.quarantined, s.duplicates, sorted(s.reasons.items())))
    assert counts[0] == counts[1]


def test_a_helper_that_cannot_start_leaves_the_checks_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    base = fleet(tmp_path / "users", 60)
    here = stream(base, monkeypatch, helper=False)

    def refuse(*_a: Any, **_k: Any) -> None:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(prefetch.subprocess, "Popen", refuse)
    with caplog.at_level(logging.WARNING, logger="tasks.prefetch"):
        assert stream(base, monkeypatch, helper=True) == here
    assert "could not start" in caplog.text


def test_a_helper_that_dies_part_way_leaves_the_rest_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed after its first group of results: the load checks the files from there itself."""
    base = fleet(tmp_path / "users")
    here = stream(base, monkeypatch, helper=False)
    started: list[subprocess.Popen[bytes]] = []
    popen = subprocess.Popen

    def spawn(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        started.append(popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(prefetch.subprocess, "Popen", spawn)
    receive = prefetch._receive

    def receive_then_kill(inp: Any) -> Any:
        group = receive(inp)
        started[-1].kill()
        return group

    monkeypatch.setattr(prefetch, "_receive", receive_then_kill)
    monkeypatch.setattr(prefetch, "GROUP_FILES", 16)
    with caplog.at_level(logging.WARNING, logger="tasks.prefetch"):
        assert stream(base, monkeypatch, helper=True) == here
    assert "the pre-check helper stopped" in caplog.text
    assert started and started[-1].poll() is not None


def test_a_stream_left_part_way_stops_its_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = fleet(tmp_path / "users")
    monkeypatch.setattr(files_module, "PREFETCH_FROM", 1)
    started: list[subprocess.Popen[bytes]] = []
    popen = subprocess.Popen
    monkeypatch.setattr(prefetch.subprocess, "Popen", lambda *a, **k: started.append(popen(*a, **k)) or started[-1])
    job = prepare(str(base))
    batches = FileStream(job.files, job.mapping, job.options).batches()
    next(batches)
    batches.close()  # an interrupted load: the generator is closed
    assert started[0].poll() is not None, "the helper must not outlive the stream"


def test_a_flow_run_of_many_files_through_the_helper_verifies(
    flow_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the Prefect engine into real PostgreSQL: what the run writes is what a dry run
    checking each file here counts, and it verifies."""
    base = fleet(tmp_path / "users")
    monkeypatch.setattr(files_module, "PREFETCH_FROM", 10**9)
    dry = dry_load(prepare(str(base), chunk_size=50), "00000000-0000-4000-8000-000000000000")
    monkeypatch.setattr(files_module, "PREFETCH_FROM", 1)
    state = phase1_migration(
        source=str(base), report_dir=flow_env["report_dir"], checkpoint=False, chunk_size=50, return_state=True
    )
    outcome = state.result(raise_on_failure=False)
    assert outcome["exit_code"] == 4, outcome  # done and verified, some files refused
    report = json.loads(Path(outcome["report"]).with_suffix(".json").read_text(encoding="utf-8"))
    assert report["verification"]["ok"]
    c = report["counts"]
    assert (c["inserted"], c["quarantined"], c["duplicates"]) == (dry.inserted, dry.quarantined, dry.duplicates)
    assert report["source"]["refused"] == sum(1 for f in dry.files if f.refused) == 15
    with psycopg.connect(flow_env["db_url"]) as conn:
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == dry.inserted
