"""Rename a table: the new version's view has the new name at start; complete renames the table
(views refer to it by identity, not by name)."""

from __future__ import annotations

from dataclasses import dataclass

from migrations.ops.base import OnlineOperation, operation
from migrations.ops.context import Context, quote


@operation("rename_table_online")
@dataclass
class RenameTable(OnlineOperation):
    table: str
    new: str

    breaking = True

    def complete(self, ctx: Context) -> None:
        ctx.execute(f"ALTER TABLE {quote(self.table)} RENAME TO {quote(self.new)}")

    def downgrade(self, ctx: Context) -> None:
        ctx.execute(f"ALTER TABLE {quote(self.new)} RENAME TO {quote(self.table)}")

    def view_name(self) -> str:
        return self.new

    def describe(self) -> str:
        return f"rename table {self.table} to {self.new}"
