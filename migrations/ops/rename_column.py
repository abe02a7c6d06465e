"""Rename a column: the new version's views show it under its new name at start; complete renames
the column itself (the views follow: a view refers to a column by position, not by name)."""

from __future__ import annotations

from dataclasses import dataclass

from migrations.ops.base import OnlineOperation, operation
from migrations.ops.context import Context, quote


@operation("rename_column_online")
@dataclass
class RenameColumn(OnlineOperation):
    table: str
    old: str
    new: str

    breaking = True

    def complete(self, ctx: Context) -> None:
        ctx.execute(f"ALTER TABLE {quote(self.table)} RENAME COLUMN {quote(self.old)} TO {quote(self.new)}")

    def downgrade(self, ctx: Context) -> None:
        ctx.execute(f"ALTER TABLE {quote(self.table)} RENAME COLUMN {quote(self.new)} TO {quote(self.old)}")

    def renames(self) -> dict[str, str | None]:
        return {self.old: self.new}

    def describe(self) -> str:
        return f"rename column {self.table}.{self.old} to {self.new}"
