"""A revision of operations: its upgrade() only declares them, the protocol here runs them.

    @online
    def upgrade() -> None:
        op.rename_column_online("tasks", "description", "notes")

    downgrade = upgrade.downgrade

Per phase (context.py): start runs each operation's start, then creates the version schema with
its views and the sync triggers; complete drops the previous version's schema and the triggers, then
runs each complete; rollback drops this version's schema and triggers and undoes each start,
newest first; downgrade (after complete) undoes each operation, newest first. `all` is start,
each backfill as one UPDATE, complete: what plain `alembic upgrade` and `--sql` run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from alembic import op
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext

from migrations.ops import versions
from migrations.ops.base import OnlineOperation, collecting, stop_collecting
from migrations.ops.context import Context, quote


class OnlineUpgrade:
    """The decorated upgrade(): callable by Alembic, and readable for what it declares."""

    __name__ = "upgrade"  # Alembic logs a step by its function's name

    def __init__(self, declare: Callable[[], None]) -> None:
        self.declare = declare
        self.revision: str = declare.__globals__["revision"]
        self.down_revision: str | None = declare.__globals__["down_revision"]

    def operations(self) -> list[OnlineOperation]:
        """The declared operations, in order (outside a migration, on an offline context)."""
        found, token = collecting()
        try:
            if getattr(op, "_proxy", None) is not None:
                self.declare()
            else:
                with Operations.context(MigrationContext.configure(dialect_name="postgresql")):
                    self.declare()
        finally:
            stop_collecting(token)
        return found

    def __call__(self) -> None:
        ctx = self._context("all")
        ctx.phase = ctx.option("schema_phase") or "all"
        run(ctx, self.operations())

    def downgrade(self) -> None:
        ctx = self._context("downgrade")
        versions.drop_schema(ctx, self.revision)
        for o in reversed(self.operations()):
            o.downgrade(ctx)
        previous = self._previous(ctx)
        if previous:  # the previous version is the live one again, its schema as its complete left it
            versions.restore_completed(Context(op._proxy, self.down_revision or "", None, "downgrade"), previous)

    def _previous(self, ctx: Context) -> list[OnlineOperation]:
        """The operations the down revision declares ([] for a plain one, or none at all)."""
        script = ctx.migration.script
        if self.down_revision is None or script is None:
            return []
        return declared(script.get_revision(self.down_revision).module)

    def _context(self, phase: str) -> Context:
        return Context(op._proxy, self.revision, self.down_revision, phase)


def online(declare: Callable[[], None]) -> OnlineUpgrade:
    return OnlineUpgrade(declare)


def run(ctx: Context, ops: Sequence[OnlineOperation]) -> None:
    """The operations of one revision, in ctx.phase."""
    if ctx.phase in ("all", "start"):
        start(ctx, ops)
    if ctx.phase == "all":
        for b in (b for o in ops for b in o.backfills()):
            column = quote(b.column)
            ctx.execute(f"UPDATE {quote(b.table)} SET {column} = {b.expression} WHERE {column} IS NULL")
    if ctx.phase in ("all", "complete"):
        complete(ctx, ops)
    if ctx.phase == "rollback":
        rollback(ctx, ops)


def start(ctx: Context, ops: Sequence[OnlineOperation]) -> None:
    for o in ops:
        o.start(ctx)
    versions.create_schema(ctx)
    versions.create_views(ctx, ops)
    for o in ops:
        if (sync := o.sync()) is not None:
            versions.create_sync(ctx, sync)


def complete(ctx: Context, ops: Sequence[OnlineOperation]) -> None:
    # No instance of the previous version is left: its views and the triggers serving it go first
    # (a trigger would otherwise read an old column as complete drops it).
    versions.drop_schema(ctx, ctx.down_revision)
    for o in ops:
        if (sync := o.sync()) is not None:
            versions.drop_sync(ctx, sync)
    for o in ops:
        o.complete(ctx)
    versions.mark(ctx, versions.COMPLETE)


def rollback(ctx: Context, ops: Sequence[OnlineOperation]) -> None:
    versions.drop_schema(ctx, ctx.revision)
    for o in reversed(ops):
        if (sync := o.sync()) is not None:
            versions.drop_sync(ctx, sync)
        o.rollback(ctx)


def declared(module: Any) -> list[OnlineOperation]:
    """The operations a revision module declares ([] for one written as plain Alembic)."""
    upgrade = getattr(module, "upgrade", None)
    return upgrade.operations() if isinstance(upgrade, OnlineUpgrade) else []
