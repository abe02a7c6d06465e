"""Add a CHECK: NOT VALID at start (it holds for every row written from then on, without a scan),
validated at complete (a scan that lets writes through), after the backfills."""

from __future__ import annotations

from dataclasses import dataclass

from migrations.ops import ddl
from migrations.ops.base import OnlineOperation, operation
from migrations.ops.context import Context, quote


@operation("add_check_online")
@dataclass
class AddCheck(OnlineOperation):
    table: str
    name: str
    condition: str

    def start(self, ctx: Context) -> None:
        ctx.execute(
            f"ALTER TABLE {quote(self.table)} ADD CONSTRAINT {quote(self.name)} CHECK ({self.condition}) NOT VALID"
        )

    def complete(self, ctx: Context) -> None:
        ddl.validate_constraint(ctx, self.table, self.name)

    def rollback(self, ctx: Context) -> None:
        ddl.drop_constraint(ctx, self.table, self.name)

    downgrade = rollback

    def describe(self) -> str:
        return f"add check {self.name} on {self.table}"
