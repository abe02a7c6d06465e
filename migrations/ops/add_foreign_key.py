"""Add a FOREIGN KEY: NOT VALID at start (checked for every row written from then on, without a
scan of the table now), validated at complete under a lock that lets writes through."""

from __future__ import annotations

from dataclasses import dataclass

from migrations.ops import ddl
from migrations.ops.base import OnlineOperation, operation
from migrations.ops.context import Context, quote


@operation("add_foreign_key_online")
@dataclass
class AddForeignKey(OnlineOperation):
    table: str
    name: str
    columns: tuple[str, ...]
    references: str
    referenced_columns: tuple[str, ...]
    on_delete: str | None = None  # e.g. "CASCADE"

    def start(self, ctx: Context) -> None:
        cols = ", ".join(quote(c) for c in self.columns)
        ref = ", ".join(quote(c) for c in self.referenced_columns)
        on_delete = f" ON DELETE {self.on_delete}" if self.on_delete else ""
        ctx.execute(
            f"ALTER TABLE {quote(self.table)} ADD CONSTRAINT {quote(self.name)} FOREIGN KEY ({cols}) "
            f"REFERENCES {quote(self.references)} ({ref}){on_delete} NOT VALID"
        )

    def complete(self, ctx: Context) -> None:
        ddl.validate_constraint(ctx, self.table, self.name)

    def rollback(self, ctx: Context) -> None:
        ddl.drop_constraint(ctx, self.table, self.name)

    downgrade = rollback

    def describe(self) -> str:
        return f"add foreign key {self.name} on {self.table} -> {self.references}"
