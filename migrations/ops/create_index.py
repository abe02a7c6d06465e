"""Create an index CONCURRENTLY at start: writes go on while it builds."""

from __future__ import annotations

from dataclasses import dataclass

from migrations.ops import ddl
from migrations.ops.base import OnlineOperation, operation
from migrations.ops.context import Context


@operation("create_index_online")
@dataclass
class CreateIndex(OnlineOperation):
    name: str
    table: str
    columns: tuple[str, ...]
    unique: bool = False

    def start(self, ctx: Context) -> None:
        ddl.create_index(ctx, self.name, self.table, self.columns, unique=self.unique)

    def rollback(self, ctx: Context) -> None:
        ddl.drop_index(ctx, self.name)

    downgrade = rollback

    def describe(self) -> str:
        return f"create index {self.name} on {self.table} ({', '.join(self.columns)})"
