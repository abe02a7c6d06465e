"""The whole Phase 1 user base: many users' files in one run, re-syncs until cutover, through the
Prefect engine and real PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from flows.phase1 import phase1_migration, phase1_rollback, prepare
from tasks import files as files_module
from tasks import filestat
from tasks.checksum import row_checksum_sql
from tasks.files import found_files
from tasks.resync import unchanged_files
from tasks.runs import start_or_resume
from tasks.source import checked_batches, file_sha256
from tests.conftest import ROOT, table_checksums


def migrate(env: dict[str, str], **kwargs):
    kwargs.setdefault("checkpoint", False)
    state = phase1_migration(report_dir=env["report_dir"], return_state=True, **kwargs)
    return state, state.result(raise_on_failure=False)


def rows(url: str, query: str, *params: object) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def write(path: Path, document: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def uploads(base: Path) -> dict[str, Path]:
    """Three users' files, as three Phase 1 CLIs of different versions wrote them."""
    return {
        "ann@example.com": write(
            base / "ann@example.com" / "tasks.json",
            {
                "tasks": [
                    {"id": 1, "title": "Buy milk", "completed": False},
                    {"id": 2, "title": "Call mom", "completed": True},
                ]
            },
        ),
        "bob@example.com": write(
            base / "bob@example.com" / "tasks.json",
            [
                {"id": 1, "text": "Fix bike", "done": True},
                {"id": 2, "text": "Read book", "done": False},
                "Water plants",
            ],
        ),
        "cy@example.com": write(
            base / "cy@example.com" / "tasks.json",
            {"todos": [{"id": "a1", "task": "Pay rent", "status": "todo"}]},
        ),
    }


def test_many_files_go_to_their_owners_and_a_bad_one_stops_nothing(
    flow_env: dict[str, str], tmp_path: Path
) -> None:
    base = tmp_path / "uploads"
    files = uploads(base)
    (base / "dee@example.com").mkdir()
    (base / "dee@example.com" / "tasks.json").write_text('{"tasks": [{"id": 1, "title": "half')  # cut short
    state, out = migrate(
        flow_env, source=str(base / "**" / "tasks.json"), owner_from_path=f"{base}/{{email}}/tasks.json"
    )
    assert out["exit_code"] == 4, out  # done and verified, but a file was refused
    report = out["report_data"]
    assert report["verification"]["ok"], report["verification"]
    assert out["counts"]["records_read"] == 6 and out["counts"]["inserted"] == 6
    by_path = {f["path"]: f for f in report["files"]}
    assert report["files"][0]["status"] == "rejected" and "truncated" in report["files"][0]["error"]
    assert by_path[str(files["bob@example.com"])]["inserted"] == 3
    url = flow_env["db_url"]
    owners = dict(
        rows(
            url,
            "SELECT t.legacy_source || '/' || t.legacy_key, u.email FROM tasks t JOIN users u ON u.id = t.user_id",
        )
    )
    assert owners["phase1:ann@example.com/tasks.json/1"] == "ann@example.com"
    assert (
        owners["phase1:bob@example.com/tasks.json/1"] == "bob@example.com"
    )  # ann's 1 and bob's 1: two tasks
    assert owners["phase1:cy@example.com/tasks.json/a1"] == "cy@example.com"
    assert not rows(url, "SELECT 1 FROM tasks WHERE legacy_source LIKE '%%dee@%%'")  # nothing of the bad file
    assert rows(url, "SELECT count(*) FROM migration_files WHERE part = -1")[0][0] == 1
    before = table_checksums(url)
    state, again = migrate(
        flow_env, source=str(base / "**" / "tasks.json"), owner_from_path=f"{base}/{{email}}/tasks.json"
    )
    assert again["counts"]["inserted"] == 0 and again["counts"]["unchanged"] == 6
    assert table_checksums(url)["tasks"] == before["tasks"]


def test_a_dry_run_names_the_files_a_run_would_refuse_and_the_reports_say_whose_and_why(
    flow_env: dict[str, str], tmp_path: Path
) -> None:
    from flows.commands.phase1 import summary

    base = tmp_path / "uploads"
    uploads(base)
    write(base / "no owner" / "tasks.json", [{"id": 1, "title": "t"}])
    (base / "dee@example.com").mkdir()
    (base / "dee@example.com" / "tasks.json").write_text("")
    args = {"source": str(base / "*" / "tasks.json"), "owner_from_path": f"{base}/{{email}}/tasks.json"}
    _, dry = migrate(flow_env, dry_run=True, **args)
    assert dry["exit_code"] == 4, dry
    why = {f["path"].split("/")[-2]: (f["status"], f["error"]) for f in dry["report_data"]["files"]}
    assert set(why) == {"no owner", "dee@example.com"} and {s for s, _ in why.values()} == {"rejected"}
    assert why["dee@example.com"][1].endswith("file is empty")
    assert "refused: " in summary(dry) and "file is empty" in summary(dry)
    migrate(flow_env, **args)
    _, again = migrate(flow_env, **args)
    assert "how the file was read: no file read: each was refused or is as its last sync read it" in summary(again)
    md = (Path(again["report"]).parent / "report.md").read_text()
    rejected = next(line for line in md.splitlines() if "no owner" in line and "| rejected |" in line)
    assert "is not an email address" in rejected and "(default user)" in rejected


def test_a_manifest_names_files_and_owners(flow_env: dict[str, str], tmp_path: Path) -> None:
    files = uploads(tmp_path / "up")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "path,email\n" + "".join(f"{p.relative_to(tmp_path)},{email.upper()}\n" for email, p in files.items())
    )
    state, out = migrate(flow_env, manifest=str(manifest))
    assert state.is_completed(), out
    assert {
        e
        for (e,) in rows(
            flow_env["db_url"], "SELECT DISTINCT u.email FROM tasks t JOIN users u ON u.id = t.user_id"
        )
    } == set(files)
    _, same = migrate(flow_env, manifest=str(manifest))
    assert {f["status"] for f in same["report_data"]["files"]} == {"unchanged"}
    # another owner for the same file: its rows are bob's, and never move to another account
    moved = files["bob@example.com"].relative_to(tmp_path)
    manifest.write_text(manifest.read_text().replace(f"{moved},BOB@EXAMPLE.COM", f"{moved},robert@example.com"))
    before = table_checksums(flow_env["db_url"])
    _, other = migrate(flow_env, manifest=str(manifest))
    assert other["exit_code"] == 4, other
    status = {f["path"]: (f["status"], f.get("error")) for f in other["report_data"]["files"]}
    assert sorted(s for s, _ in status.values()) == ["rejected", "unchanged", "unchanged"], status
    assert "was last synced for bob@example.com" in status[str(tmp_path / moved)][1]
    assert other["report_data"]["verification"]["ok"]
    assert table_checksums(flow_env["db_url"])["tasks"] == before["tasks"]


def test_one_users_file_alone_then_the_tree_inserts_each_task_once_for_its_owner(
    flow_env: dict[str, str], tmp_path: Path
) -> None:
    """A pilot on one user's file, another's, then the whole user base: each file keeps its own
    rows under its owner (two users' task 1 are two tasks), and a file that names no owner is
    refused alone."""
    base = tmp_path / "uploads"
    files = uploads(base)
    write(base / "carol smith@example.com" / "tasks.json", [{"id": 1, "title": "no owner"}])
    pattern = f"{base}/{{email}}/tasks.json"
    for email, expected in (("ann@example.com", 2), ("bob@example.com", 3)):
        state, out = migrate(flow_env, source=str(files[email]), owner_from_path=pattern)
        assert state.is_completed(), out
        assert out["counts"]["inserted"] == expected, out["counts"]
    state, out = migrate(flow_env, source=str(base), owner_from_path=pattern)
    assert out["exit_code"] == 4, out
    c = out["report_data"]["counts"]
    assert (c["inserted"], c["unchanged"]) == (1, 5), c
    refused = [f for f in out["report_data"]["files"] if f["status"] == "rejected"]
    assert len(refused) == 1 and "is not an email address" in refused[0]["error"]
    owners = rows(flow_env["db_url"], "SELECT u.email, count(*) FROM tasks t JOIN users u ON u.id = t.user_id GROUP BY 1")
    assert dict(owners) == {"ann@example.com": 2, "bob@example.com": 3, "cy@example.com": 1}


def test_a_file_an_earlier_sync_read_under_another_name_is_refused_not_loaded_twice(
    flow_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pilot of one file without --owner-from-path (the run's source name alone), then the tree:
    the pilot's file would be a second source of the same tasks, however each run spelled its path."""
    base = tmp_path / "uploads"
    uploads(base)
    monkeypatch.chdir(tmp_path)
    migrate(flow_env, source="./uploads/ann@example.com/tasks.json")
    _, out = migrate(flow_env, source=str(base), owner_from_path=f"{base}/{{email}}/tasks.json")
    assert out["exit_code"] == 4, out
    refused = [f["error"] for f in out["report_data"]["files"] if f["status"] == "rejected"]
    assert len(refused) == 1 and "is a file an earlier sync read as source phase1" in refused[0], refused
    assert rows(flow_env["db_url"], "SELECT count(*) FROM tasks WHERE legacy_key = '1'") == [(2,)]  # ann's, bob's
    # as the refusal says: the pilot rolled back, its file is free
    pilot = rows(flow_env["db_url"], "SELECT last_run_id::text FROM migration_sources WHERE legacy_source = 'phase1'")
    assert phase1_rollback(run_id=pilot[0][0], report_dir=flow_env["report_dir"], return_state=True).is_completed()
    _, out = migrate(flow_env, source=str(base), owner_from_path=f"{base}/{{email}}/tasks.json")
    assert out["exit_code"] == 0 and out["counts"]["inserted"] == 2, out


def test_another_users_file_under_the_run_source_name_alone_is_refused(flow_env: dict[str, str], tmp_path: Path) -> None:
    """Two single files without --owner-from-path share the run's source name: the second one,
    given to another default user, would write its records over the first one's tasks."""
    ann = write(tmp_path / "ann" / "tasks.json", [{"id": 1, "title": "ann's"}, {"id": 2, "title": "ann's too"}])
    bob = write(tmp_path / "bob" / "tasks.json", [{"id": 1, "title": "bob's"}])
    state, _ = migrate(flow_env, source=str(ann), default_user_email="ann@example.com")
    assert state.is_completed()
    _, out = migrate(flow_env, source=str(bob), default_user_email="Bob@example.com")
    assert out["exit_code"] == 2 and "source phase1 was last synced for ann@example.com" in out["error"], out
    _, out = migrate(flow_env, source=str(bob), default_user_email="ann@example.com")  # the same default user
    assert out["exit_code"] == 2 and f"source phase1 was last synced from {ann}: another file" in out["error"], out
    assert rows(flow_env["db_url"], "SELECT title FROM tasks ORDER BY 1") == [("ann's",), ("ann's too",)]
    state, again = migrate(flow_env, source=str(ann), default_user_email="ANN@example.com")  # the same owner
    assert state.is_completed() and again["counts"]["unchanged"] == 2, again


def test_a_record_that_names_another_owner_moves_its_row_unless_phase2_changed_it(
    flow_env: dict[str, str], tmp_path: Path
) -> None:
    """The owner a record names is its content like its title: its row moves (once: the next
    re-sync finds it unchanged), is a conflict where the application changed the row, and a
    rollback puts it back."""
    url = flow_env["db_url"]
    records = [{"id": i, "title": f"task {i}", "owner": "ann@example.com", "created_at": "2024-03-05T10:00:00Z"}
               for i in (1, 2, 3)]  # fmt: skip
    src = write(tmp_path / "tasks.json", records)
    migrate(flow_env, source=str(src))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE tasks SET title = 'edited in Phase 2', updated_at = now() WHERE legacy_key = '3'")
    for r in records[1:]:
        r["owner"] = "zed@example.com"
    write(src, records)
    state, out = migrate(flow_env, source=str(src))
    c = out["counts"]
    assert (c["updated"], c["unchanged"], c["conflicts"]) == (1, 1, 1), c
    owner = "SELECT t.legacy_key, u.email FROM tasks t JOIN users u ON u.id = t.user_id ORDER BY 1"
    assert rows(url, owner) == [("1", "ann@example.com"), ("2", "zed@example.com"), ("3", "ann@example.com")]
    _, again = migrate(flow_env, source=str(src))
    c = again["counts"]
    assert (c["updated"], c["unchanged"], c["conflicts"]) == (0, 2, 1), c  # the conflict stands until resolved
    records[1]["title"] = "task 2, edited again"  # a later re-sync updates the moved row again
    write(src, records)
    _, later = migrate(flow_env, source=str(src))
    assert later["counts"]["updated"] == 1, later["counts"]
    refused = phase1_rollback(run_id=out["run_id"], report_dir=flow_env["report_dir"], force=True, return_state=True)
    error = refused.result(raise_on_failure=False)["error"]
    assert f"later run {later['run_id']} changed again rows run {out['run_id']} updated or deleted" in error
    for run in (later, out):  # the later one first, then this one: each puts back what it found
        rolled = phase1_rollback(run_id=run["run_id"], report_dir=flow_env["report_dir"], force=True, return_state=True)
        assert rolled.is_completed(), rolled.result(raise_on_failure=False)
    assert rows(url, owner) == [("1", "ann@example.com"), ("2", "ann@example.com"), ("3", "ann@example.com")]
    assert rows(url, "SELECT title FROM tasks WHERE legacy_key = '2'") == [("task 2",)]
    from flows.commands.phase1 import summary

    assert "; 1 of its updates and deletes undone" in summary(rolled.result())
    assert "checksums of the 0 rows inserted match" in summary(out)


def test_resync_updates_what_only_the_file_changed_and_phase2_wins_conflicts(
    flow_env: dict[str, str], tmp_path: Path
) -> None:
    url = flow_env["db_url"]
    src = write(
        tmp_path / "tasks.json",
        {
            "tasks": [
                {"id": i, "title": f"task {i}", "completed": False, "created_at": "2024-03-05T10:00:00Z"}
                for i in range(1, 7)
            ]
        },
    )
    _, first = migrate(flow_env, source=str(src))
    assert first["counts"]["inserted"] == 6
    with psycopg.connect(url, autocommit=True) as conn:  # the application edits two rows
        conn.execute(
            "UPDATE tasks SET title = 'edited in Phase 2', updated_at = now() WHERE legacy_key IN ('2', '3')"
        )
    records = json.loads(src.read_text())["tasks"]
    records[0]["title"] = "task 1, edited in the CLI"  # file only: updated
    records[1]["completed"] = True  # both: a conflict, Phase 2 wins
    # 3: only Phase 2 changed it: unchanged; 4: as it was; 5: removed from the file; 6: as it was
    del records[4]
    records.append({"id": 7, "title": "task 7, new", "completed": False})
    write(src, {"tasks": records})
    state, out = migrate(flow_env, source=str(src))
    assert state.is_completed(), out
    c = out["counts"]
    assert (c["inserted"], c["updated"], c["unchanged"], c["conflicts"], c["disappeared"], c["deleted"]) == (
        1,
        1,
        3,
        1,
        1,
        0,
    )
    assert out["report_data"]["verification"]["ok"]
    titles = dict(rows(url, "SELECT legacy_key, title FROM tasks"))
    assert titles["1"] == "task 1, edited in the CLI" and titles["2"] == "edited in Phase 2"
    assert titles["3"] == "edited in Phase 2" and "5" in titles and titles["7"] == "task 7, new"
    reason, location = rows(url, "SELECT reasons[1], location FROM quarantine WHERE run_id = %s", out["run_id"])[0]
    assert reason.startswith("conflict: the record changed in the file and its row changed in Phase 2")
    assert location == "$.tasks[1]"  # where the record is in the file, as for any quarantined record
    assert "edited in Phase 2" in reason  # both versions: the file's in raw, Phase 2's in the reason
    # the re-sync's rollback puts the updated row back as it was
    rolled = phase1_rollback(run_id=out["run_id"], report_dir=flow_env["report_dir"], return_state=True)
    assert rolled.is_completed(), rolled.result(raise_on_failure=False)
    titles = dict(rows(url, "SELECT legacy_key, title FROM tasks"))
    assert titles["1"] == "task 1" and "7" not in titles
    # deletes propagate on request, only for rows the application left alone
    state, out = migrate(flow_env, source=str(src), propagate_deletes=True)
    assert (out["counts"]["disappeared"], out["counts"]["deleted"]) == (1, 1), out["counts"]
    assert "5" not in dict(rows(url, "SELECT legacy_key, title FROM tasks"))


def test_a_resync_with_files_whole_in_a_chunk_and_one_across_two(flow_env: dict[str, str], tmp_path: Path) -> None:
    """Chunks of 4 records: ann's 3 and bob's first, then bob's second and cy's 3. A re-sync reads
    the stored rows of a file whole in its chunk by its source, and bob's id by id: the outcomes
    are the same either way."""
    url = flow_env["db_url"]
    base = tmp_path / "uploads"

    def tasks(name: str, n: int, edited: dict[int, str]) -> dict[str, object]:
        return {
            "tasks": [
                {"id": i, "title": edited.get(i, f"{name} {i}"), "completed": False, "created_at": "2024-03-05T10:00:00Z"}
                for i in range(1, n + 1)
            ]
        }

    sizes = {"ann": 3, "bob": 2, "cy": 3}
    for name, n in sizes.items():
        write(base / name / "tasks.json", tasks(name, n, {}))
    _, first = migrate(flow_env, source=str(base), chunk_size=4)
    assert first["counts"]["inserted"] == 8, first["counts"]
    with psycopg.connect(url, autocommit=True) as conn:  # the application edits cy's first task
        conn.execute("UPDATE tasks SET title = 'cy 1, in Phase 2' WHERE legacy_source LIKE '%%cy/%%' AND legacy_key = '1'")
    edits = {"ann": {2: "ann 2, edited"}, "bob": {2: "bob 2, edited"}, "cy": {1: "cy 1, edited", 3: "cy 3, edited"}}
    for name, n in sizes.items():
        write(base / name / "tasks.json", tasks(name, n, edits[name]))
    state, out = migrate(flow_env, source=str(base), chunk_size=4)
    assert state.is_completed(), out
    c = out["counts"]
    assert (c["inserted"], c["updated"], c["unchanged"], c["conflicts"], c["disappeared"]) == (0, 3, 4, 1, 0), c
    assert out["report_data"]["verification"]["ok"]
    titles = {(s.split(":")[1].split("/")[0], k): t for s, k, t in rows(url, "SELECT legacy_source, legacy_key, title FROM tasks")}
    assert (titles["ann", "2"], titles["bob", "2"], titles["cy", "3"]) == ("ann 2, edited", "bob 2, edited", "cy 3, edited")
    assert titles["cy", "1"] == "cy 1, in Phase 2" and titles["bob", "1"] == "bob 1"
    # the ids its chunks saw (their checkpoints held them) are let go once the run completed
    assert rows(url, "SELECT count(*) FROM migration_checkpoints WHERE seen IS NOT NULL") == [(0,)]


def test_a_task_the_application_deleted_stays_deleted_and_its_record_waits_in_quarantine(
    app_db: tuple[str, str], flow_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Phase 2 wins over a delete too: a re-sync does not write back a row the application deleted,
    whether its record changed or not, and the record goes to quarantine. The application's role
    needs no right on the migration's tables for its deletes to be noted."""
    from tests.roles import APP

    app, owner = app_db
    monkeypatch.setenv("DATABASE_URL", owner)
    env = {**flow_env, "db_url": owner}
    timed = {"completed": False, "created_at": "2024-03-05T10:00:00Z"}
    records = [{"id": i, "title": f"task {i}", **timed} for i in range(1, 6)]
    src = write(tmp_path / "files" / "ann" / "tasks.json", {"tasks": records})
    emptied = write(tmp_path / "files" / "bob" / "tasks.json", {"tasks": [{"id": 1, "title": "only"}]})
    run = {"source": str(tmp_path / "files")}
    first = migrate(env, **run)[1]
    assert first["counts"]["inserted"] == 6, first["counts"]
    ann, bob = (f"%{p.parent.name}/tasks.json" for p in (src, emptied))

    def keys(source: str) -> set[str]:
        return {r[0] for r in rows(owner, "SELECT legacy_key FROM tasks WHERE legacy_source LIKE %s", source)}

    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(f"REVOKE ALL ON migration_deleted FROM {APP}")
    with psycopg.connect(app, autocommit=True) as conn:  # the application deletes, as itself
        conn.execute("DELETE FROM tasks WHERE legacy_source LIKE %s AND legacy_key IN ('2', '3', '5')", (ann,))
        conn.execute("DELETE FROM tasks WHERE legacy_source LIKE %s", (bob,))
    records[1]["title"] = "task 2, edited in the CLI"  # deleted in Phase 2, changed in the file
    del records[3:5]  # 4 disappears from the file; 5 is gone from both (disappeared too: counted once)
    records.append({"id": 6, "title": "task 6, new", **timed})
    write(src, {"tasks": records})

    for inserted, unchanged in ((1, 1), (0, 2)):  # again: a file with a deleted row is read every time
        state, out = migrate(env, **run)
        assert state.is_completed() and out["report_data"]["verification"]["ok"], out
        c = out["counts"]
        assert (c["records_read"], c["inserted"], c["unchanged"], c["updated"], c["conflicts"], c["disappeared"]) == (
            5, inserted, unchanged, 0, 3, 2
        ), c  # fmt: skip
        assert keys(ann) == {"1", "4", "6"} and keys(bob) == set()
        reasons = rows(owner, "SELECT legacy_id, reasons[1] FROM quarantine WHERE run_id = %s ORDER BY 1", out["run_id"])
        assert [key for key, _ in reasons] == ["1", "2", "3"]
        assert all(r.startswith("conflict: the application deleted this record's row in Phase 2") for _, r in reasons)
        assert '"title":"task 2"' in reasons[1][1]  # the row as it was when deleted

    with psycopg.connect(owner, autocommit=True) as conn:  # an administrator puts task 3 back as it was
        conn.execute(
            "INSERT INTO tasks SELECT (json_populate_record(NULL::tasks, last_row)).* FROM migration_deleted "
            "WHERE legacy_source LIKE %s AND legacy_key = '3'",
            (ann,),
        )
    restored = migrate(env, **run)[1]  # its row is back: compared as any other, counted once
    assert restored["report_data"]["verification"]["ok"], restored["report_data"]["verification"]
    assert (restored["counts"]["unchanged"], restored["counts"]["conflicts"]) == (3, 2), restored["counts"]

    # the migration's own deletes are not the application's: a record put back is written again
    propagated = migrate(env, **run, propagate_deletes=True)[1]
    assert (propagated["counts"]["deleted"], keys(ann)) == (1, {"1", "3", "6"}), propagated["counts"]
    records.append({"id": 4, "title": "task 4", **timed})
    write(src, {"tasks": records})
    back = migrate(env, **run)[1]
    assert (back["counts"]["inserted"], keys(ann)) == (1, {"1", "3", "4", "6"}), back["counts"]

    # a rollback of the run that wrote the deleted rows makes it as if it never was: all written again
    rolled = phase1_rollback(run_id=first["run_id"], report_dir=env["report_dir"], return_state=True)
    assert rolled.is_completed(), rolled.result(raise_on_failure=False)
    again = migrate(env, **run)[1]
    assert again["report_data"]["verification"]["ok"], again["report_data"]["verification"]
    assert (keys(ann), keys(bob)) == ({"1", "2", "3", "4", "6"}, {"1"})
    assert rows(owner, "SELECT count(*) FROM migration_deleted") == [(0,)]


def test_an_updated_row_keeps_the_checksum_of_what_it_became(flow_env: dict[str, str], tmp_path: Path) -> None:
    """A row a re-sync updated is the migration's again: its stored checksum is the row's own, so
    the next edit in the file updates it again (not a conflict), with and without a creation time."""
    url = flow_env["db_url"]
    records = [
        {"id": 1, "title": "timed", "completed": False, "created_at": "2024-03-05T10:00:00Z"},
        {"id": 2, "title": "untimed", "completed": False},
    ]
    src = write(tmp_path / "tasks.json", {"tasks": records})
    assert migrate(flow_env, source=str(src))[1]["counts"]["inserted"] == 2
    created = dict(rows(url, "SELECT legacy_key, created_at FROM tasks"))
    for edit in ("once", "twice"):
        for r in records:
            r["title"] += f", edited {edit}"
        write(src, {"tasks": records})
        state, out = migrate(flow_env, source=str(src))
        assert state.is_completed(), out
        assert (out["counts"]["updated"], out["counts"]["conflicts"]) == (2, 0), out["counts"]
        assert rows(url, f"SELECT count(*) FROM tasks t WHERE t.legacy_checksum <> {row_checksum_sql('t')}") == [(0,)]
        assert dict(rows(url, "SELECT legacy_key, created_at FROM tasks")) == created  # the untimed one kept its own
        assert dict(rows(url, "SELECT legacy_key, title FROM tasks")) == {"1": records[0]["title"], "2": records[1]["title"]}


def test_a_resync_counts_unchanged_files_from_their_last_sync_and_reads_the_others(
    flow_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = flow_env["db_url"]
    base = tmp_path / "uploads"
    files = uploads(base)
    eve = write(
        base / "eve@example.com" / "tasks.json", [{"id": 1, "title": ""}, {"id": 2, "title": "Plan trip"}]
    )
    run = {"source": str(base / "**" / "tasks.json"), "owner_from_path": f"{base}/{{email}}/tasks.json"}
    _, first = migrate(flow_env, **run)
    assert first["counts"]["quarantined"] == 1, first["counts"]

    checked: list[str] = []
    monkeypatch.setattr(
        files_module, "checked_batches", lambda path, *a: checked.append(path) or checked_batches(path, *a)
    )
    _, again = migrate(flow_env, **run)  # nothing changed
    assert checked == [str(eve)]  # the unchanged files are not even pre-checked
    status = {f["path"]: f["status"] for f in again["report_data"]["files"]}
    assert status[str(eve)] == "loaded"  # its quarantined record is read (and quarantined) again
    assert {status[str(p)] for p in files.values()} == {"unchanged"}
    c = again["counts"]
    assert (c["records_read"], c["inserted"], c["unchanged"], c["quarantined"]) == (8, 0, 7, 1), c
    assert again["report_data"]["verification"]["ok"], again["report_data"]["verification"]
    assert any("not read again" in n for n in again["report_data"]["notes"])
    streamed = rows(
        url, "SELECT coalesce(sum(records), 0) FROM migration_checkpoints WHERE run_id = %s", again["run_id"]
    )
    assert streamed == [(2,)]  # eve's two records only

    # ann edits her file; the application deletes one of cy's rows; bob's stays as it was
    ann = json.loads(files["ann@example.com"].read_text())
    ann["tasks"].append({"id": 3, "title": "Book dentist", "completed": False})
    write(files["ann@example.com"], ann)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM tasks WHERE legacy_source LIKE '%%cy@example.com%%'")
    _, third = migrate(flow_env, **run)
    by_path = {f["path"]: f for f in third["report_data"]["files"]}
    assert by_path[str(files["bob@example.com"])]["status"] == "unchanged"
    assert (
        by_path[str(files["ann@example.com"])]["inserted"],
        by_path[str(files["ann@example.com"])]["unchanged"],
    ) == (1, 2)
    cy = by_path[str(files["cy@example.com"])]  # read again (a row is gone), not written again: Phase 2 wins
    assert (cy["status"], cy["inserted"], cy["conflicts"]) == ("loaded", 0, 1)
    assert rows(url, "SELECT count(*) FROM tasks WHERE legacy_source LIKE '%%cy@example.com%%'") == [(0,)]
    assert third["report_data"]["verification"]["ok"]
    assert third["counts"]["records_read"] == 9

    # other parameters may give other rows: every file is read again
    _, other = migrate(flow_env, **run, default_user_email="someone.else@example.com")
    assert {f["status"] for f in other["report_data"]["files"]} == {"loaded"}
    assert (other["counts"]["unchanged"], other["counts"]["conflicts"]) == (7, 1)  # cy's deleted row: a conflict
    assert other["report_data"]["verification"]["ok"]

    # cutover closes the sources of unchanged files too
    _, last = migrate(flow_env, **run, default_user_email="someone.else@example.com", cutover=True)
    assert {f["status"] for f in last["report_data"]["files"]} == {"unchanged", "loaded"}
    _, closed = migrate(flow_env, **run, default_user_email="someone.else@example.com")
    assert {f["status"] for f in closed["report_data"]["files"]} == {"closed"}


def test_a_resync_knows_files_that_held_still_by_their_stat_and_reads_an_edit_that_kept_size_and_mtime(
    flow_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-sync hashes only the files whose stat moved since their last sync: an edit of the same
    length with its mtime put back is still read (its ctime moved); a file touched but not changed
    is hashed and counted unchanged, and its new stat vouches for it from then on."""
    from flows import phase1 as flow_module

    monkeypatch.setattr(filestat, "SETTLED_NS", 200_000_000)  # the rule as it is, in less time
    url = flow_env["db_url"]
    base = tmp_path / "uploads"
    files = uploads(base)
    time.sleep(0.3)
    run = {"source": str(base / "**" / "tasks.json"), "owner_from_path": f"{base}/{{email}}/tasks.json"}
    migrate(flow_env, **run)
    assert rows(url, "SELECT count(*), count(stat_key) FROM migration_sources") == [(3, 3)]

    hashed: list[str] = []
    monkeypatch.setattr(flow_module, "file_sha256", lambda path: hashed.append(path) or file_sha256(path))
    ann, bob = files["ann@example.com"], files["bob@example.com"]
    old = ann.stat()
    ann.write_text(ann.read_text().replace("Buy milk", "Buy eggs"), encoding="utf-8")
    os.utime(ann, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert (ann.stat().st_size, ann.stat().st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    os.utime(bob)  # touched: the same bytes
    time.sleep(0.3)
    _, again = migrate(flow_env, **run)
    assert sorted(hashed) == sorted([str(ann), str(bob)])  # cy's file: its stat vouched for it
    status = {f["path"]: f["status"] for f in again["report_data"]["files"]}
    assert (status[str(ann)], status[str(bob)], status[str(files["cy@example.com"])]) == (
        "loaded", "unchanged", "unchanged"
    )  # fmt: skip
    assert (again["counts"]["updated"], again["counts"]["unchanged"]) == (1, 5), again["counts"]
    assert again["report_data"]["verification"]["ok"]
    assert rows(url, "SELECT count(*) FROM tasks WHERE title = 'Buy eggs'") == [(1,)]

    hashed.clear()
    _, third = migrate(flow_env, **run)
    assert hashed == [] and {f["status"] for f in third["report_data"]["files"]} == {"unchanged"}


def test_a_resumed_resync_reads_the_files_its_first_attempt_chose(flow_env: dict[str, str], tmp_path: Path) -> None:
    url = flow_env["db_url"]
    base = tmp_path / "uploads"
    uploads(base)
    run = {"source": str(base / "**" / "tasks.json"), "owner_from_path": f"{base}/{{email}}/tasks.json"}
    migrate(flow_env, **run)
    job = prepare(run["source"], owner_from_path=run["owner_from_path"])
    start = {"kind": "phase1", "source_path": job.origin, "source_name": job.source_name,
             "source_sha256": job.sha256, "chunk_size": job.chunk_size, "parameters": job.parameters}  # fmt: skip
    with psycopg.connect(url, autocommit=True) as conn:  # a re-sync that dies once it has chosen
        started = start_or_resume(conn, **start)
        chosen = unchanged_files(conn, started.id, job.files, job.parameters, file_sha256, resumed=False)
        assert len(chosen) == 3
        conn.execute("DELETE FROM tasks WHERE legacy_source LIKE '%%ann@example.com%%'")  # now ann's is not
        assert unchanged_files(conn, started.id, job.files, job.parameters, file_sha256, resumed=True) == chosen
    _, out = migrate(flow_env, **run)  # resumes it: the chunks it streams are the ones it numbered
    assert out["run_id"] == started.id and out["report_data"]["resumed"]
    assert out["report_data"]["verification"]["ok"] and out["counts"]["unchanged"] == 6
    _, after = migrate(flow_env, **run)  # the next sync reads ann's file again; her deleted rows stay so
    assert (after["counts"]["inserted"], after["counts"]["conflicts"]) == (0, 2), after["counts"]
    assert after["report_data"]["verification"]["ok"]


def test_cutover_closes_the_sources(flow_env: dict[str, str], tmp_path: Path) -> None:
    base = tmp_path / "uploads"
    uploads(base)
    glob = str(base / "**" / "tasks.json")
    state, out = migrate(flow_env, source=glob, cutover=True)
    assert state.is_completed(), out
    assert "Cutover" in " ".join(out["report_data"]["notes"])
    state, out = migrate(flow_env, source=glob)
    assert out["exit_code"] == 4 and out["counts"]["records_read"] == 0
    assert all(f["status"] == "closed" for f in out["report_data"]["files"])
    single = write(tmp_path / "one.json", [{"id": 1, "title": "a", "completed": False}])
    migrate(flow_env, source=str(single), cutover=True)
    state, out = migrate(flow_env, source=str(single))
    assert out["exit_code"] == 2 and "closed at cutover" in out["error"]


def test_a_file_refused_in_a_resync_has_no_rows_disappear_or_deleted(flow_env: dict[str, str], tmp_path: Path) -> None:
    """Its records were never read: --propagate-deletes must not take it as emptied."""
    base = tmp_path / "uploads"
    files = uploads(base)
    args = {"source": str(base), "owner_from_path": f"{base}/{{email}}/tasks.json"}
    state, _ = migrate(flow_env, **args)
    assert state.is_completed()
    before = rows(flow_env["db_url"], "SELECT count(*) FROM tasks")[0][0]
    files["ann@example.com"].write_text('[{"id": 1, "title": "Buy milk", "comp')  # cut short since
    files["bob@example.com"].write_text('[{"id": 1, "text": "Fix bike", "done": true}]')  # two records gone
    files["cy@example.com"].write_text('{"tasks": []}')  # emptied: read, and its one record gone
    state, out = migrate(flow_env, propagate_deletes=True, **args)
    assert out["exit_code"] == 4, out
    c = out["report_data"]["counts"]
    assert (c["disappeared"], c["deleted"]) == (3, 3), c
    assert out["report_data"]["verification"]["ok"], out["report_data"]["verification"]
    owners = dict(rows(flow_env["db_url"], "SELECT u.email, count(*) FROM tasks t JOIN users u ON u.id = t.user_id GROUP BY 1"))
    assert owners == {"ann@example.com": 2, "bob@example.com": 1}
    assert rows(flow_env["db_url"], "SELECT count(*) FROM tasks")[0][0] == before - 3
    table = {f["path"]: (f["status"], f["records"]) for f in out["report_data"]["files"]}  # a row for every file
    assert table == {str(files["ann@example.com"]): ("rejected", 0), str(files["bob@example.com"]): ("loaded", 1),
                     str(files["cy@example.com"]): ("loaded", 0)}, table  # fmt: skip


def test_a_file_an_earlier_sync_read_that_the_run_did_not_find_is_named(flow_env: dict[str, str], tmp_path: Path) -> None:
    """Deleted, moved or outside the glob: the run cannot tell which, so it says so and leaves the rows."""
    base = tmp_path / "uploads"
    files = uploads(base)
    glob = str(base / "*" / "tasks.json")
    migrate(flow_env, source=glob, owner_from_path=f"{base}/{{email}}/tasks.json")
    _, one = migrate(flow_env, source=str(files["ann@example.com"]), owner_from_path=f"{base}/{{email}}/tasks.json")
    assert one["exit_code"] == 0 and not [n for n in one["report_data"]["notes"] if "earlier sync read" in n]
    files["bob@example.com"].rename(files["bob@example.com"].with_name("tasks.old"))
    _, out = migrate(flow_env, source=glob, owner_from_path=f"{base}/{{email}}/tasks.json", cutover=True)
    assert out["exit_code"] == 0, out
    note = next(n for n in out["report_data"]["notes"] if "earlier sync read" in n)
    assert note.startswith("1 files") and "phase1:bob@example.com/tasks.json" in note and "sources open" in note
    bob = "SELECT count(*) FROM tasks t JOIN users u ON u.id = t.user_id WHERE u.email = 'bob@example.com'"
    assert rows(flow_env["db_url"], bob) == [(3,)]


def test_kill_9_in_a_run_of_many_files_resumes_exactly(flow_env: dict[str, str], tmp_path: Path) -> None:
    base = tmp_path / "many"
    for i in range(1500):
        write(
            base / f"u{i:04d}" / "tasks.json",
            [{"id": j, "title": f"u{i} t{j}", "done": j % 2 == 0} for j in range(1, 1 + i % 7)],
        )
    env = {**os.environ, "PREFECT_API_URL": flow_env["api_url"], "DATABASE_URL": flow_env["db_url"]}
    args = [sys.executable, "-m", "flows.phase1", "--source", str(base), "--chunk-size", "200", "--workers", "1",
            "--no-checkpoint", "--report-dir", str(tmp_path / "runs")]  # fmt: skip
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = flow_env["db_url"]
    deadline, committed = time.monotonic() + 120, 0
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline and committed < 4:
            committed = conn.execute("SELECT count(*) FROM migration_checkpoints").fetchone()[0]
            time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    chunks = rows(url, "SELECT count(*) FROM migration_checkpoints")[0][0]
    total = sum(i % 7 for i in range(1500))
    assert 4 <= chunks < total // 200, "the kill must land part-way"
    done = subprocess.run([*args, "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["resumed"] and report["counts"]["records_read"] == total
    assert rows(url, "SELECT count(*), count(DISTINCT id) FROM tasks")[0] == (total, total)
    assert report["verification"]["ok"]


def test_kill_9_in_a_resync_resumes_with_what_its_chunks_saw(flow_env: dict[str, str], tmp_path: Path) -> None:
    """A re-sync killed part-way, resumed: the rows its committed chunks saw (their checkpoints hold
    them) are not taken for disappeared, and the records gone from the files are, each once."""
    base, url = tmp_path / "many", flow_env["db_url"]
    sizes = [2 + i % 6 for i in range(600)]
    for i, n in enumerate(sizes):
        write(base / f"u{i:04d}" / "tasks.json", [{"id": j, "title": f"u{i} t{j}", "done": False} for j in range(1, n + 1)])
    env = {**os.environ, "PREFECT_API_URL": flow_env["api_url"], "DATABASE_URL": url}
    args = [sys.executable, "-m", "flows.phase1", "--source", str(base), "--chunk-size", "100", "--workers", "1",
            "--no-checkpoint", "--report-dir", str(tmp_path / "runs"), "--json"]  # fmt: skip
    assert subprocess.run(args, cwd=ROOT, env=env, capture_output=True, timeout=300).returncode == 0
    for i, n in enumerate(sizes):  # every file edited; every third loses its last record
        kept = n - 1 if i % 3 == 0 else n
        write(base / f"u{i:04d}" / "tasks.json", [{"id": j, "title": f"u{i} t{j} (edited)" if j == 1 else f"u{i} t{j}",
                                                   "done": False} for j in range(1, kept + 1)])  # fmt: skip
    before = rows(url, "SELECT count(*) FROM migration_checkpoints")[0][0]
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline, committed = time.monotonic() + 120, 0
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline and committed < 4:
            committed = conn.execute("SELECT count(*) FROM migration_checkpoints").fetchone()[0] - before
            time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    noted = rows(url, "SELECT count(*) FROM migration_checkpoints WHERE seen IS NOT NULL")[0][0]
    assert 4 <= noted < sum(sizes) // 100, "the kill must land part-way, after chunks that noted what they saw"
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["resumed"] and report["verification"]["ok"]
    c = report["counts"]
    assert (c["updated"], c["disappeared"], c["inserted"], c["conflicts"]) == (600, 200, 0, 0), c
    assert rows(url, "SELECT count(*) FROM migration_checkpoints WHERE seen IS NOT NULL") == [(0,)]


def test_the_command_finds_the_files_once_and_each_command_afresh(
    flow_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command prepares the run while the temporary server boots, and the flow run takes that
    job instead of walking and stating the files again; the next command sees the files as they are then."""
    from flows import phase1 as flow_module
    from flows.commands import phase1 as command

    monkeypatch.setenv("PREFECT_API_URL", flow_env["api_url"])  # no temporary server: the session's
    base = tmp_path / "uploads"
    uploads(base)
    hashed: list[int] = []
    monkeypatch.setattr(
        flow_module, "found_files", lambda sources, **kw: hashed.append(len(sources)) or found_files(sources, **kw)
    )
    args = ["--source", str(base), "--no-checkpoint", "--report-dir", flow_env["report_dir"], "--json"]
    assert command.main(args) == 0
    assert hashed == [3]
    assert json.loads(capsys.readouterr().out)["counts"]["inserted"] == 6

    write(base / "dee@example.com" / "tasks.json", [{"id": 1, "title": "Walk dog"}])
    assert command.main(args) == 0
    assert hashed == [3, 4]
    report = json.loads(capsys.readouterr().out)
    assert (report["counts"]["inserted"], report["source"]["unchanged"]) == (1, 3)


@pytest.mark.parametrize("bad", ["no/such/dir/*.json", ""])
def test_a_source_that_names_no_files_is_one_line(flow_env: dict[str, str], bad: str) -> None:
    state, out = migrate(flow_env, source=bad or None)
    assert out["exit_code"] == 2 and "\n" not in out["error"]


def test_a_run_result_keeps_the_first_thousand_file_rows_and_the_report_all_of_them() -> None:
    """Prefect walks and stores a flow's result: 100,000 per-file rows cost seconds there, so the
    result keeps the first OUTCOME_ROWS (refused first) and says how many report.json holds."""
    from flows.outcome import OUTCOME_ROWS, brief

    rows = [{"path": f"u{i}/tasks.json", "status": "loaded"} for i in range(OUTCOME_ROWS + 1500)]
    report = {"run_id": "r", "files": rows, "notes": ["n"]}
    kept = brief(report)
    assert kept["files"] == rows[:OUTCOME_ROWS] and kept["rows_total"] == {"files": OUTCOME_ROWS + 1500}
    assert report["files"] is rows and len(rows) == OUTCOME_ROWS + 1500  # the report itself is whole
    small = {"run_id": "r", "files": rows[:3]}
    assert brief(small) is small


def test_report_json_holds_every_file_row_one_per_line(tmp_path: Path) -> None:
    from tasks.report import write

    counts = dict.fromkeys(("inserted", "updated", "unchanged", "conflicts", "quarantined"), 0)
    rows = [{"path": f"ü{i}/tasks.json", "owner": None, "status": "loaded", "error": None, "records": i, **counts}
            for i in range(5000)]  # fmt: skip
    report = {"run_id": "r", "status": "completed", "counts": {"inserted": 3}, "files": rows, "notes": ["a\nb"]}
    write(report, tmp_path)
    text = (tmp_path / "r" / "report.json").read_text(encoding="utf-8")
    assert json.loads(text) == report
    assert len(text.splitlines()) < len(rows) + 30  # a row a line, not a line a field


def test_a_directory_gives_every_json_file_under_it_once_in_a_stable_order(tmp_path: Path) -> None:
    """What rglob gave: nested and hidden files, no other suffix, symlinked folders not followed
    (a link back up would loop, and the files behind it are found where they are)."""
    from tasks.sources import resolve

    for name in ("b/tasks.json", "a/tasks.json", "a/deep/er/tasks.json", ".hidden/tasks.json", "a/notes.txt",
                 "a/tasks.json.bak", "top.json"):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text('{"tasks": []}')
    (tmp_path / "a" / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "linked.json").symlink_to(tmp_path / "top.json")
    found = resolve(str(tmp_path), source_name="cli")
    assert [f.legacy_source for f in found] == [
        "cli:.hidden/tasks.json", "cli:a/deep/er/tasks.json", "cli:a/loop", "cli:a/tasks.json", "cli:b/tasks.json",
        "cli:linked.json", "cli:top.json",
    ]  # fmt: skip
    assert [f.legacy_source for f in found if f.error] == ["cli:a/loop"]  # named, refused, not followed
    assert all(Path(f.path).is_file() and Path(f.path).is_relative_to(tmp_path) for f in found if not f.error)
    globbed = resolve(str(tmp_path / "**" / "tasks.json"), source_name="cli")
    assert [(f.legacy_source, f.error is None) for f in globbed] == [
        ("cli:a/deep/er/tasks.json", True),
        ("cli:a/loop", False),
        ("cli:a/tasks.json", True),
        ("cli:b/tasks.json", True),
    ]


def test_legacy_sources_do_not_depend_on_how_the_source_is_spelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file's legacy source names its rows' keys: the same files, however the run was told where
    they are, are the same sources (or a re-run would insert them all again)."""
    from tasks.sources import resolve

    for name in ("u1/tasks.json", "u2/.config/tasks.json", "u3/x/y/tasks.json"):
        write(tmp_path / "data" / name, {"tasks": []})
    monkeypatch.chdir(tmp_path)
    every = ["s:u1/tasks.json", "s:u2/.config/tasks.json", "s:u3/x/y/tasks.json"]
    for spelled in ("data", "data/", "./data", "data//", "data/../data", str(tmp_path / "data")):
        assert [f.legacy_source for f in resolve(spelled, source_name="s")] == every, spelled
    for spelled in ("data/**/tasks.json", "./data/**/tasks.json", "data//**/tasks.json",
                    f"{tmp_path}/data/**/tasks.json", "data/u*/**/tasks.json"):  # fmt: skip
        assert [f.legacy_source for f in resolve(spelled, source_name="s")] == [every[0], every[2]], spelled
