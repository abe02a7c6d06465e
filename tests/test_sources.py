"""Which files a run migrates and whose each one is (tasks/sources.py), as user bases really hold
them: odd folder names, links, FIFOs, manifests written by hand or exported from a spreadsheet."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows import params as P
from tasks.errors import InputError
from tasks.sources import LINKED, SourcesError, resolve


def tree(base: Path, *names: str) -> None:
    for name in names:
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text('[{"id": 1, "title": "t"}]')


def named(found: list) -> dict[str, tuple[str | None, str | None]]:
    return {f.legacy_source: (f.owner, f.error) for f in found}


def test_a_file_that_names_no_owner_is_refused_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree(tmp_path, "uploads/ann@example.com/tasks.json", "uploads/carol smith@example.com/tasks.json",
         "uploads/team/kim@example.com/tasks.json", "uploads/Bob.Smith+todo@Example.COM/tasks.json")  # fmt: skip
    monkeypatch.chdir(tmp_path)
    for pattern in ("uploads/{email}/tasks.json", "./uploads/{email}/tasks.json", f"{tmp_path}/uploads/{{email}}/tasks.json"):
        found = named(resolve("uploads", owner_from_path=pattern))
        assert found["phase1:ann@example.com/tasks.json"] == ("ann@example.com", None), pattern
        assert found["phase1:Bob.Smith+todo@Example.COM/tasks.json"] == ("bob.smith+todo@example.com", None)
        owner, error = found["phase1:carol smith@example.com/tasks.json"]
        assert owner is None and error.endswith("'carol smith@example.com' is not an email address")
        owner, error = found["phase1:team/kim@example.com/tasks.json"]
        assert owner is None and error.endswith(f"does not match --owner-from-path {pattern!r}")


def test_one_users_file_alone_is_named_as_a_run_of_the_tree_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pilot on one user's file, then the whole tree: the same rows, never two users' files under
    one name (the run's source name alone is for a file that is nobody's in particular)."""
    tree(tmp_path, "uploads/ann@example.com/tasks.json", "uploads/bob@example.com/tasks.json")
    monkeypatch.chdir(tmp_path)
    whole = named(resolve("uploads/*/tasks.json", owner_from_path="uploads/{email}/tasks.json"))
    for spelled in ("uploads/ann@example.com/tasks.json", "./uploads/ann@example.com/tasks.json",
                    f"{tmp_path}/uploads/ann@example.com/tasks.json"):  # fmt: skip
        alone = named(resolve(spelled, owner_from_path="uploads/{email}/tasks.json"))
        assert alone == {"phase1:ann@example.com/tasks.json": ("ann@example.com", None)}, spelled
        assert alone.keys() <= whole.keys()
    for folder in ("uploads/ann@example.com", "uploads/ann@example.com/", "uploads/ann@example.com/*.json"):
        alone = named(resolve(folder, owner_from_path="uploads/{email}/tasks.json"))
        assert alone == {"phase1:ann@example.com/tasks.json": ("ann@example.com", None)}, folder
    with pytest.raises(SourcesError, match="does not match --owner-from-path"):
        resolve("uploads/ann@example.com/tasks.json", owner_from_path="other/{email}/tasks.json")
    assert named(resolve("uploads/ann@example.com/tasks.json")) == {"phase1": (None, None)}


def test_nothing_a_tree_holds_is_left_out_unsaid(tmp_path: Path) -> None:
    """A symlinked user folder is named (not followed), a FIFO or a broken link is a file its
    pre-check refuses with the reason, and `TASKS.JSON` from a Windows upload is a JSON file."""
    tree(tmp_path, "elsewhere/frank/tasks.json", "up/ann@example.com/tasks.json", "up/bo@example.com/TASKS.JSON")
    (tmp_path / "up" / "frank@example.com").symlink_to(tmp_path / "elsewhere" / "frank", target_is_directory=True)
    (tmp_path / "up" / "gina@example.com").mkdir()
    (tmp_path / "up" / "gina@example.com" / "tasks.json").symlink_to(tmp_path / "gone.json")
    (tmp_path / "up" / "jay@example.com").mkdir()
    os.mkfifo(tmp_path / "up" / "jay@example.com" / "tasks.json")
    for source in (str(tmp_path / "up"), str(tmp_path / "up" / "*" / "tasks.json"), str(tmp_path / "up" / "**" / "tasks.json")):
        found = named(resolve(source, source_name="s"))
        assert found["s:frank@example.com"] == (None, f"{tmp_path}/up/frank@example.com: {LINKED}"), source
        assert found["s:gina@example.com/tasks.json"] == (None, None)
        assert found["s:jay@example.com/tasks.json"] == (None, None)
        assert ("s:bo@example.com/TASKS.JSON" in found) == (source == str(tmp_path / "up"))


def test_a_path_that_exists_is_that_file_whatever_it_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree(tmp_path, "tasks[1].json", "Backup [2024]/ann@example.com/tasks.json")
    monkeypatch.chdir(tmp_path)
    assert [f.path for f in resolve("tasks[1].json")] == ["tasks[1].json"]
    found = resolve("Backup [2024]/*/tasks.json", owner_from_path="{email}/tasks.json")
    assert [(f.path, f.owner) for f in found] == [("Backup [2024]/ann@example.com/tasks.json", "ann@example.com")]


def manifest(tmp_path: Path, text: str, newline: str = "\n") -> str:
    tree(tmp_path, "ann/tasks.json", "bob/tasks.json")
    (tmp_path / "alias.json").symlink_to(tmp_path / "ann" / "tasks.json")  # ann's file, by another name
    path = tmp_path / "m.csv"
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return str(path)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_manifest_as_people_write_it(tmp_path: Path, newline: str) -> None:
    text = '\ufeffPath , EMAIL,note\n\nann/tasks.json, Ann@Example.com ,first\n "bob/tasks.json" , " Bob@Example.com "\n'
    found = named(resolve(None, manifest=manifest(tmp_path, text, newline)))
    assert found == {"phase1:ann/tasks.json": ("ann@example.com", None), "phase1:bob/tasks.json": ("bob@example.com", None)}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,email\nann/tasks.json,ann@example.com,extra\n", "line 2: 3 fields, the header names 2"),
        ("path,email\n\n\nann/tasks.json,ann@example.com\n./ann/tasks.json,ann@example.com\n",
         "line 5: ./ann/tasks.json is listed twice (line 4: ann/tasks.json)"),
        ("path,email\nann/tasks.json,ann@example.com\nbob/../ann/tasks.json,bob@example.com\n", "listed twice"),
        ("ann/tasks.json,ann@example.com\n", "a header line naming its path and email columns"),
        ("path,email\n,ann@example.com\n", "line 2: path is empty"),
        ("path,email\nann/tasks.json,ann@example.com\n\"bob/tasks.json,bob@example.com\nx,y\n",
         "line 3: a double quote is not closed on its line"),
        ("path,email\nann/tasks.json,ann@example.com\nalias.json,ann@example.com\n",
         "line 3: alias.json is listed twice (line 2: ann/tasks.json)"),
    ],
)  # fmt: skip
def test_a_manifest_that_cannot_be_read_as_files_is_one_line_with_its_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SourcesError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        resolve(None, manifest=manifest(tmp_path, text))


def test_a_manifest_row_without_an_email_refuses_that_file_alone(tmp_path: Path) -> None:
    path = manifest(tmp_path, "path,email\n\nann/tasks.json,not-an-email\nbob/tasks.json,bob@example.com\n")
    found = named(resolve(None, manifest=path))
    assert found["phase1:bob/tasks.json"] == ("bob@example.com", None)
    owner, error = found["phase1:ann/tasks.json"]
    assert owner is None and error.endswith(f"'not-an-email' ({path}, line 3) is not an email address")


def test_files_are_named_one_way_per_run(tmp_path: Path) -> None:
    path = manifest(tmp_path, "path,email\nann/tasks.json,ann@example.com\n")
    with pytest.raises(InputError, match="give --source or --manifest, not both"):
        P.of(P.Phase1, {"manifest": path, "source": str(tmp_path)})
    assert P.of(P.Phase1, {"manifest": path}).manifest == path  # the default source is no second way
    with pytest.raises(SourcesError, match="a manifest names each file's owner"):
        resolve(None, manifest=path, owner_from_path="{email}/tasks.json")
