"""Lock-safe statements the operations share: none holds a lock that blocks writes while a
populated table is scanned or rewritten.

- NOT NULL goes CHECK (c IS NOT NULL) NOT VALID -> VALIDATE (a scan under a lock that lets writes
  through) -> SET NOT NULL (which trusts the validated check instead of scanning) -> drop the check,
  each statement committing on its own;
- indexes are built and dropped CONCURRENTLY, outside any transaction, an invalid leftover of an
  earlier failed build cleared first.
Each statement tolerates an earlier attempt's leftovers, so a failed step is simply run again.
"""

from __future__ import annotations

from collections.abc import Sequence

from migrations.ops.context import Context, literal, quote
from tasks.errors import StepRefused


def not_null_check(table: str, column: str) -> str:
    return f"ck_{table}_{column}_not_null"


def require_no_nulls(ctx: Context, table: str, column: str) -> None:
    """Refuse (online) to contract while rows are still NULL, naming the backfill that fills them."""
    if ctx.offline:
        return
    left = ctx.scalar(f"SELECT count(*) FROM {quote(table)} WHERE {quote(column)} IS NULL")
    if left:
        raise StepRefused(
            f"{left} rows of {table}.{column} are still NULL: run `python -m flows.backfill "
            f"{table}.{column}` first (python -m flows.schema upgrade does it for you)"
        )


def enforce_not_null(ctx: Context, table: str, column: str) -> None:
    check = quote(not_null_check(table, column))
    t, c = quote(table), quote(column)
    drop = f"ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {check}"
    with ctx.outside_transaction(), ctx.cleanup_on_failure(drop):
        ctx.execute(drop)
        ctx.execute(f"ALTER TABLE {t} ADD CONSTRAINT {check} CHECK ({c} IS NOT NULL) NOT VALID")
        ctx.execute(f"ALTER TABLE {t} VALIDATE CONSTRAINT {check}")
        ctx.execute(f"ALTER TABLE {t} ALTER COLUMN {c} SET NOT NULL")
        ctx.execute(drop)


def relax_not_null(ctx: Context, table: str, column: str) -> None:
    ctx.execute(f"ALTER TABLE {quote(table)} ALTER COLUMN {quote(column)} DROP NOT NULL")


def drop_constraint(ctx: Context, table: str, name: str) -> None:
    ctx.execute(f"ALTER TABLE {quote(table)} DROP CONSTRAINT IF EXISTS {quote(name)}")


def validate_constraint(ctx: Context, table: str, name: str) -> None:
    with ctx.outside_transaction():
        ctx.execute(f"ALTER TABLE {quote(table)} VALIDATE CONSTRAINT {quote(name)}")


def create_index(ctx: Context, name: str, table: str, columns: Sequence[str], *, unique: bool = False) -> None:
    cols = ", ".join(quote(c) for c in columns)
    with ctx.outside_transaction(), ctx.cleanup_on_failure(f"DROP INDEX {ctx.concurrently}IF EXISTS {quote(name)}"):
        # A failed CONCURRENTLY build leaves an INVALID index of this name behind: clear it first.
        ctx.execute(
            f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass({literal(quote(name))}) "
            f"AND NOT indisvalid) THEN EXECUTE {literal('DROP INDEX ' + quote(name))}; END IF; END $$"
        )
        unique_sql = "UNIQUE " if unique else ""
        ctx.execute(f"CREATE {unique_sql}INDEX {ctx.concurrently}{quote(name)} ON {quote(table)} ({cols})")


def drop_index(ctx: Context, name: str) -> None:
    with ctx.outside_transaction():
        ctx.execute(f"DROP INDEX {ctx.concurrently}IF EXISTS {quote(name)}")
