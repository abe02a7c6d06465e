"""pytest-alembic's experimental downgrade-leaves-no-trace test, on real PostgreSQL.

It checks each revision inside savepoints it rolls back, so revisions run in one transaction here
(`single_transaction`, see migrations/ops/context.py): the schema each produces is the same, which is what this
test compares. The online path (autocommit steps, CONCURRENTLY) is exercised on populated tables by
tests/test_migrations.py."""

from __future__ import annotations

import pytest
from alembic.config import Config
from pytest_alembic.tests.experimental import test_downgrade_leaves_no_trace  # noqa: F401
from sqlalchemy import create_engine, pool

from tasks import schema
from tasks.db import sqlalchemy_url


@pytest.fixture
def alembic_config() -> Config:
    cfg = schema.alembic_config()
    cfg.attributes["single_transaction"] = True
    return cfg


@pytest.fixture
def alembic_engine(empty_db_url: str):
    engine = create_engine(sqlalchemy_url(empty_db_url), poolclass=pool.NullPool)
    yield engine
    engine.dispose()
