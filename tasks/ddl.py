"""Building blocks for revisions a running application survives (expand → backfill → contract).

Each block takes no lock longer than a catalog update on a populated table:
- a column is added nullable, and its default is set separately (both metadata-only), so the old
  application's inserts, which do not name it, get the default;
- NOT NULL is enforced as CHECK (c IS NOT NULL) NOT VALID → VALIDATE (a scan under a lock that lets
  writes through) → SET NOT NULL (which trusts the validated check instead of scanning) → drop the
  check; each statement commits on its own, so no ACCESS EXCLUSIVE lock is held across the scan;
- indexes are built and dropped CONCURRENTLY, outside any transaction, clearing an invalid
  leftover of an earlier failed build first.

A step outside a transaction that fails half-way removes what it left (the helper CHECK, an invalid
index) and its statements tolerate an earlier attempt's leftovers, so it is simply run again. An
index name already taken by something else fails loudly rather than being skipped. The session's lock_timeout and statement_timeout are set by env.py.

A caller that must keep a revision inside one transaction (pytest-alembic's downgrade-leaves-no-trace
test rolls savepoints back) sets `config.attributes["single_transaction"]`: the same statements then
run in the revision's transaction and indexes are built without CONCURRENTLY. Same schema, no
online guarantees: that mode is for checking DDL on empty databases only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

import sqlalchemy as sa
from alembic import context, op


def _single_transaction() -> bool:
    return bool(context.config.attributes.get("single_transaction"))


@contextmanager
def outside_transaction() -> Iterator[None]:
    """Each statement commits on its own (the revision's transaction is committed first)."""
    if _single_transaction():
        yield
        return
    with op.get_context().autocommit_block():
        yield


@contextmanager
def _cleanup_on_failure(statement: str) -> Iterator[None]:
    """A step outside a transaction that fails half-way removes what it left (a helper CHECK, an
    invalid index) before the error goes on, so the database is as the previous revision left it."""
    try:
        yield
    except Exception:
        if not _single_transaction():
            # On a connection of its own: the failed one may be unusable. The original error is the
            # one worth reporting, so a failing cleanup stays quiet (the audit finds any leftover).
            with suppress(Exception), op.get_bind().engine.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.exec_driver_sql("SET lock_timeout = '2s'")
                conn.exec_driver_sql(statement)
        raise


def add_column_with_default(table: str, column: sa.Column, default_sql: str) -> None:
    """Expand: the column, nullable, and a default for rows inserted from now on."""
    op.add_column(table, column)
    op.alter_column(table, column.name, server_default=sa.text(default_sql))


def _not_null_check(table: str, column: str) -> str:
    return f"ck_{table}_{column}_not_null"


def require_no_nulls(table: str, column: str, backfill: str) -> None:
    """Refuse (online) to contract while rows are still NULL, naming the backfill that fills them."""
    if op.get_context().as_sql:
        return
    left = op.get_bind().execute(sa.text(f'SELECT count(*) FROM "{table}" WHERE "{column}" IS NULL')).scalar()
    if left:
        raise RuntimeError(
            f"{left} rows of {table}.{column} are still NULL: run `python -m flows.backfill {backfill}` "
            "first (python -m flows.schema upgrade does it for you)"
        )


def enforce_not_null(table: str, column: str) -> None:
    """Contract: SET NOT NULL without holding ACCESS EXCLUSIVE during the scan."""
    check = _not_null_check(table, column)
    drop = f'ALTER TABLE "{table}" DROP CONSTRAINT IF EXISTS "{check}"'
    with outside_transaction(), _cleanup_on_failure(drop):
        op.execute(drop)
        op.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{check}" CHECK ("{column}" IS NOT NULL) NOT VALID')
        op.execute(f'ALTER TABLE "{table}" VALIDATE CONSTRAINT "{check}"')
        op.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" SET NOT NULL')
        op.execute(drop)


def relax_not_null(table: str, column: str) -> None:
    """Undo enforce_not_null: a catalog change only, no data touched."""
    op.alter_column(table, column, nullable=True)


def add_check_not_valid(table: str, name: str, condition: str) -> None:
    """A CHECK that holds for new rows at once and is validated later, without a scan now."""
    op.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" CHECK ({condition}) NOT VALID')


def validate_constraint(table: str, name: str) -> None:
    with outside_transaction():
        op.execute(f'ALTER TABLE "{table}" VALIDATE CONSTRAINT "{name}"')


def create_index_concurrently(name: str, table: str, columns: list[str], *, unique: bool = False) -> None:
    cols = ", ".join(f'"{c}"' for c in columns)
    concurrently = "" if _single_transaction() else "CONCURRENTLY "
    with outside_transaction(), _cleanup_on_failure(f'DROP INDEX {concurrently}IF EXISTS "{name}"'):
        # A failed CONCURRENTLY build leaves an INVALID index of this name behind: clear it first.
        op.execute(
            f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass('{name}') "
            f"AND NOT indisvalid) THEN EXECUTE 'DROP INDEX \"{name}\"'; END IF; END $$"
        )
        op.execute(f'CREATE {"UNIQUE " if unique else ""}INDEX {concurrently}"{name}" ON "{table}" ({cols})')


def drop_index_concurrently(name: str) -> None:
    with outside_transaction():
        concurrently = "" if _single_transaction() else "CONCURRENTLY "
        op.execute(f'DROP INDEX {concurrently}IF EXISTS "{name}"')
