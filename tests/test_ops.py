"""Every schema-change operation through the shared cycle (tests/ops_cycle.py): each case says only
what is special about its operation."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from migrations.ops.add_check import AddCheck
from migrations.ops.add_column import AddColumn
from migrations.ops.add_foreign_key import AddForeignKey
from migrations.ops.add_unique import AddUnique
from migrations.ops.alter_column import AlterColumn
from migrations.ops.create_index import CreateIndex
from migrations.ops.create_table import CreateTable
from migrations.ops.drop_column import DropColumn
from migrations.ops.drop_index import DropIndex
from migrations.ops.raw_sql import RawSQL
from migrations.ops.rename_column import RenameColumn
from migrations.ops.rename_table import RenameTable
from migrations.ops.set_not_null import SetNotNull
from tests.ops_cycle import NEW, Case, Version, cycle, one, rollback_cycle


def refused(url: str, statement: str, revision: str = NEW) -> bool:
    try:
        one(url, statement + " RETURNING 1", revision=revision)
    except psycopg.errors.IntegrityError:
        return True
    return False


def validated(name: str):
    return lambda url: one(url, "SELECT convalidated FROM pg_constraint WHERE conname = %s", name)


def check(predicate):
    def hook(url: str) -> None:
        assert predicate(url)

    return hook


def column_exists(table: str, column: str):
    return lambda url: bool(
        one(url, "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name = %s AND column_name = %s", table, column)
    )  # fmt: skip


CASES = {
    "add_column": Case(
        [AddColumn("items", sa.Column("size", sa.Integer), default="1", backfill="2", not_null=True)],
        new=Version(
            "INSERT INTO items (id, name, size) VALUES (%(id)s, 'w' || %(id)s, 7)",
            "SELECT size FROM items WHERE id = %(id)s",
        ),
        new_sees_old=lambda i: 1,  # the default, for the previous version's inserts
        after_complete=check(
            lambda url: (
                one(url, "SELECT count(*) FROM items WHERE size = 2") == 500
                and one(
                    url,
                    "SELECT attnotnull FROM pg_attribute WHERE attname = 'size' AND attrelid = 'items'::regclass",
                )
            )
        ),
        after_rollback=check(lambda url: not column_exists("items", "size")(url)),
    ),
    "drop_column": Case(
        [DropColumn("items", sa.Column("name", sa.Text), down="'(dropped)'")],
        new=Version(
            "INSERT INTO items (id, done) VALUES (%(id)s, true)", "SELECT done FROM items WHERE id = %(id)s"
        ),
        new_sees_old=lambda i: False,
        old_sees_new=lambda i: "(dropped)",  # the previous version still reads it, filled by `down`
        after_start=check(column_exists("items", "name")),
        after_complete=check(lambda url: not column_exists("items", "name")(url)),
    ),
    "rename_column": Case(
        [RenameColumn("items", "name", "label")],
        new=Version(
            "INSERT INTO items (id, label) VALUES (%(id)s, 'w' || %(id)s)",
            "SELECT label FROM items WHERE id = %(id)s",
        ),
        after_complete=check(column_exists("items", "label")),
    ),
    "alter_column": Case(
        [
            AlterColumn(
                "items",
                sa.Column("done", sa.Boolean, nullable=False, server_default=sa.false()),
                sa.Column("state", sa.Text, nullable=False, server_default=sa.text("'open'")),
                up="CASE WHEN done THEN 'closed' ELSE 'open' END",
                down="state = 'closed'",
            )
        ],
        old=Version(
            "INSERT INTO items (id, name, done) VALUES (%(id)s, 'w', %(id)s %% 2 = 0)",
            "SELECT done FROM items WHERE id = %(id)s",
        ),
        new=Version(
            "INSERT INTO items (id, name, state) VALUES (%(id)s, 'w', "
            "CASE WHEN %(id)s %% 2 = 0 THEN 'closed' ELSE 'open' END)",
            "SELECT state FROM items WHERE id = %(id)s",
        ),
        new_sees_old=lambda i: "closed" if i % 2 == 0 else "open",
        old_sees_new=lambda i: i % 2 == 0,
        old_update="UPDATE items SET done = NOT done WHERE id = %(id)s",
        new_sees_old_update=lambda i: "open" if i % 2 == 0 else "closed",
        new_update="UPDATE items SET state = CASE state WHEN 'closed' THEN 'open' ELSE 'closed' END WHERE id = %(id)s",
        old_sees_new_update=lambda i: i % 2 != 0,
        after_complete=check(
            lambda url: (
                one(url, "SELECT count(*) FROM items WHERE state = 'closed' AND id <= 500") == 250
                and not column_exists("items", "done")(url)
            )
        ),
    ),
    "change_type_keeping_the_name": Case(
        [
            AlterColumn(
                "items",
                sa.Column("owner", sa.BigInteger),
                sa.Column("owner", sa.Text),
                up="'o' || owner",
                down="substr(owner, 2)::bigint",
            )
        ],
        old=Version(
            "INSERT INTO items (id, owner) VALUES (%(id)s, %(id)s)",
            "SELECT owner FROM items WHERE id = %(id)s",
        ),
        new=Version(
            "INSERT INTO items (id, owner) VALUES (%(id)s, 'o' || %(id)s)",
            "SELECT owner FROM items WHERE id = %(id)s",
        ),
        new_sees_old=lambda i: f"o{i}",
        old_sees_new=lambda i: i,
        after_complete=check(
            lambda url: (
                one(
                    url,
                    "SELECT data_type FROM information_schema.columns "
                    "WHERE table_name = 'items' AND column_name = 'owner'",
                )
                == "text"
            )
        ),
    ),
    "set_not_null": Case(
        [SetNotNull("items", "owner", backfill="1")],
        after_complete=check(
            lambda url: one(
                url,
                "SELECT attnotnull FROM pg_attribute WHERE attname = 'owner' "
                "AND attrelid = 'items'::regclass",
            )
        ),
    ),
    "add_check": Case(
        [AddCheck("items", "ck_items_name", "length(name) < 50")],
        after_start=check(
            lambda url: refused(url, "INSERT INTO items (id, name) VALUES (-1, repeat('x', 60))")
        ),
        after_complete=check(validated("ck_items_name")),
    ),
    "add_unique": Case(
        [AddUnique("items", "uq_items_name", ("name",))],
        after_start=check(lambda url: refused(url, "INSERT INTO items (id, name) VALUES (-1, 'item 1')")),
        after_complete=check(
            lambda url: one(url, "SELECT contype FROM pg_constraint WHERE conname = 'uq_items_name'") == "u"
        ),
    ),
    "add_foreign_key": Case(
        [AddForeignKey("items", "fk_items_owner", ("owner",), "owners", ("id",))],
        after_start=check(lambda url: refused(url, "INSERT INTO items (id, owner) VALUES (-1, 999)")),
        after_complete=check(validated("fk_items_owner")),
    ),
    "create_index": Case(
        [CreateIndex("ix_items_name", "items", ("name",))],
        after_start=check(
            lambda url: one(
                url, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_items_name'::regclass"
            )
        ),
    ),
    "drop_index": Case(
        [DropIndex("ix_items_done", "items", ("done",))],
        setup="CREATE INDEX ix_items_done ON items (done);",
        after_start=check(lambda url: one(url, "SELECT to_regclass('ix_items_done') IS NOT NULL")),
        after_complete=check(lambda url: one(url, "SELECT to_regclass('ix_items_done') IS NULL")),
    ),
    "create_table": Case(
        [CreateTable("labels", sa.Column("id", sa.BigInteger, primary_key=True), sa.Column("text", sa.Text))],
        new=Version(
            "INSERT INTO labels (id, text) VALUES (%(id)s, 'w' || %(id)s)",
            "SELECT text FROM labels WHERE id = %(id)s",
        ),
        new_sees_old=lambda i: None,  # the previous version's rows are items, not labels
        old_sees_new=lambda i: None,
        after_rollback=check(lambda url: one(url, "SELECT to_regclass('labels') IS NULL")),
    ),
    "rename_table": Case(
        [RenameTable("items", "things")],
        new=Version(
            "INSERT INTO things (id, name) VALUES (%(id)s, 'w' || %(id)s)",
            "SELECT name FROM things WHERE id = %(id)s",
        ),
        after_complete=check(lambda url: one(url, "SELECT to_regclass('public.things') IS NOT NULL")),
    ),
    "raw_sql": Case(
        [
            RawSQL(
                "items",
                "ALTER TABLE items ADD COLUMN extra text",
                "ALTER TABLE items DROP COLUMN IF EXISTS extra",
            )
        ],
        new=Version(
            "INSERT INTO items (id, name, extra) VALUES (%(id)s, 'w' || %(id)s, 'x')",
            "SELECT name FROM items WHERE id = %(id)s",
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_operation_passes_the_shared_cycle(db_url: str, name: str) -> None:
    cycle(db_url, CASES[name])


@pytest.mark.parametrize("name", sorted(CASES))
def test_operation_rolls_back_without_a_trace(db_url: str, name: str) -> None:
    rollback_cycle(db_url, CASES[name])


def test_every_operation_module_has_a_case() -> None:
    import pkgutil

    import migrations.ops as ops
    from migrations.ops.base import OnlineOperation

    declared = set(OnlineOperation.__subclasses__())
    covered = {type(o) for case in CASES.values() for o in case.ops}
    assert declared == covered, declared - covered
    support = {"base", "context", "ddl", "revision", "versions"}
    modules = {m.name for m in pkgutil.iter_modules(ops.__path__)} - support
    assert {cls.__module__.rpartition(".")[2] for cls in declared} == modules  # one operation per module
