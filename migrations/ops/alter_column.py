"""Change a column's type or meaning, or its name with it: the new column is added beside the old
one at start, each version's writes fill the other's column through `up` (old -> new) and `down`
(new -> old), the backfill runs `up` over the rows already there, and complete drops the old column
(renaming the new one into its place when the name stays). Splitting a column is one of these per
new column (`reads` names the columns the expressions use); merging two is one whose `up` reads both.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from migrations.ops import ddl
from migrations.ops.base import Backfill, OnlineOperation, Sync, operation
from migrations.ops.context import Context, quote


@operation("alter_column_online")
@dataclass
class AlterColumn(OnlineOperation):
    table: str
    old: sa.Column  # the column as it is (a downgrade rebuilds it)
    new: sa.Column  # the column as the new version has it
    up: str  # SQL: the new column's value from the old version's columns
    down: str  # SQL: the old column's value from the new version's
    reads: tuple[str, ...] = ()  # other columns up / down name

    breaking = True

    @property
    def physical(self) -> str:
        """Where the new column lives until complete (its own name, unless it takes the old one's)."""
        return self.new.name if self.new.name != self.old.name else f"_new_{self.new.name}"

    def start(self, ctx: Context) -> None:
        column = sa.Column(self.physical, self.new.type, nullable=True)
        ctx.operations.add_column(self.table, column)
        if self.new.server_default is not None:
            ctx.operations.alter_column(self.table, self.physical, server_default=self.new.server_default.arg)

    def backfills(self) -> tuple[Backfill, ...]:
        return (Backfill(self.table, self.physical, self.up),)

    def complete(self, ctx: Context) -> None:
        t = quote(self.table)
        if not self.new.nullable:
            ddl.require_no_nulls(ctx, self.table, self.physical)
            ddl.enforce_not_null(ctx, self.table, self.physical)
        ctx.execute(f"ALTER TABLE {t} DROP COLUMN IF EXISTS {quote(self.old.name)}")
        if self.physical != self.new.name:
            ctx.execute(f"ALTER TABLE {t} RENAME COLUMN {quote(self.physical)} TO {quote(self.new.name)}")

    def rollback(self, ctx: Context) -> None:
        ctx.execute(f"ALTER TABLE {quote(self.table)} DROP COLUMN IF EXISTS {quote(self.physical)}")

    def downgrade(self, ctx: Context) -> None:
        t, new = quote(self.table), self.new.name
        old = sa.Column(f"_old_{self.old.name}" if new == self.old.name else self.old.name, self.old.type)
        ctx.operations.add_column(self.table, old)
        # After complete the new column has its own name, which is what `down` names.
        ctx.execute(f"UPDATE {t} SET {quote(old.name)} = {self.down}")
        if self.old.server_default is not None:
            ctx.operations.alter_column(self.table, old.name, server_default=self.old.server_default.arg)
        if not self.old.nullable:
            ddl.enforce_not_null(ctx, self.table, old.name)
        ctx.execute(f"ALTER TABLE {t} DROP COLUMN {quote(new)}")
        if old.name != self.old.name:
            ctx.execute(f"ALTER TABLE {t} RENAME COLUMN {quote(old.name)} TO {quote(self.old.name)}")

    @property
    def loses(self) -> str:
        return (
            f"{self.table}.{self.new.name} goes back to {self.old.name} through `{self.down}`: "
            "whatever that cannot express is lost"
        )

    def renames(self) -> dict[str, str | None]:
        return {self.old.name: None, self.physical: self.new.name}

    def sync(self) -> Sync:
        return Sync(
            self.table,
            self.new.name,
            to_new={self.physical: self.up},
            to_old={self.old.name: self._down_in_trigger()},
            watch_old=(self.old.name, *self.reads),
            watch_new=(self.physical,),
            reads=tuple(dict.fromkeys((self.old.name, self.physical, *self.reads))),
        )

    def _down_in_trigger(self) -> str:
        # In the trigger the new column is the variable named after its physical column.
        if self.physical == self.new.name:
            return self.down
        return f"(SELECT {self.down} FROM (SELECT {quote(self.physical)} AS {quote(self.new.name)}) AS v)"

    def describe(self) -> str:
        return f"alter column {self.table}.{self.old.name} -> {self.new.name}"
