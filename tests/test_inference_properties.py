"""Properties of the inference, on many generated Phase 1 files (seeded, so a failure names its seed):
whatever shape, aliases and values a file mixes, every record is accounted for exactly once, no two
landed records share a key, and reading the same file twice gives the same rows."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from flows.phase1 import prepare
from tasks.load import prepared_chunks

TITLES = ["Buy milk", "Call mom", "Купить хлеб", "우유 사기", "Fix the bike 🚲", "", "x" * 250, "Pay rent"]
COMPLETION = [
    ("completed", [True, False]),
    ("done", [True, False, "yes", "no", 1, 0, None]),
    ("isCompleted", [True, False]),
    ("status", ["todo", "in-progress", "done", "DONE", "cancelled", "Pending"]),
    ("checked", [True, False, "maybe"]),
]
TIMES = [
    ("created_at", ["2024-03-05T10:00:00Z", "2024-03-05 10:00:00", "2024-03-05", "last tuesday"]),
    (
        "createdAt",
        [1709632800123, "2024-03-05T10:00:00.123+01:00", "Tue Mar 05 2024 10:00:00 GMT+0100 (CET)"],
    ),
    ("date", ["05/03/2024", "25/03/2024", "03/25/2024", None, "0001-01-01T00:00:00Z"]),
    ("timestamp", [1709632800, 1709632800.5, 12, "1709632800"]),
]
IDS = [lambda i: i, lambda i: str(i), lambda i: f"3f2a{i:04x}-aaaa-4bbb-8ccc-000000000000", lambda i: None]
TITLE_KEYS = ["title", "text", "task", "name", "description", "Title"]


def record(rnd: random.Random, i: int) -> Any:
    roll = rnd.random()
    if roll < 0.04:
        return rnd.choice(["plain string task", 42, None, [1, 2]])
    rec: dict[str, Any] = {}
    ident = rnd.choice(IDS)(rnd.randint(1, 40) if rnd.random() < 0.2 else i)
    if ident is not None:
        rec[rnd.choice(["id", "ID", "task_id", "_id"])] = ident
    rec[rnd.choice(TITLE_KEYS)] = rnd.choice(TITLES)
    if rnd.random() < 0.9:
        key, values = rnd.choice(COMPLETION)
        rec[key] = rnd.choice(values)
    if rnd.random() < 0.7:
        key, values = rnd.choice(TIMES)
        rec[key] = rnd.choice(values)
    if rnd.random() < 0.3:
        rec["priority"] = rnd.choice(["high", "Low", 2, "urgent"])
    if rnd.random() < 0.3:
        rec["tags"] = rnd.choice([["a", "b c"], "work,home", [1], []])
    if rnd.random() < 0.2:
        rec["subtasks"] = [{"title": "sub", "done": False}]
    return rec


def document(rnd: random.Random) -> Any:
    records = [record(rnd, i) for i in range(1, rnd.randint(0, 40))]
    if rnd.random() < 0.1 and records:
        records.append(json.loads(json.dumps(records[0])))  # an exact copy
    shape = rnd.choice(["bare", "tasks", "keyed", "days", "lists", "status-lists", "nested"])
    if shape == "bare":
        return records
    if shape == "tasks":
        return {"tasks": records, "next_id": len(records) + 1, "version": 2}
    if shape == "keyed":
        return {f"task{i}": r for i, r in enumerate(records) if isinstance(r, dict)}
    half = len(records) // 2
    if shape == "days":
        return {
            "days": [
                {"date": "2024-03-05", "tasks": records[:half]},
                {"date": "2024-03-06", "tasks": records[half:]},
            ]
        }
    if shape == "lists":
        return {"work": records[:half], "home": records[half:], "settings": {"theme": "dark"}}
    if shape == "status-lists":
        return {"todo": records[:half], "done": records[half:]}
    return {"data": {"tasks": records}}


def outcome(path: Path) -> tuple[int, list[tuple[int, str]], set[int], int]:
    job = prepare(str(path))
    landed: list[tuple[int, str]] = []
    quarantined: set[int] = set()
    duplicates = 0
    for chunk in prepared_chunks(job.info, job.context(datetime(2026, 1, 1, tzinfo=UTC)), 7):
        landed += list(zip(chunk.rows.positions, chunk.rows.legacy_keys, strict=True))
        assert not quarantined & {q.position for q in chunk.quarantine}
        quarantined |= {q.position for q in chunk.quarantine}
        duplicates += chunk.duplicates
    return job.info.records, landed, quarantined, duplicates


@pytest.mark.parametrize("seed", range(60))
def test_every_record_is_accounted_for_once_and_never_merged(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(document(rnd), ensure_ascii=rnd.random() < 0.5))
    records, landed, quarantined, duplicates = outcome(path)
    positions = [p for p, _ in landed]
    assert len(positions) == len(set(positions))
    assert not set(positions) & quarantined
    assert records == len(landed) + len(quarantined) + duplicates, f"seed {seed}"
    keys = [k for _, k in landed]
    assert len(keys) == len(set(keys)), f"seed {seed}: two landed records share a key"
    assert outcome(path) == (records, landed, quarantined, duplicates)  # the same file, the same rows
