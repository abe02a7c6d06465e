"""Alembic environment (the cookbook shape).

- A connection handed in through `config.attributes["connection"]` is used as is: flows and tests
  drive Alembic inside their own connection and lock.
- Otherwise the URL comes from the same settings as the flows (`-x database_url=…`, DATABASE_URL, or
  the embedded server).
- Offline (`alembic upgrade head --sql`) renders the SQL without touching a database.
- Every revision runs under a lock_timeout (default 2s) and a statement_timeout (default 15min), set
  for the session before the first revision and written at the top of offline SQL; override with
  `-x lock_timeout=…` / `-x statement_timeout=…` or `config.attributes`.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from models import metadata
from tasks.db import LOCK_TIMEOUT, STATEMENT_TIMEOUT, check_duration, database_url, sqlalchemy_url

config = context.config
if config.config_file_name is not None and not (
    config.attributes.get("connection") or config.attributes.get("driven_from_code")
):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = metadata


def _timeouts() -> str:
    x = context.get_x_argument(as_dictionary=True)
    lock = config.attributes.get("lock_timeout") or x.get("lock_timeout") or LOCK_TIMEOUT
    statement = config.attributes.get("statement_timeout") or x.get("statement_timeout") or STATEMENT_TIMEOUT
    check_duration("lock_timeout", lock)
    check_duration("statement_timeout", statement)
    return f"SET lock_timeout = '{lock}'; SET statement_timeout = '{statement}'"


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata, compare_type=True, transaction_per_migration=True, **kwargs
    )


def run_migrations_offline() -> None:
    _configure(url="postgresql+psycopg://", literal_binds=True, dialect_opts={"paramstyle": "named"})
    for statement in _timeouts().split("; "):
        context.execute(statement)
    with context.begin_transaction():
        context.run_migrations()


def _run_with(connection: Connection) -> None:
    caller_transaction = connection.in_transaction()
    connection.exec_driver_sql(_timeouts())  # session settings: they outlive each revision's transaction
    if not caller_transaction:
        connection.commit()
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    handed_in = config.attributes.get("connection")
    if handed_in is not None and not isinstance(handed_in, Connection):  # an engine, or engine-like
        with handed_in.connect() as connection:
            _run_with(connection)
        return
    if handed_in is not None:
        _run_with(handed_in)
        return
    explicit = context.get_x_argument(as_dictionary=True).get("database_url")
    engine = create_engine(sqlalchemy_url(database_url(explicit)), poolclass=pool.NullPool)
    with engine.connect() as connection:
        _run_with(connection)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
