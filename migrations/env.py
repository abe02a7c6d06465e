"""Alembic environment (the cookbook shape).

- A connection handed in through `config.attributes["connection"]` is used as is: flows and tests
  drive Alembic inside their own connection and lock.
- Otherwise the URL comes from the same settings as the flows (`-x database_url=…`, DATABASE_URL, or
  the embedded server).
- Offline (`alembic upgrade head --sql`) renders the SQL without touching a database.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from models import metadata
from tasks.db import database_url, sqlalchemy_url

config = context.config
if config.config_file_name is not None and not config.attributes.get("connection"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = metadata


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata, compare_type=True, transaction_per_migration=True, **kwargs
    )


def run_migrations_offline() -> None:
    _configure(url="postgresql+psycopg://", literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run_with(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    handed_in = config.attributes.get("connection")
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
