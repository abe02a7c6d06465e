"""Phase 1 files as people wrote them, through the real flow (Prefect engine, real PostgreSQL) and the
command line: `inspect`, not-quite-JSON, salvage, readable quarantine, and, for a spread of the corpus,
the reconciliation identity and a second run that inserts nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import yaml

from flows.phase1 import phase1_migration
from tests.conftest import ROOT, table_checksums

CORPUS = ROOT / "tests" / "corpus"
# One file of each shape and class the corpus covers, each through the database.
THROUGH_THE_DATABASE = [
    "tt-python-isoformat",
    "days-groups",
    "lists-work-home",
    "todo-done-lists",
    "tasks-object-by-id",
    "plain-strings",
    "ids-mixed",
    "ids-duplicates",
    "extras-rich",
    "unicode-titles",
    "quarantine-mix",
    "lists-per-list-ids",
    "go-capitalized",
]


def migrate(env: dict[str, str], **kwargs):
    state = phase1_migration(report_dir=env["report_dir"], checkpoint=False, return_state=True, **kwargs)
    return state, state.result(raise_on_failure=False)


def one(url: str, query: str, *params: object):
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchone()


@pytest.mark.parametrize("name", THROUGH_THE_DATABASE)
def test_corpus_files_reconcile_and_a_second_run_inserts_nothing(flow_env: dict[str, str], name: str) -> None:
    path = CORPUS / f"{name}.json"
    assert path.exists(), f"{name} is missing from the corpus"
    state, first = migrate(flow_env, source=str(path))
    assert state.is_completed(), first
    c = first["counts"]
    assert c["records_read"] == sum(
        c[k] for k in ("inserted", "updated", "unchanged", "conflicts", "duplicates", "quarantined")
    )
    assert first["report_data"]["verification"]["ok"]
    expected = yaml.safe_load((CORPUS / f"{name}.expect.yaml").read_text())
    assert c["inserted"] == len(expected["land"]) and c["quarantined"] == len(expected["quarantine"] or {})
    url = flow_env["db_url"]
    before = table_checksums(url)
    state, second = migrate(flow_env, source=str(path))
    assert state.is_completed(), second
    assert second["counts"]["inserted"] == 0
    assert second["counts"]["unchanged"] == c["inserted"]
    after = table_checksums(url)
    assert (after["tasks"], after["users"]) == (before["tasks"], before["users"])


def test_quarantine_keeps_the_record_readable_and_says_where(
    flow_env: dict[str, str], tmp_path: Path
) -> None:
    record = {"id": "k-1", "title": "Купить молоко и хлеб " * 12, "status": "готово", "note": "한국어 메모"}
    src = tmp_path / "tasks.json"
    src.write_text(json.dumps({"lists": [{"name": "Дом", "tasks": [record]}]}, ensure_ascii=True))
    state, out = migrate(flow_env, source=str(src))
    assert state.is_completed(), out
    raw, reasons, location = one(flow_env["db_url"], "SELECT raw, reasons, location FROM quarantine")
    assert "Купить молоко" in raw and "한국어 메모" in raw and "\\u" not in raw  # text, not escapes
    assert json.loads(raw) == record  # JSON-equivalent to what the file holds
    assert location == "$.lists[0].tasks[0]"
    assert any(r.startswith("title is longer than 200 characters (title: 252 characters)") for r in reasons)
    assert any('(status: "готово")' in r for r in reasons)


def test_comments_and_trailing_commas_are_named_or_accepted_on_request(
    flow_env: dict[str, str], tmp_path: Path
) -> None:
    src = tmp_path / "tasks.json"
    src.write_text(
        '{\n  // written by hand\n  "tasks": [\n    {"id": 1, "title": "a", "done": false},\n  ],\n}\n'
    )
    state, out = migrate(flow_env, source=str(src))
    assert out["exit_code"] == 2 and "line 2, column 3" in out["error"] and "--lenient-json" in out["error"]
    assert one(flow_env["db_url"], "SELECT count(*) FROM migration_runs")[0] == 0  # nothing written
    state, out = migrate(flow_env, source=str(src), lenient_json=True)
    assert state.is_completed(), out
    assert out["counts"]["inserted"] == 1
    assert "3 comments or trailing commas" in out["report_data"]["inference"]["lenient_json"]


def test_a_truncated_file_is_refused_or_salvaged(flow_env: dict[str, str], tmp_path: Path) -> None:
    whole = json.dumps({"tasks": [{"id": i, "title": f"task {i}", "done": False} for i in range(1, 6)]})
    cut = whole[: whole.index('{"id": 4') + 12]
    src = tmp_path / "tasks.json"
    src.write_text(cut)
    state, out = migrate(flow_env, source=str(src))
    assert out["exit_code"] == 2 and "truncated" in out["error"]
    state, out = migrate(flow_env, source=str(src), salvage=True)
    assert state.is_completed(), out
    assert out["counts"] == {
        "records_read": 4,
        "inserted": 3,
        "updated": 0,
        "unchanged": 0,
        "conflicts": 0,
        "duplicates": 0,
        "quarantined": 1,
        "disappeared": 0,
        "deleted": 0,
    }
    at = cut.index('{"id": 4')
    salvaged = out["report_data"]["inference"]["salvaged"]
    assert f"ends at byte {len(cut)}" in salvaged and f"starts at byte {at}" in salvaged
    raw, reasons = one(flow_env["db_url"], "SELECT raw, reasons FROM quarantine")
    assert raw == cut[at:] and reasons[0].startswith("truncated: the file ends inside this record (12 bytes")


def test_strict_behaves_as_before_inference(flow_env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "tasks.json"
    src.write_text(
        json.dumps({"tasks": [{"id": 1, "title": "a", "completed": False}, {"id": "2", "text": "b"}]})
    )
    state, out = migrate(flow_env, source=str(src), strict=True)
    assert state.is_completed(), out
    assert (out["counts"]["inserted"], out["counts"]["quarantined"]) == (1, 1)
    (reasons,) = one(flow_env["db_url"], "SELECT reasons FROM quarantine")
    assert set(reasons) == {
        'id must be an integer (id: "2")',
        "title is missing (the record has no title key)",
        "completed is missing",
    }


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.phase1", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_inspect_explains_a_file_in_a_few_lines_without_a_database(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "DATABASE_URL")}
    env["DATABASE_URL"] = "postgresql://nobody:secret@127.0.0.1:9/none"  # never used
    src = CORPUS / "days-groups.json"
    out = run_cli(["inspect", "--source", str(src)], env)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "found in $.days" in text and "created_at <- " in text and "would insert" in text
    assert len(text.splitlines()) < 25
    assert "temporary server" not in out.stderr.lower()  # no Prefect server, no database
    data = json.loads(run_cli(["inspect", "--source", str(src), "--json"], env).stdout)
    assert data["records_in"] == {"$.days": data["counts"]["records_read"]}
    assert data["rules"] and data["counts"]["records_read"] > 0
    bad = tmp_path / "bad.json"
    bad.write_text('[{"id": 1,}]')
    refused = run_cli(["inspect", "--source", str(bad)], env)
    assert refused.returncode == 2 and "trailing comma" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
