"""Create a table at start: nothing used it before, so nothing waits on it."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from migrations.ops.base import OnlineOperation, operation
from migrations.ops.context import Context, quote


@operation("create_table_online")
@dataclass
class CreateTable(OnlineOperation):
    table: str
    columns: tuple[sa.SchemaItem, ...]

    def __init__(self, table: str, *columns: sa.SchemaItem) -> None:
        self.table, self.columns = table, columns

    def start(self, ctx: Context) -> None:
        ctx.operations.create_table(self.table, *(c._copy() for c in self.columns))

    def rollback(self, ctx: Context) -> None:
        ctx.execute(f"DROP TABLE IF EXISTS {quote(self.table)}")

    downgrade = rollback

    @property
    def loses(self) -> str:
        return f"drops table {self.table} and every row in it"

    def describe(self) -> str:
        return f"create table {self.table}"
