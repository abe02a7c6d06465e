"""Add a column: nullable at start with its default for rows inserted from now on (set apart from
ADD COLUMN, so the rows already there stay NULL for the backfill to find), NOT NULL at complete
when asked. The previous version does not name it and gets the default."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from migrations.ops import ddl
from migrations.ops.base import Backfill, OnlineOperation, operation
from migrations.ops.context import Context, quote


@operation("add_column_online")
@dataclass
class AddColumn(OnlineOperation):
    table: str
    column: sa.Column
    default: str | None = None  # SQL, for rows inserted from start on
    backfill: str | None = None  # SQL over the row, for the rows that existed before start
    not_null: bool = False
    kept: str | None = None  # why a downgrade loses nothing: where its values are kept, or why none are needed

    def start(self, ctx: Context) -> None:
        column = self.column._copy()
        column.nullable, column.server_default = True, None
        ctx.operations.add_column(self.table, column)
        if self.default is not None:
            ctx.operations.alter_column(self.table, column.name, server_default=sa.text(self.default))

    def backfills(self) -> tuple[Backfill, ...]:
        return (Backfill(self.table, self.column.name, self.backfill),) if self.backfill else ()

    def complete(self, ctx: Context) -> None:
        if self.not_null:
            ddl.require_no_nulls(ctx, self.table, self.column.name)
            ddl.enforce_not_null(ctx, self.table, self.column.name)

    def rollback(self, ctx: Context) -> None:
        ctx.execute(f"ALTER TABLE {quote(self.table)} DROP COLUMN IF EXISTS {quote(self.column.name)}")

    def downgrade(self, ctx: Context) -> None:
        ctx.operations.drop_column(self.table, self.column.name)

    @property
    def loses(self) -> str | None:
        return None if self.kept else f"drops {self.table}.{self.column.name} and every value in it"

    def describe(self) -> str:
        return f"add column {self.table}.{self.column.name}"
