"""Drop a column: the new version's views hide it at start, complete drops it. `down` (SQL over the
row) fills it on the new version's writes while the previous version still reads it."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from migrations.ops.base import OnlineOperation, Sync, operation
from migrations.ops.context import Context, quote


@operation("drop_column_online")
@dataclass
class DropColumn(OnlineOperation):
    table: str
    column: sa.Column  # as it is, so that a downgrade can add it back
    down: str | None = None
    reads: tuple[str, ...] = ()

    breaking = True

    def complete(self, ctx: Context) -> None:
        ctx.execute(f"ALTER TABLE {quote(self.table)} DROP COLUMN IF EXISTS {quote(self.column.name)}")

    def downgrade(self, ctx: Context) -> None:
        column = self.column._copy()
        column.nullable = True
        ctx.operations.add_column(self.table, column)

    @property
    def loses(self) -> str:
        return f"{self.table}.{self.column.name} comes back empty (NULL): its values went at complete"

    def renames(self) -> dict[str, str | None]:
        return {self.column.name: None}

    def sync(self) -> Sync | None:
        if self.down is None:
            return None
        return Sync(self.table, self.column.name, {}, {self.column.name: self.down}, (), self.reads, self.reads)

    def describe(self) -> str:
        return f"drop column {self.table}.{self.column.name}"
