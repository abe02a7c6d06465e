"""What every schema-change operation is, and how it becomes `op.<name>(...)` in a revision.

An operation is a small declared object (pgroll's model, inside Alembic):
- start: the expand step, additive DDL only (the previous application version keeps working);
- backfills: what fills the rows that existed before start (run by the batched engine);
- complete: the contract step, once no application instance runs the previous version;
- rollback: undo of start, valid until complete, leaving no trace;
- downgrade: undo after complete, and `loses`: what that cannot give back (None: nothing).

`renames` says how the new version's views show the table's physical columns, `sync` which trigger
keeps old and new columns in step while both versions write. A revision's `upgrade()` only
declares operations (they are collected, see revision.py); the revision protocol runs them.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from alembic.operations import MigrateOperation, Operations

if TYPE_CHECKING:
    from migrations.ops.context import Context

_collected: ContextVar[list[OnlineOperation] | None] = ContextVar("collected", default=None)


@dataclass(frozen=True)
class Backfill:
    """Set `column` to `expression` (SQL over the row's own columns) wherever it IS NULL."""

    table: str
    column: str
    expression: str

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"


@dataclass(frozen=True)
class Sync:
    """A trigger that, on each write, fills the other version's columns: `to_new` (physical column ->
    SQL) when the previous version wrote, `to_old` when the new one did. `watch_old` / `watch_new`
    are the columns whose change makes an UPDATE recompute the other side; `reads` the columns the
    expressions may name (each is a PL/pgSQL variable holding the row's value)."""

    table: str
    name: str
    to_new: dict[str, str]
    to_old: dict[str, str]
    watch_old: tuple[str, ...]
    watch_new: tuple[str, ...]
    reads: tuple[str, ...]


class OnlineOperation(MigrateOperation):
    """The base of every operation; subclasses are dataclasses of what a revision declares."""

    breaking: ClassVar[bool] = False  # complete takes away something the previous version uses
    table: str

    def start(self, ctx: Context) -> None:
        """Expand: additive DDL only."""

    def backfills(self) -> tuple[Backfill, ...]:
        return ()

    def complete(self, ctx: Context) -> None:
        """Contract."""

    def rollback(self, ctx: Context) -> None:
        """Undo start (before complete), leaving no trace."""

    def downgrade(self, ctx: Context) -> None:
        """Undo after complete."""

    @property
    def loses(self) -> str | None:
        """What downgrade cannot give back (None: nothing)."""
        return None

    def renames(self) -> dict[str, str | None]:
        """Physical column -> its name in the new version (None: hidden there)."""
        return {}

    def view_name(self) -> str:
        """The name the new version knows the table by."""
        return self.table

    def sync(self) -> Sync | None:
        return None

    def describe(self) -> str:
        return type(self).__name__


def operation(name: str):
    """Register an OnlineOperation subclass as `op.<name>(...)`: calling it declares the operation
    (Alembic's register_operation / implementation_for, as the operations cookbook shows)."""

    def register(op_cls: type[OnlineOperation]) -> type[OnlineOperation]:
        def create(cls: Any, operations: Operations, *args: Any, **kwargs: Any) -> Any:
            return operations.invoke(cls(*args, **kwargs))

        create.__name__ = name
        create.__doc__ = op_cls.__doc__
        setattr(op_cls, name, classmethod(create))
        Operations.register_operation(name)(op_cls)
        Operations.implementation_for(op_cls)(_declare)
        return op_cls

    return register


def _declare(operations: Operations, operation: OnlineOperation) -> None:
    found = _collected.get()
    if found is None:
        raise TypeError(f"{operation.describe()}: online operations belong in an @online upgrade()")
    found.append(operation)


def collecting() -> tuple[list[OnlineOperation], Any]:
    """A fresh list that declared operations go to, and the token to reset it with."""
    found: list[OnlineOperation] = []
    return found, _collected.set(found)


def stop_collecting(token: Any) -> None:
    _collected.reset(token)
