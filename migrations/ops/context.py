"""Where an operation runs: the Alembic migration context of a revision, and the phase of it.

Phases: `all` (plain `alembic upgrade`, and `--sql`: start, backfill as one UPDATE, complete),
`start`, `complete`, `rollback` (the flow runs these one at a time), `downgrade`.
`single_transaction` (pytest-alembic's no-trace test rolls savepoints back) runs every statement in
the revision's transaction and builds indexes without CONCURRENTLY: same schema, no online
guarantees. `autocommit` (complete and rollback, run outside alembic's runner) means each
statement already commits on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext

from tasks.db import LOCK_TIMEOUT

PHASES = ("all", "start", "complete", "rollback", "downgrade")


def version_schema(revision: str) -> str:
    """The schema of views an application built against `revision` reads and writes through."""
    return f"public_{revision}"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class Context:
    operations: Operations
    revision: str
    down_revision: str | None
    phase: str

    @property
    def migration(self) -> MigrationContext:
        return self.operations.get_context()

    def option(self, name: str) -> Any:
        config = self.migration.config
        return self.migration.opts.get(name) or (config.attributes.get(name) if config else None)

    @property
    def offline(self) -> bool:
        return bool(self.migration.as_sql)

    @property
    def single_transaction(self) -> bool:
        return bool(self.option("single_transaction"))

    @property
    def concurrently(self) -> str:
        return "" if self.single_transaction else "CONCURRENTLY "

    @property
    def schema(self) -> str:
        return version_schema(self.revision)

    def execute(self, statement: str) -> None:
        self.operations.execute(statement)

    def scalar(self, query: str) -> Any:
        """A value read from the live database (never called in offline mode)."""
        return self.operations.get_bind().execute(sa.text(query)).scalar()

    @contextmanager
    def outside_transaction(self) -> Iterator[None]:
        """Each statement commits on its own (the revision's transaction is committed first)."""
        if self.single_transaction or self.option("autocommit"):
            yield
            return
        with self.migration.autocommit_block():
            yield

    @contextmanager
    def cleanup_on_failure(self, statement: str) -> Iterator[None]:
        """A step outside a transaction that fails half-way removes what it left (a helper CHECK,
        an invalid index) before the error goes on, on a connection of its own (the failed one may
        be unusable); a failing cleanup stays quiet, the original error is the one to report."""
        try:
            yield
        except Exception:
            if not self.single_transaction and not self.offline:
                with suppress(Exception), self.operations.get_bind().engine.connect() as conn:
                    conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                    conn.exec_driver_sql(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
                    conn.exec_driver_sql(statement)
            raise
