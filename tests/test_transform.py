"""Mapping, validation and transform as plain functions (no database, no Prefect)."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from decimal import Decimal

import numpy as np
import pytest

from tasks.conversions import key_hash
from tasks.jsontext import dumps_exact
from tasks.mapping import FieldMapping, MappingError, read_owner_map, split_records
from tasks.shapes import Batch, Group
from tasks.source import Chunk
from tasks.transform import (
    PROJECT_NAMESPACE,
    FileState,
    TransformContext,
    render,
    task_key,
    task_keys,
    transform_chunk,
    user_key,
)

CTX = TransformContext("phase1", "default@example.com", "2026-01-01T00:00:00.000000Z", {})


def run(
    records: list,
    ctx: TransformContext = CTX,
    mapping: FieldMapping | None = None,
    dups: frozenset = frozenset(),
    day_first: dict | None = None,
):
    """One chunk of records through mapping, conversion, validation and transform."""
    mapping = mapping or FieldMapping.build()
    ctx = replace(ctx, mapping=mapping)
    chunk = Chunk(0, 0, [Batch(Group("$.tasks", "tasks"), 0, records)])
    state = FileState(frozenset(key_hash(str(d)) for d in dups), frozenset(), day_first)
    return transform_chunk(chunk, split_records(records, 0, mapping), ctx, state)


STRICT = FieldMapping.build(strict=True)


def test_valid_records_become_rows_with_their_own_created_at() -> None:
    out = run(
        [
            {
                "id": 1,
                "title": "a",
                "description": "d",
                "completed": False,
                "created_at": "2025-03-14T09:26:53+02:00",
            },
            {"id": 2, "title": "b", "description": None, "is_completed": True},
        ]
    )
    assert out.quarantine == []
    assert (out.rows.legacy_keys, out.rows.legacy_ids) == (["1", "2"], [1, 2])
    assert out.rows.completed == [False, True]
    assert out.rows.created_at == ["2025-03-14T07:26:53.000000Z", CTX.fallback_timestamp]
    assert out.rows.updated_at == out.rows.created_at


def test_every_reason_is_collected_and_nothing_is_cut() -> None:
    long_title = "x" * 5000
    out = run(
        [
            {
                "id": "7",
                "title": long_title,
                "completed": "maybe",
                "created_at": "last tuesday",
            }
        ]
    )
    assert len(out.rows) == 0
    (entry,) = out.quarantine
    assert set(entry.reasons) == {
        "title is longer than 200 characters (title: 5,000 characters)",
        'completed is not true or false (completed: "maybe")',
        'created_at is not a date or time in a known format (created_at: "last tuesday")',
    }
    assert json.loads(entry.raw)["title"] == long_title  # kept whole
    assert entry.location == "$.tasks[0]"


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"id": 1, "title": "a\x00b", "completed": False}, "title contains a NUL"),
        (
            {"id": 1, "title": "ok", "description": "a\ud800", "completed": False},
            "description contains a NUL or an unpaired surrogate",
        ),
        ({"id": 1, "title": "   ", "completed": False}, "title is empty"),
        ({"id": True, "title": "a", "completed": False}, "id is not a number or a string (id: true)"),
        ({"id": [1], "title": "a", "completed": False}, "id is not a number or a string"),
        ({"id": "x" * 201, "title": "a", "completed": False}, "id is longer than 200 characters"),
        (
            {"id": 1, "completed": False},
            "title is missing (the record has no title or name or task or text key)",
        ),
        ({"id": 1, "text": 5, "completed": False}, "title must be a string (got integer) (text: 5)"),
        ([1, 2], "record is not a JSON object (got array)"),
        (7, "record is not a JSON object (got integer)"),
        (
            {"id": 1, "title": "a", "completed": True, "is_completed": False},
            "'completed' and 'is_completed' both give completed",
        ),
        (
            {"id": 1, "title": "a", "status": "cancelled"},
            "completed cannot be told: the status is not a known word",
        ),
        (
            {"id": 1, "title": "a", "done": False, "status": "done"},
            'completed disagrees with status (done: false, status: "done")',
        ),
        ({"id": 1, "title": "a", "created": 42}, "created_at is a number that is not a plausible Unix time"),
        ({"id": 1, "title": "a", "date": "03/04/2024"}, "created_at is ambiguous"),
    ],
)
def test_what_does_not_convert_is_quarantined_with_key_and_value(record, reason: str) -> None:
    out = run([record])
    assert len(out.rows) == 0
    assert any(r.startswith(reason) for r in out.quarantine[0].reasons), out.quarantine[0].reasons


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"id": 1, "title": "a"}, "completed is missing"),
        ({"title": "a", "completed": True}, "id is missing"),
        ({"id": 1, "title": "a", "completed": 1}, "completed must be true or false (completed: 1)"),
        ({"id": "9", "title": "a", "completed": True}, 'id must be an integer (id: "9")'),
        ({"id": 0, "title": "a", "completed": True}, "id must be between 1 and 2147483647"),
        ({"id": 1, "text": "a", "completed": True}, "title is missing"),
        ({"id": 1, "title": "a", "completed": True, "created_at": "2024-03-05"}, None),
        (
            {"id": 1, "title": "a", "completed": True, "created_at": "05/03/2024"},
            "created_at is not an ISO-8601",
        ),
        (
            {"id": 1, "title": "a", "completed": True, "owner": "sam"},
            'owner is not an email address (owner: "sam")',
        ),
    ],
)
def test_strict_infers_nothing(record, reason: str | None) -> None:
    out = run([record], mapping=STRICT)
    if reason is None:
        assert len(out.rows) == 1 and not out.quarantine
        return
    assert len(out.rows) == 0
    assert any(r.startswith(reason) for r in out.quarantine[0].reasons), out.quarantine[0].reasons


def test_unknown_fields_are_kept_exactly_in_legacy_extra() -> None:
    out = run(
        [
            {
                "id": 1,
                "title": "a",
                "completed": False,
                "priority": "high",
                "score": Decimal("1.50"),
                "tags": ["x", "é", "two words"],
            }
        ]
    )
    assert out.rows.extras == ['{"score":1.50}']
    assert (out.rows.priorities, out.rows.tags) == (["high"], ['{x,é,"two words"}'])
    assert dumps_exact({"big": Decimal("1E+400")}, ascii_only=True) == '{"big":1E+400}'


def test_values_that_do_not_fit_a_column_stay_in_legacy_extra() -> None:
    out = run(
        [
            {"id": 1, "title": "a", "completed": False, "priority": 3, "tags": "work,home"},
            {"id": 2, "title": "b", "completed": False, "priority": "High", "tags": ["ok", 5]},
            {"id": 3, "title": "c", "completed": False, "notes": ["line 1", "line 2"]},
        ]
    )
    assert out.rows.priorities == ["medium", "high", "medium"]
    assert out.rows.tags == ["{work,home}", "{}", "{}"]  # comma-separated text is split, and kept
    assert out.rows.descriptions == [None, None, None]
    assert [json.loads(e) for e in out.rows.extras] == [
        {"priority": 3, "tags": "work,home"},
        {"priority": "High", "tags": ["ok", 5]},
        {"notes": ["line 1", "line 2"]},
    ]


def test_conversions_keep_the_original_and_name_their_rule() -> None:
    out = run(
        [
            {
                "id": "3f2a9c1e-0000-4000-8000-000000000001",
                "text": "a",
                "status": "In-Progress",
                "createdAt": 1709632800,
            },
            {"id": "7", "task": "b", "done": "yes", "created": "2024-03-05 10:00:00"},
            {"id": 1709632800123, "name": "c", "isCompleted": 1, "timestamp": 1709632800123},
            {"ID": 4, "Title": "d", "Done": True, "CreatedAt": "2024-03-05T10:00:00.123456789+01:00"},
            {"description": "only text", "status": "done", "date": "2024-03-05"},
        ]
    )
    rows = out.rows
    assert not out.quarantine
    assert rows.legacy_keys[:4] == ["3f2a9c1e-0000-4000-8000-000000000001", "7", "1709632800123", "4"]
    assert rows.legacy_keys[4].startswith("~")
    assert rows.legacy_ids == [None, 7, None, 4, None]
    assert rows.titles == ["a", "b", "c", "d", "only text"]
    assert rows.descriptions == [None] * 5
    assert rows.completed == [False, True, True, True, True]
    assert rows.created_at == [
        "2024-03-05T10:00:00.000000Z",
        "2024-03-05T10:00:00.000000Z",
        "2024-03-05T10:00:00.123000Z",
        "2024-03-05T09:00:00.123456Z",
        "2024-03-05T00:00:00.000000Z",
    ]
    extras = [json.loads(e) if e else None for e in rows.extras]
    assert extras[0] == {"status": "In-Progress", "createdAt": 1709632800}  # the status and the Unix time
    assert extras[1] == {"done": "yes"}  # "2024-03-05 10:00:00" is ISO 8601 read as UTC: as is
    assert extras[2] == {"isCompleted": 1, "timestamp": 1709632800123}
    assert extras[3] == {"CreatedAt": "2024-03-05T10:00:00.123456789+01:00"}  # finer than microseconds
    assert extras[4] == {"status": "done", "date": "2024-03-05"}
    assert out.rules["completed <- status (status words)"] == 2
    assert out.rules["title <- description (the only text)"] == 1
    assert out.rules["created_at <- createdAt (Unix time)"] == 1
    assert out.defaults["id"] == 1


def test_an_owner_that_is_no_email_goes_to_the_default_owner_and_is_kept() -> None:
    out = run([{"id": 1, "title": "a", "owner": "sam"}, {"id": 2, "title": "b", "owner": "Ann@Example.com"}])
    assert out.rows.owners == ["default@example.com", "ann@example.com"]
    assert json.loads(out.rows.extras[0]) == {"owner": "sam"} and out.defaults["owner"] == 1
    assert json.loads(out.rows.extras[1]) == {"owner": "Ann@Example.com"}  # its form changed: kept as written


def test_defaults_are_counted_by_rule() -> None:
    out = run([{"id": 1, "title": "a"}, {"id": 2, "title": "b", "completed": None}])
    assert out.rows.completed == [False, False]
    assert out.defaults["completed"] == 1
    assert out.rules["completed <- completed (null read as not done)"] == 1
    assert out.defaults["created_at"] == 2 and out.defaults["updated_at"] == 2


def test_day_and_month_as_the_file_settles_them() -> None:
    records = [{"id": 1, "title": "a", "completed": False, "date": "03/04/2024"}]
    assert run(records, day_first={"created_at": True}).rows.created_at == ["2024-04-03T00:00:00.000000Z"]
    assert run(records, day_first={"created_at": False}).rows.created_at == ["2024-03-04T00:00:00.000000Z"]
    assert run(records).quarantine  # not settled: never a guess
    alone = [{"id": 1, "title": "a", "completed": False, "date": "25/04/2024 2:30 PM"}]
    assert run(alone).rows.created_at == ["2024-04-25T14:30:00.000000Z"]  # unambiguous on its own


def test_mapping_overrides_and_errors() -> None:
    m = FieldMapping.build(["state=completed", "items=tasks", "date=due_date"])
    out = run([{"id": 1, "title": "a", "state": True, "date": "2024-03-05"}], mapping=m)
    assert out.rows.completed == [True]
    assert out.rows.created_at == [CTX.fallback_timestamp]  # date is a due date here, kept
    assert json.loads(out.rows.extras[0]) == {"date": "2024-03-05"}
    assert m.container == ("items",)
    with pytest.raises(MappingError, match="unknown target"):
        FieldMapping.build(["a=nope"])
    with pytest.raises(MappingError, match="SOURCE=TARGET"):
        FieldMapping.build(["nonsense"])


def test_a_mapping_file_extends_the_table(tmp_path) -> None:
    path = tmp_path / "mapping.yaml"
    path.write_text(
        "fields:\n  what: title\nvocabulary:\n  statuses: {cancelled: true}\n"
        "  time_formats: ['%d.%m.%y']\ndates: day-first\n"
    )
    m = FieldMapping.build(mapping_file=str(path))
    out = run(
        [
            {"id": 1, "what": "a", "status": "cancelled", "created": "05.03.24"},
            {"id": 2, "what": "b", "status": "todo", "created": "05/03/2024"},
        ],
        mapping=m,
        day_first={"created_at": True},
    )
    assert not out.quarantine
    assert out.rows.completed == [True, False]
    assert out.rows.created_at == ["2024-03-05T00:00:00.000000Z", "2024-03-05T00:00:00.000000Z"]
    path.write_text("fields: [a]\n")
    with pytest.raises(MappingError, match="fields: expected SOURCE_KEY: TARGET"):
        FieldMapping.build(mapping_file=str(path))
    path.write_text("vocabulary:\n  statuses: {cancelled: maybe}\n")
    with pytest.raises(MappingError, match="expected true"):
        FieldMapping.build(mapping_file=str(path))
    path.write_text("fields: {a: b\n")
    with pytest.raises(MappingError, match="not valid YAML at line"):
        FieldMapping.build(mapping_file=str(path))


def test_keys_are_deterministic_uuid5() -> None:
    assert task_key("phase1", 42) == uuid.uuid5(PROJECT_NAMESPACE, "phase1:42").hex
    assert task_key("phase1", 42) != task_key("laptop", 42)
    ids = [1, 7, 42, 2**31 - 1]  # a batch continues one hash state: each key must still be its own
    assert task_keys("café", ids) == [uuid.uuid5(PROJECT_NAMESPACE, f"café:{i}").hex for i in ids]
    assert user_key("Ana@Example.com") == uuid.uuid5(PROJECT_NAMESPACE, "user:Ana@Example.com").hex


def test_rows_of_many_files_get_the_uuid5_of_their_own_source() -> None:
    """A chunk of a fleet mixes files: each row's key is the one its own source alone gives."""
    from tasks.transform import _keys_by_source

    sources = ["u/a@x.org/tasks.json", "u/b@x.org/tasks.json", "u/a@x.org/tasks.json", "ü/tasks.json"]
    keys = ["1", "1", "2", "\ud800"]  # a lone surrogate too, as a Phase 1 file may hold one
    found = _keys_by_source(sources, keys)
    assert found == [task_key(s, k) for s, k in zip(sources, keys, strict=True)]
    assert found[:3] == [uuid.uuid5(PROJECT_NAMESPACE, f"{s}:{k}").hex for s, k in zip(sources[:3], keys[:3], strict=True)]


def test_duplicates_identical_count_conflicting_quarantine() -> None:
    recs = [
        {"id": 1, "title": "a", "completed": False},
        {"id": "1", "title": "a", "completed": False},  # the same id, written as a string
        {"id": 1, "title": "changed", "completed": False},
    ]
    out = run(recs, dups=frozenset({1}))
    assert (len(out.rows), out.duplicates, len(out.quarantine)) == (1, 1, 1)
    assert out.quarantine[0].position == 2
    assert out.quarantine[0].reasons[0].startswith("conflicting duplicate")
    assert out.quarantine[0].location == "$.tasks[2]"


def test_records_without_an_id_are_never_merged() -> None:
    from tasks.conversions import content_hash
    from tasks.inference import identity_context

    milk = {"title": "Buy milk", "done": False}
    mapping = FieldMapping.build()
    chunk = Chunk(0, 0, [Batch(Group("$", ""), 0, [milk, dict(milk), {"title": "Bread"}])])
    repeated = frozenset({content_hash(milk, identity_context(Group("$", "")))})
    state = FileState(frozenset(), repeated)
    out = transform_chunk(
        chunk, split_records(chunk.records, 0, mapping), replace(CTX, mapping=mapping), state
    )
    keys = out.rows.legacy_keys
    assert len(set(keys)) == 3 and keys[1] == keys[0] + ".2"
    again = transform_chunk(
        chunk,
        split_records(chunk.records, 0, mapping),
        replace(CTX, mapping=mapping),
        FileState(frozenset(), repeated),
    )
    assert again.rows.legacy_keys == keys  # deterministic for the same file


def test_first_valid_copy_wins_over_an_invalid_one() -> None:
    out = run(
        [{"id": 1, "title": "", "completed": False}, {"id": 1, "title": "ok", "completed": False}],
        dups=frozenset({1}),
    )
    assert out.rows.positions == [1]
    assert out.quarantine[0].position == 0


def test_owners_default_record_and_map(tmp_path) -> None:
    csv = tmp_path / "owners.csv"
    csv.write_text("legacy_id,email\n3,Boss@Example.com\nabc-1,ann@example.com\n")
    ctx = TransformContext("phase1", "default@example.com", CTX.fallback_timestamp, read_owner_map(csv))
    out = run(
        [
            {"id": 1, "title": "a", "completed": False},
            {"id": 2, "title": "b", "completed": False, "user_email": "Sam@Example.com "},
            {"id": 3, "title": "c", "completed": False, "owner": "sam@example.com"},
            {"id": "abc-1", "title": "d", "completed": False},
        ],
        ctx=ctx,
    )
    assert out.rows.owners == [
        "default@example.com",
        "sam@example.com",
        "boss@example.com",
        "ann@example.com",
    ]


def test_owner_map_errors(tmp_path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,mail\n1,a@b.c\n")
    with pytest.raises(MappingError, match="legacy_id and email"):
        read_owner_map(bad)
    bad.write_text("legacy_id,email\n,a@b.c\n")
    with pytest.raises(MappingError, match="line 2: legacy_id is empty"):
        read_owner_map(bad)
    with pytest.raises(MappingError, match="no such file"):
        read_owner_map(tmp_path / "none.csv")


def test_render_is_csv_with_the_run_id_and_exact_checksums() -> None:
    out = run([{"id": 1, "title": 'say "hi",\nnow', "description": None, "completed": True}])
    rendered = render(
        out.rows, "phase1", {"default@example.com": "ab" * 16}, "11111111-1111-1111-1111-111111111111"
    )
    text = rendered.csv.decode()
    assert text.startswith(task_key("phase1", 1) + "," + "ab" * 16 + ',"phase1","1",1,"say ""hi"",\nnow",,done,')
    assert ',"medium","{}",' in text
    assert text.endswith(",11111111-1111-1111-1111-111111111111\n")
    assert rendered.checksum == sum(rendered.checksums) and rendered.count == 1


def test_one_chunk_of_mixed_shapes_is_split_record_by_record() -> None:
    """Columns are gathered per group of records sharing their keys; the result must be what each
    record gives on its own, whatever mix of shapes, non-objects, clashes and extras a chunk holds."""
    records = [
        {"id": 1, "title": "a", "completed": False},
        ["not", "an", "object"],
        {"task_id": 2, "title": "b", "is_done": True, "color": "red"},
        {"id": 3, "title": "c", "completed": True, "done": False},  # clash: quarantined
        {"id": 4, "title": "d", "completed": True, "done": True},  # agreeing aliases
        {"title": "e", "id": 5, "completed": False, "created_at": "2025-01-02T03:04:05Z"},
        {"id": 6, "title": "f", "completed": False},
        "text",
        {"id": 7, "title": "g", "is_done": False, "color": "blue", "size": 3},
    ]
    together = run(records)
    alone = [run([r]) for r in records]
    assert together.rows.legacy_ids == [1, 2, 4, 5, 6, None, 7]
    assert together.rows.positions == [0, 2, 4, 5, 6, 7, 8]
    for name in ("titles", "completed", "created_at", "extras", "owners", "legacy_keys"):
        assert getattr(together.rows, name) == [v for one in alone for v in getattr(one.rows, name)]
    assert [q.reasons for q in together.quarantine] == [q.reasons for one in alone for q in one.quarantine]
    assert together.quarantine[1].reasons == [
        "'completed' and 'done' both give completed with different values"
    ]
    assert together.keys_seen == {
        "id",
        "task_id",
        "title",
        "completed",
        "is_done",
        "done",
        "color",
        "created_at",
        "size",
    }


def test_keys_are_deterministic_uuid5_for_any_id() -> None:
    assert task_key("phase1", "abc") == uuid.uuid5(PROJECT_NAMESPACE, "phase1:abc").hex
    assert task_key("phase1", 5) == task_key("phase1", "5")


def test_the_schema_leaves_a_missing_value_to_nullable_and_judges_every_other_value_of_a_column() -> None:
    """The checks see missing values (pandera does not drop them first): None passes every check
    of a nullable column and is only "missing" in one that is not; any other value is judged, in a
    column of one type or of many."""
    from validation.records import frame, validate

    found = validate(
        frame(
            {
                "legacy_key": ["a", None, 7, "k" * 201],
                "title": ["ok", None, "", 5],
                "description": [None, "fine", ["x"], "nul\x00"],
                "completed": [True, None, 1, False],
                "owner": [None, "a@b.io", "nobody", None],
                "priority": ["low", "high", None, "urgent"],
            }
        )
    )
    assert found == {
        1: [("title", "is missing"), ("completed", "is missing")],
        2: [
            ("legacy_key", "must be a string (got integer)"),
            ("title", "is empty"),
            ("description", "must be a string (got array)"),
            ("completed", "must be true or false (got integer)"),
            ("owner", "is not an email address"),
            ("priority", "is missing"),
        ],
        3: [
            ("legacy_key", "is longer than 200 characters"),
            ("title", "must be a string (got integer)"),
            ("description", "contains a NUL or an unpaired surrogate, which PostgreSQL cannot store"),
            ("priority", "is not low, medium or high"),
        ],
    }
    assert validate(frame({"title": ["a", "b"], "completed": [True, False], "priority": ["low", "low"]})) == {}
    # exactly a bool: numpy's is not, in a column of one kind as in a mixed one
    numpy_bool = np.bool_(True)
    assert validate(frame({"title": ["a", "b"], "completed": [numpy_bool, True], "priority": ["low", "low"]})) == {
        0: [("completed", "must be true or false (got number)")]
    }
