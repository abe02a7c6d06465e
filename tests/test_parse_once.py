"""In a run of many files a small file is parsed once: its pre-check keeps the batches it decoded
and the load takes them instead of reading the file again (tasks/source.py checked_batches). That
is only right if they are exactly the batches a second read gives, record for record, with the
same positions, keys, repeated keys and salvage cut; where the pre-check decoded more than the load
would (a `users` list beside `tasks`), the file is read again. Checked on every corpus file with
the flags it is read with, and on shapes made to tell the two ways apart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows import params as P
from tasks.errors import UserFacingError
from tasks.mapping import FieldMapping
from tasks.source import ReadOptions, checked_batches, iter_batches, precheck

CORPUS = Path(__file__).parent / "corpus"


def _readings() -> list[Any]:
    out = []
    for path in sorted(CORPUS.glob("*.json")):
        spec = yaml.safe_load(path.with_name(path.stem + ".expect.yaml").read_text(encoding="utf-8"))
        for flags in [spec.get("flags") or {}, *([spec["flagged"].get("flags") or {}] if spec.get("flagged") else [])]:
            out.append(pytest.param(path, flags, id=f"{path.stem}-{json.dumps(flags, sort_keys=True)}"))
    return out


def _reading(flags: dict[str, Any]) -> tuple[FieldMapping, ReadOptions]:
    p = P.of(P.Phase1, {"source": "x", **flags})
    return FieldMapping.build(p.field_map or [], p.mapping_file, p.strict), ReadOptions(p.lenient_json, p.salvage)


def _shape(batches: Any) -> list[tuple[Any, ...]]:
    return [(b.group, b.start, b.records, b.keys, b.repeated, b.file) for b in batches]


def _both(path: Path, mapping: FieldMapping, options: ReadOptions) -> tuple[Any, Any, bool]:
    """(batches read again, batches of the pre-check, whether the pre-check's were kept)."""
    info = precheck(path, mapping, options)
    again = _shape(iter_batches(info, mapping, 7))
    info_once, once = checked_batches(path, mapping, options, 7)
    assert info_once == info
    return again, _shape(once), isinstance(once, list)


@pytest.mark.parametrize(("path", "flags"), _readings())
def test_a_corpus_file_parsed_once_gives_what_a_second_read_gives(path: Path, flags: dict[str, Any]) -> None:
    mapping, options = _reading(flags)
    try:
        again, once, _ = _both(path, mapping, options)
    except UserFacingError as exc:  # a refused file: refused the same way
        with pytest.raises(UserFacingError) as refused:
            checked_batches(path, mapping, options, 7)
        assert str(refused.value) == str(exc)
        return
    assert once == again


def test_most_of_the_corpus_is_parsed_once() -> None:
    kept = total = 0
    for param in _readings():
        path, flags = param.values
        mapping, options = _reading(flags)
        try:
            _, _, was_kept = _both(path, mapping, options)
        except UserFacingError:
            continue
        total += 1
        kept += was_kept
    assert kept >= 0.8 * total, f"{kept} of {total} files parsed once"


def _write(tmp_path: Path, name: str, doc: Any, text: str | None = None) -> Path:
    path = tmp_path / name
    path.write_text(text if text is not None else json.dumps(doc), encoding="utf-8")
    return path


def test_a_list_the_load_leaves_out_is_read_again(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "users.json",
        {
            "users": [{"name": "ann", "email": "ann@example.com"}, {"name": "bob", "email": "bob@example.com"}],
            "tasks": [{"id": 1, "title": "Buy milk", "done": False}, {"id": 2, "title": "Call mum", "done": True}],
        },
    )
    again, once, kept = _both(path, FieldMapping.build(), ReadOptions())
    assert not kept and once == again
    assert [r["title"] for b in again for r in b[2]] == ["Buy milk", "Call mum"]


def test_records_under_their_own_keys_beside_others_count_alike(tmp_path: Path) -> None:
    doc = {
        "settings": {"theme": "dark"},
        "t1": {"title": "Water plants", "done": False, "created": "2024-03-05"},
        "meta": [1, 2, 3],
        "t2": {"title": "Pay rent", "done": True, "created": "2024-03-06"},
    }
    again, once, _ = _both(_write(tmp_path, "keyed.json", doc), FieldMapping.build(), ReadOptions())
    assert once == again and sum(len(b[2]) for b in again) == 2


def test_a_file_cut_short_in_a_list_the_load_leaves_out_is_cut_where_a_second_read_cuts(tmp_path: Path) -> None:
    text = '{"tasks": [{"id": 1, "title": "Buy milk"}, {"id": 2, "title": "Call mum"}], "users": [{"name": "ann"}, {"na'
    path = _write(tmp_path, "cut.json", None, text)
    again, once, _ = _both(path, FieldMapping.build(), ReadOptions(salvage=True))
    assert once == again
    info = precheck(path, FieldMapping.build(), ReadOptions(salvage=True))
    assert info.cut is not None


def test_a_file_cut_short_in_its_tasks_is_parsed_once(tmp_path: Path) -> None:
    text = '{"tasks": [{"id": 1, "title": "Buy milk"}, {"id": 2, "title": "Call mum"}, {"id": 3, "ti'
    path = _write(tmp_path, "cut.json", None, text)
    again, once, kept = _both(path, FieldMapping.build(), ReadOptions(salvage=True))
    assert kept and once == again and len(again[-1][2]) == 1  # the cut record, quarantined whole


def test_repeated_keys_and_comments_parse_once_alike(tmp_path: Path) -> None:
    text = '// my tasks\n{"tasks": [{"id": 1, "title": "a", "title": "b"}, {"id": 2, "title": "c",},]}'
    path = _write(tmp_path, "lenient.json", None, text)
    again, once, kept = _both(path, FieldMapping.build(), ReadOptions(lenient=True))
    assert kept and once == again and again[0][4]  # the record that names "title" twice is marked


def test_a_large_file_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks import source

    path = _write(tmp_path, "big.json", {"tasks": [{"id": i, "title": f"t{i}"} for i in range(50)]})
    monkeypatch.setattr(source, "KEEP_BYTES", 100)
    again, once, kept = _both(path, FieldMapping.build(), ReadOptions())
    assert not kept and once == again
