"""The compatibility gate: around every expand step the old application keeps working on the new
schema (backward compatible), and the new application already works on the schema before the
contract step (forward compatible). "Works" means insert, read, update and delete through its own
SQLModel models, on real PostgreSQL, with rows of the other version present."""

from __future__ import annotations

import uuid
from types import ModuleType

import pytest
from sqlalchemy import create_engine, pool
from sqlmodel import Session, select

import models.tables as head
from bench.workload import seed_tasks
from tasks import schema
from tasks.db import sqlalchemy_url
from tests.compat import app_v1, app_v2, app_v3, app_v4

# (expand revision, its contract revision or None, the application before it, the application after it)
STEPS = [
    ("0003", "0004", app_v1, app_v2),
    ("0005", "0006", app_v2, app_v3),
    ("0007", None, app_v3, app_v3),
    ("0008", None, app_v3, app_v4),
    ("0009", None, app_v4, head),
]


def crud(url: str, app: ModuleType) -> None:
    """One round of the application's own writes and reads through its models."""
    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        with Session(engine) as session:
            user = app.User(id=uuid.uuid4(), email=f"{uuid.uuid4().hex[:8]}@example.com", name="compat")
            session.add(user)
            session.flush()
            task = app.Task(
                id=uuid.uuid4(), user_id=user.id, title="written by " + app.__name__, completed=False
            )
            session.add(task)
            session.commit()
            got = session.exec(select(app.Task).where(app.Task.id == task.id)).one()
            assert got.title == task.title and got.created_at is not None
            rows = session.exec(select(app.Task).limit(50)).all()  # rows other versions wrote read fine
            assert len(rows) >= 2
            got.title, got.completed = "updated", True
            if hasattr(app.Task, "tags"):
                got.tags = ["x", "y"]
            if hasattr(app.Task, "priority"):
                got.priority = "high"
            session.add(got)
            session.commit()
            session.refresh(got)
            assert got.title == "updated" and got.completed
            session.delete(got)
            session.delete(user)
            session.commit()
            assert session.get(app.Task, task.id) is None
    finally:
        engine.dispose()


@pytest.mark.parametrize(("expand", "contract", "old", "new"), STEPS, ids=[s[0] for s in STEPS])
def test_old_and_new_application_work_across_an_expand_step(
    empty_db_url: str, expand: str, contract: str | None, old: ModuleType, new: ModuleType
) -> None:
    schema.upgrade(empty_db_url, schema.step(expand).down_revision)
    seed_tasks(empty_db_url, 100)
    crud(empty_db_url, old)  # the baseline: the old application on its own schema
    schema.upgrade(empty_db_url, expand)
    crud(empty_db_url, old)  # backward: old application, expanded schema
    crud(empty_db_url, new)  # forward: new application, schema not yet contracted
    if contract:
        schema.upgrade(empty_db_url, contract)  # runs the backfill, then contracts
        crud(empty_db_url, old)  # the old application still runs after the contract: defaults fill in
        crud(empty_db_url, new)
