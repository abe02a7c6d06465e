"""Drop an index CONCURRENTLY at complete: the previous version may still rely on it until then."""

from __future__ import annotations

from dataclasses import dataclass

from migrations.ops import ddl
from migrations.ops.base import OnlineOperation, operation
from migrations.ops.context import Context


@operation("drop_index_online")
@dataclass
class DropIndex(OnlineOperation):
    name: str
    table: str
    columns: tuple[str, ...]  # as it is, so that a downgrade can build it again
    unique: bool = False

    def complete(self, ctx: Context) -> None:
        ddl.drop_index(ctx, self.name)

    def downgrade(self, ctx: Context) -> None:
        ddl.create_index(ctx, self.name, self.table, self.columns, unique=self.unique)

    def describe(self) -> str:
        return f"drop index {self.name}"
