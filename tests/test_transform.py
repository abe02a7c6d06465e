"""Mapping, validation and transform as plain functions (no database, no Prefect)."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest

from tasks.mapping import FieldMapping, MappingError, read_owner_map, split_records
from tasks.transform import (
    PROJECT_NAMESPACE,
    DuplicateTracker,
    TransformContext,
    dumps_exact,
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
    dups: frozenset[int] = frozenset(),
):
    mapping = mapping or FieldMapping.build()
    return transform_chunk(0, split_records(records, 0, mapping), ctx, DuplicateTracker(dups))


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
    assert out.rows.legacy_ids == [1, 2]
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
                "completed": "yes",
                "created_at": "last tuesday",
                "owner": "nobody",
            }
        ]
    )
    assert len(out.rows) == 0
    (entry,) = out.quarantine
    assert set(entry.reasons) == {
        "id must be an integer (got string)",
        "title is longer than 200 characters",
        "completed must be true or false (got string)",
        "created_at is not an ISO-8601 timestamp",
        "owner is not an email address",
    }
    assert json.loads(entry.raw)["title"] == long_title  # kept whole


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"id": 1, "title": "a\x00b", "completed": False}, "title contains a NUL"),
        (
            {"id": 1, "title": "ok", "description": "a\ud800", "completed": False},
            "description contains a NUL or an unpaired surrogate",
        ),
        ({"id": 1, "title": "   ", "completed": False}, "title is empty"),
        ({"id": 0, "title": "a", "completed": False}, "id must be between 1 and 2147483647"),
        ({"id": 2**31, "title": "a", "completed": False}, "id must be between 1 and 2147483647"),
        ({"id": True, "title": "a", "completed": False}, "id must be an integer (got boolean)"),
        ({"id": 1, "title": "a"}, "completed is missing"),
        ({"title": "a", "completed": True}, "id is missing"),
        ({"id": 1, "title": "a", "completed": 1}, "completed must be true or false (got integer)"),
        ([1, 2], "record is not a JSON object (got array)"),
        (
            {"id": 1, "title": "a", "completed": True, "is_completed": False},
            "'completed' and 'is_completed' both give completed",
        ),
    ],
)
def test_unstorable_or_wrong_values_are_quarantined(record, reason: str) -> None:
    out = run([record])
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
                "tags": ["x", "é"],
            }
        ]
    )
    assert out.rows.extras == ['{"priority":"high","score":1.50,"tags":["x","é"]}']
    assert dumps_exact({"big": Decimal("1E+400")}, ascii_only=True) == '{"big":1E+400}'


def test_mapping_overrides_and_errors() -> None:
    m = FieldMapping.build(["state=completed", "items=tasks"])
    out = run([{"id": 1, "title": "a", "state": True}], mapping=m)
    assert out.rows.completed == [True]
    assert m.array_keys == ("items", "tasks")
    assert m.describe({"id", "title", "state", "x"})["applied"] == {
        "id": "id",
        "state": "completed",
        "title": "title",
    }
    with pytest.raises(MappingError, match="unknown target"):
        FieldMapping.build(["a=nope"])
    with pytest.raises(MappingError, match="SOURCE=TARGET"):
        FieldMapping.build(["nonsense"])


def test_keys_are_deterministic_uuid5() -> None:
    assert task_key("phase1", 42) == uuid.uuid5(PROJECT_NAMESPACE, "phase1:42").hex
    assert task_key("phase1", 42) != task_key("laptop", 42)
    ids = [1, 7, 42, 2**31 - 1]  # a batch continues one hash state: each key must still be its own
    assert task_keys("café", ids) == [uuid.uuid5(PROJECT_NAMESPACE, f"café:{i}").hex for i in ids]
    assert user_key("Ana@Example.com") == uuid.uuid5(PROJECT_NAMESPACE, "user:Ana@Example.com").hex


def test_duplicates_identical_count_conflicting_quarantine() -> None:
    recs = [
        {"id": 1, "title": "a", "completed": False},
        {"id": 1, "title": "a", "completed": False},
        {"id": 1, "title": "changed", "completed": False},
    ]
    out = run(recs, dups=frozenset({1}))
    assert (len(out.rows), out.duplicates, len(out.quarantine)) == (1, 1, 1)
    assert out.quarantine[0].position == 2
    assert out.quarantine[0].reasons[0].startswith("conflicting duplicate")


def test_first_valid_copy_wins_over_an_invalid_one() -> None:
    out = run(
        [{"id": 1, "title": "", "completed": False}, {"id": 1, "title": "ok", "completed": False}],
        dups=frozenset({1}),
    )
    assert out.rows.positions == [1]
    assert out.quarantine[0].position == 0


def test_owners_default_record_and_map(tmp_path) -> None:
    csv = tmp_path / "owners.csv"
    csv.write_text("legacy_id,email\n3,Boss@Example.com\n")
    ctx = TransformContext("phase1", "default@example.com", CTX.fallback_timestamp, read_owner_map(csv))
    out = run(
        [
            {"id": 1, "title": "a", "completed": False},
            {"id": 2, "title": "b", "completed": False, "user_email": "Sam@Example.com "},
            {"id": 3, "title": "c", "completed": False, "owner": "sam@example.com"},
        ],
        ctx=ctx,
    )
    assert out.rows.owners == ["default@example.com", "sam@example.com", "boss@example.com"]


def test_owner_map_errors(tmp_path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,mail\n1,a@b.c\n")
    with pytest.raises(MappingError, match="legacy_id and email"):
        read_owner_map(bad)
    bad.write_text("legacy_id,email\nx,a@b.c\n")
    with pytest.raises(MappingError, match="line 2"):
        read_owner_map(bad)
    with pytest.raises(MappingError, match="no such file"):
        read_owner_map(tmp_path / "none.csv")


def test_render_is_csv_with_the_run_id_and_exact_checksums() -> None:
    out = run([{"id": 1, "title": 'say "hi",\nnow', "description": None, "completed": True}])
    rendered = render(
        out.rows, "phase1", {"default@example.com": "ab" * 16}, "11111111-1111-1111-1111-111111111111"
    )
    text = rendered.csv.decode()
    assert text.startswith(task_key("phase1", 1) + "," + "ab" * 16 + ',"phase1",1,"say ""hi"",\nnow",,t,')
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
    assert together.rows.legacy_ids == [1, 2, 4, 5, 6, 7]
    assert together.rows.positions == [0, 2, 4, 5, 6, 8]
    for name in ("titles", "completed", "created_at", "extras", "owners", "legacy_ids"):
        assert getattr(together.rows, name) == [v for one in alone for v in getattr(one.rows, name)]
    assert [(q.position, q.reasons) for q in together.quarantine] == [
        (p, q.reasons) for p, one in enumerate(alone) for q in one.quarantine
    ]
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


def test_pandera_sees_only_the_columns_a_chunk_has() -> None:
    """A nullable column that is null throughout a chunk is left out of the frame (nothing to
    check there); a required one stays, and its nulls fail as missing."""
    from validation.records import frame, validate

    columns = {
        "id": [1, 2],
        "title": [None, None],
        "description": [None, None],
        "completed": [True, "yes"],
        "created_at": [None, "not a time"],
        "updated_at": [None, None],
        "owner": [None, None],
    }
    df = frame(columns)
    assert list(df.columns) == ["id", "title", "completed", "created_at"]
    assert validate(df) == {
        0: ["title is missing"],
        1: [
            "title is missing",
            "completed must be true or false (got string)",
            "created_at is not an ISO-8601 timestamp",
        ],
    }
