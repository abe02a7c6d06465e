"""Add a UNIQUE constraint: its unique index is built CONCURRENTLY at start (uniqueness holds from
then on), and complete turns the index into the constraint (a catalog change, no scan)."""

from __future__ import annotations

from dataclasses import dataclass

from migrations.ops import ddl
from migrations.ops.base import OnlineOperation, operation
from migrations.ops.context import Context, quote


@operation("add_unique_online")
@dataclass
class AddUnique(OnlineOperation):
    table: str
    name: str
    columns: tuple[str, ...]

    def start(self, ctx: Context) -> None:
        ddl.create_index(ctx, self.name, self.table, self.columns, unique=True)

    def complete(self, ctx: Context) -> None:
        ctx.execute(
            f"ALTER TABLE {quote(self.table)} ADD CONSTRAINT {quote(self.name)} UNIQUE USING INDEX {quote(self.name)}"
        )

    def rollback(self, ctx: Context) -> None:
        ddl.drop_index(ctx, self.name)

    def downgrade(self, ctx: Context) -> None:
        ddl.drop_constraint(ctx, self.table, self.name)

    def describe(self) -> str:
        return f"add unique {self.name} on {self.table} ({', '.join(self.columns)})"
