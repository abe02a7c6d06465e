"""The source reader as plain functions: malformed files fail with one line (and a position), the
variants Phase 1 CLIs wrote are accepted, and streaming keeps positions right."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tasks.mapping import FieldMapping
from tasks.source import SourceError, iter_chunks, iter_records, precheck

MALFORMED = {
    "empty": (b"", "file is empty"),
    "blank": (b"  \n\t ", "file is empty"),
    "truncated_value": (b'{"tasks": [{"id": 1, "title": "a"}, {"id": 2, "title": "b"', "truncated"),
    "truncated_array": (b'{"tasks": [{"id": 1, "title": "a"}, ', "truncated"),
    "missing_comma": (b'{"tasks": [{"id": 1, "title": "a"},\n {"id": 2 "title": "b"}]}', "line 2, column 11"),
    "not_utf8": (b'{"tasks": [{"id": 1, "title": "caf\xe9"}]}', "not UTF-8"),
    "utf16": ('{"tasks": []}'.encode("utf-16"), "UTF-16"),
    "nan": (b'{"tasks": [{"id": NaN}]}', "NaN"),
    "trailing_garbage": (b'{"tasks": []} {"tasks": []}', "unexpected data after the document"),
    "single_quotes": (b"{'tasks': []}", "a single-quoted string (a Python or JavaScript literal, not JSON)"),
    "python_literal": (b'[{"id": 1, "done": True}]', "a Python literal (JSON writes true, false, null)"),
    "raw_control_char": (b'{"tasks": [{"id": 1, "title": "a\x01b"}]}', "not valid JSON"),
    "line_comment": (
        b'{"tasks": [\n  {"id": 1, "title": "a"}, // the first one\n  {"id": 2}\n]}',
        "a comment, which JSON does not allow (--lenient-json accepts comments) (line 2",
    ),
    "block_comment": (b'/* my tasks */ {"tasks": []}', "a comment, which JSON does not allow"),
    "trailing_comma": (
        b'{"tasks": [\n  {"id": 1, "title": "a"},\n  {"id": 2, "title": "b"},\n]}',
        "a trailing comma, which JSON does not allow (--lenient-json accepts it) (line 4, column 1)",
    ),
    "trailing_comma_in_record": (b'[{"id": 1, "title": "a",}]', "a trailing comma"),
    "too_deep": (b'{"tasks": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", "nests too deeply"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_files_fail_with_one_line_naming_the_file(tmp_path: Path, name: str) -> None:
    data, expected = MALFORMED[name]
    path = tmp_path / f"{name}.json"
    path.write_bytes(data)
    with pytest.raises(SourceError) as err:
        precheck(path)
    message = str(err.value)
    assert message.startswith(str(path)), message
    assert expected in message
    assert "\n" not in message


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        precheck(tmp_path / "nope.json")
    with pytest.raises(SourceError, match="is a directory"):
        precheck(tmp_path)


def test_variants_are_accepted(tmp_path: Path) -> None:
    bare = tmp_path / "bare.json"
    bare.write_text('[{"id": 1, "title": "a", "completed": false}]')
    info = precheck(bare)
    assert (info.shape, info.records) == ("list", 1)
    bom = tmp_path / "bom.json"
    bom.write_bytes(b'\xef\xbb\xbf{"tasks": [{"id": 1}], "next_id": 2}')
    assert precheck(bom).records == 1
    empty = tmp_path / "empty_array.json"
    empty.write_text('{"tasks": []}')
    assert precheck(empty).records == 0
    renamed = tmp_path / "todos.json"
    renamed.write_text('{"next_id": 3, "todos": [{"id": 1}, {"id": 2}]}')
    assert precheck(renamed, FieldMapping.build(["todos=tasks"])).records == 2
    assert precheck(renamed).records == 2  # `todos` is a container's name too


@pytest.mark.parametrize(
    ("text", "records"),
    [
        ("{}", 0),
        ("[]", 0),
        ("42", 0),
        ("null", 0),
        ('"buy milk"', 1),
        ('{"version": 2, "settings": {"theme": "dark"}}', 0),
    ],
)
def test_every_valid_json_document_is_read(tmp_path: Path, text: str, records: int) -> None:
    path = tmp_path / "valid.json"
    path.write_text(text)
    assert precheck(path).records == records


def test_strict_wants_the_tasks_array(tmp_path: Path) -> None:
    path = tmp_path / "todos.json"
    path.write_text('{"todos": [], "next_id": 1}')
    with pytest.raises(SourceError, match=r"no 'tasks' array \(top-level keys: todos, next_id\)"):
        precheck(path, FieldMapping.build(strict=True))


def test_surrogate_escapes_are_decoded_exactly(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_bytes(b'{"tasks": [{"id": 1, "title": "a\\ud800b"}, {"id": 2, "title": "\\ud83d\\ude00"}]}')
    info = precheck(path)
    titles = [r["title"] for r in iter_records(info)]
    assert titles == ["a\ud800b", "\U0001f600"]  # the lone surrogate survives, the pair is one character


def test_duplicate_ids_and_chunk_positions(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('{"tasks": [' + ", ".join(f'{{"id": {i % 7}}}' for i in range(20)) + "]}")
    info = precheck(path)
    assert info.records == 20
    assert info.duplicate_keys == frozenset(range(7))
    chunks = list(iter_chunks(info, FieldMapping.build(), 6))
    assert [(c.no, c.first, len(c)) for c in chunks] == [(0, 0, 6), (1, 6, 6), (2, 12, 6), (3, 18, 2)]
    assert chunks[1].records[0] == {"id": 6}


def test_sha256_covers_the_whole_file(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "h.json"
    path.write_bytes(b'\xef\xbb\xbf{"tasks": [{"id": 1}]}')
    assert precheck(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def _tricky_records(n: int) -> list[dict]:
    """Records whose text holds what a block cut could be fooled by: `}, {` inside strings and
    nested arrays of objects, escapes, non-ASCII, fractions, big integers."""
    from decimal import Decimal

    out: list[dict] = []
    for i in range(1, n + 1):
        rec: dict = {"id": i, "title": f"t{i}", "completed": i % 2 == 0}
        if i % 3 == 0:
            rec["title"] = 'a"}, {"id": 0, "title": "b'
        if i % 4 == 0:
            rec["subtasks"] = [{"id": i, "done": True}, {"id": -i, "note": "x}, {y"}]
        if i % 5 == 0:
            rec["description"] = "caf\u00e9 \u2603 \\ \n tab\t"
        if i % 7 == 0:
            rec["estimate"] = Decimal("1.50")
            rec["big"] = 2**70
        out.append(rec)
    return out


def _dump(value: object, spread: bool) -> str:
    """Compact JSON with exact numbers; spread puts spaces after every comma (inside strings too:
    the expected records are decoded from the same text)."""
    from tasks.jsontext import dumps_exact

    text = dumps_exact(value, ascii_only=False)
    return text.replace(",", ",   ") if spread else text


@pytest.mark.parametrize("block", [64, 1000, 1 << 20])
@pytest.mark.parametrize("spread", [False, True])
def test_block_decoding_gives_exactly_what_the_whole_document_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int, spread: bool
) -> None:
    """Whatever the block size and layout, the streamed records equal the document decoded whole,
    including where a block's last `}, {` lies inside a string or a nested object."""
    import json
    from decimal import Decimal

    import tasks.source as source

    monkeypatch.setattr(source, "BLOCK", block)
    path = tmp_path / "tricky.json"
    path.write_text(
        _dump({"next_id": 301, "tasks": _tricky_records(300), "meta": {"v": [1, {"a": 2}]}}, spread)
    )
    whole = json.loads(path.read_text(), parse_float=Decimal)["tasks"]
    info = precheck(path)
    assert info.records == 300
    assert list(iter_records(info)) == whole
    assert [len(c) for c in iter_chunks(info, FieldMapping.build(), 7)] == [7] * 42 + [6]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda lines: lines.__setitem__(150, lines[150].replace('"id":150', '"id":NaN')), "line 151"),
        (
            lambda lines: lines.__setitem__(200, lines[200].rstrip(",")),
            "not valid JSON: expected ',' or ']', found '{' (line 202, column 1)",
        ),
        (lambda lines: lines.__setitem__(250, lines[250].replace('"t250"', '"t250')), "line 251"),
    ],
)
def test_an_error_inside_a_block_is_located_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: Any, expected: str
) -> None:

    import tasks.source as source

    monkeypatch.setattr(source, "BLOCK", 4096)
    lines = ['{"tasks": ['] + [_dump(r, False) + "," for r in _tricky_records(300)]
    lines[-1] = lines[-1].rstrip(",")
    lines.append("]}")
    damage(lines)
    path = tmp_path / "broken.json"
    path.write_text("\n".join(lines))
    with pytest.raises(SourceError) as err:
        precheck(path)
    assert expected in str(err.value), str(err.value)


def test_a_record_may_name_its_id_by_any_alias(tmp_path: Path) -> None:
    path = tmp_path / "aliases.json"
    path.write_text(
        '[{"key": 1}, {"id": 1}, {"key": null, "id": 2}, {"id": 2}, {"key": 3, "id": 3}, {"id": "4"}, {"task_id": 4}]'
    )
    # {"key": null, "id": 2}: the override names `key`, which is null, and `id` is kept aside: no key
    assert precheck(path, FieldMapping.build(["key=id"])).duplicate_keys == frozenset({1, 4})


def test_a_repeated_tasks_key_loses_no_records(tmp_path: Path) -> None:
    path = tmp_path / "twice.json"
    path.write_text('{"tasks": [{"id": 1}], "next_id": 3, "tasks": [{"id": 2}]}')
    info = precheck(path)
    assert info.records == 2
    assert list(iter_records(info)) == [{"id": 1}, {"id": 2}]


@pytest.mark.parametrize("n", [5, 200])  # a batch marked one by one, and one marked with numpy
def test_ids_beyond_64_bits_are_found_twice_like_any_other(tmp_path: Path, n: int) -> None:
    from tasks.conversions import key_hash

    big = 2**70
    records = [{"id": i, "title": f"t{i}"} for i in range(1, n)] + [{"id": big, "title": "a"}] * 2
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(records))
    info = precheck(path)
    assert info.records == n + 1
    assert info.duplicate_keys == {key_hash(str(big))}


@pytest.mark.parametrize(
    "text",
    [
        '{"tasks": [{"id": 1}, {"id": 2, "sub": [{"a": 1}]}, {"id": 3}]}',
        '[{"id": 1}, {"id": 2}, {"id": 3}  ]',
        '{"tasks": [{"id": 1}, {"id": 2}, {"id": 3}], "next_id": 4}',
        # a `}]` after the array: the cut at the array's end does not decode, the others take over
        '{"tasks": [{"id": 1}, {"id": 2}, {"id": 3}], "meta": [{"note": "x}]"}]}',
    ],
)
def test_a_small_files_array_is_decoded_in_one_call(tmp_path: Path, text: str) -> None:
    """Once the whole file is read, an array's objects up to its `]` are one batch (a file of a
    fleet costs one decode, not its last object apart), and give what the document holds."""
    from tasks.source import ReadOptions, checked_batches

    path = tmp_path / "tasks.json"
    path.write_text(text)
    info, batches = checked_batches(path, FieldMapping.build(), ReadOptions(), 0)
    kept = list(batches)
    assert [r for b in kept for r in b.records] == (json.loads(text)["tasks"] if text[0] == "{" else json.loads(text))
    assert info.records == 3
    assert len(kept) == (2 if '"meta"' in text else 1)


def test_the_load_watches_for_repeated_keys_only_where_the_pre_check_saw_one(tmp_path: Path) -> None:
    """The load decodes a file without the per-object watch for keys named twice only when its
    pre-check saw none anywhere in it; otherwise the record that names one is marked as before."""
    from tasks.source import iter_batches

    clean, twice = tmp_path / "clean.json", tmp_path / "twice.json"
    clean.write_text('{"tasks": [{"id": 1, "title": "a"}, {"id": 2, "title": "b"}]}')
    twice.write_text('{"tasks": [{"id": 1, "title": "a"}, {"id": 2, "title": "b", "title": "c"}]}')
    assert precheck(clean).repeated_keys is False
    info = precheck(twice)
    assert info.repeated_keys is True
    batches = list(iter_batches(info, FieldMapping.build()))
    assert [b.repeated for b in batches if b.repeated] == [{1: (["title"], '{"id":2,"title":"b","title":"c"}')}]
