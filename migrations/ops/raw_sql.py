"""SQL of your own, with its explicit undo: `up` at start, `down` on rollback and downgrade. Say
what the downgrade loses, and whether it breaks the previous version, since neither can be seen."""

from __future__ import annotations

from dataclasses import dataclass

from migrations.ops.base import OnlineOperation, operation
from migrations.ops.context import Context


@operation("execute_online")
@dataclass
class RawSQL(OnlineOperation):
    table: str  # the table it concerns (its version gets a view of it)
    up: str
    down: str
    downgrade_loses: str | None = None

    def start(self, ctx: Context) -> None:
        ctx.execute(self.up)

    def rollback(self, ctx: Context) -> None:
        ctx.execute(self.down)

    downgrade = rollback

    @property
    def loses(self) -> str | None:
        return self.downgrade_loses

    def describe(self) -> str:
        return f"sql on {self.table}"
