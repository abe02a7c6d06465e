"""Make a column NOT NULL: the backfill (if given) fills the NULLs, complete refuses while any is
left and enforces it through a validated CHECK, never scanning under a lock that blocks writes."""

from __future__ import annotations

from dataclasses import dataclass

from migrations.ops import ddl
from migrations.ops.base import Backfill, OnlineOperation, operation
from migrations.ops.context import Context


@operation("set_not_null_online")
@dataclass
class SetNotNull(OnlineOperation):
    table: str
    column: str
    backfill: str | None = None

    def backfills(self) -> tuple[Backfill, ...]:
        return (Backfill(self.table, self.column, self.backfill),) if self.backfill else ()

    def complete(self, ctx: Context) -> None:
        ddl.require_no_nulls(ctx, self.table, self.column)
        ddl.enforce_not_null(ctx, self.table, self.column)

    def downgrade(self, ctx: Context) -> None:
        ddl.relax_not_null(ctx, self.table, self.column)

    def describe(self) -> str:
        return f"set {self.table}.{self.column} NOT NULL"
