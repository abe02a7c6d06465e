"""The compatibility gate: around every revision the previous application keeps working on the
schema while it rolls out (backward compatible), and the new application already works before it
is completed (forward compatible), each through its own search path; after complete the new one
works, and the previous one too unless the revision is breaking. "Works" means insert, read,
update and delete through its own SQLModel models, on real PostgreSQL, with rows of the other
version present.

The pairing is derived, not kept: each frozen application in tests/compat names the revision it was
built against (REVISION), the head models are the head revision's, and whether a revision breaks the
previous version comes from its operations."""

from __future__ import annotations

import importlib
import pkgutil
import uuid
from types import ModuleType

import pytest
from sqlalchemy import create_engine, pool
from sqlmodel import Session, select

import models.tables as head
import tests.compat
from bench.workload import seed_tasks
from tasks import schema
from tasks.db import sqlalchemy_url

head.REVISION = schema.head_revision()
APPS = sorted(
    [importlib.import_module(f"tests.compat.{m.name}") for m in pkgutil.iter_modules(tests.compat.__path__)]
    + [head],
    key=lambda app: app.REVISION,
)


def built_for(revision: str) -> ModuleType:
    """The newest application built against `revision` or before it."""
    return [app for app in APPS if revision >= app.REVISION][-1]


PAIRS = [
    (r, built_for(schema.step(r).down_revision or ""), built_for(r))
    for r in schema.revisions()
    if schema.step(r).online
]


def crud(url: str, app: ModuleType) -> None:
    """One round of the application's own writes and reads through its models and search path."""
    path = schema.search_path(app.REVISION).replace(" ", "")
    engine = create_engine(
        sqlalchemy_url(url), poolclass=pool.NullPool, connect_args={"options": f"-csearch_path={path}"}
    )
    done = {"completed": True} if hasattr(app.Task, "completed") else {"status": "done"}
    try:
        with Session(engine) as session:
            user = app.User(id=uuid.uuid4(), email=f"{uuid.uuid4().hex[:8]}@example.com", name="compat")
            session.add(user)
            session.flush()
            task = app.Task(id=uuid.uuid4(), user_id=user.id, title="written by " + app.__name__)
            session.add(task)
            session.commit()
            got = session.exec(select(app.Task).where(app.Task.id == task.id)).one()
            assert got.title == task.title and got.created_at is not None
            rows = session.exec(select(app.Task).limit(50)).all()  # rows other versions wrote read fine
            assert len(rows) >= 2
            got.title = "updated"
            for name, value in done.items():
                setattr(got, name, value)
            if hasattr(app.Task, "tags"):
                got.tags = ["x", "y"]
            if hasattr(app.Task, "priority"):
                got.priority = "high"
            session.add(got)
            session.commit()
            session.refresh(got)
            assert got.title == "updated" and all(getattr(got, k) == v for k, v in done.items())
            session.delete(got)
            session.delete(user)
            session.commit()
            assert session.get(app.Task, task.id) is None
    finally:
        engine.dispose()


def test_the_pairing_covers_every_application_version() -> None:
    assert [r for r, _, _ in PAIRS] == [r for r in schema.revisions() if r >= "0003"]
    assert {new.REVISION for _, _, new in PAIRS} | {PAIRS[0][1].REVISION} == {app.REVISION for app in APPS}
    assert [(r, old.REVISION, new.REVISION) for r, old, new in PAIRS if schema.step(r).breaking] == [
        ("0009", "0008", "0009"),
        ("0010", "0009", "0010"),
    ]


@pytest.mark.parametrize(("revision", "old", "new"), PAIRS, ids=[p[0] for p in PAIRS])
def test_old_and_new_application_work_while_a_revision_rolls_out(
    empty_db_url: str, revision: str, old: ModuleType, new: ModuleType
) -> None:
    step = schema.step(revision)
    schema.upgrade(empty_db_url, step.down_revision)
    seed_tasks(empty_db_url, 100)
    crud(empty_db_url, old)  # the baseline: the old application on its own schema
    schema.start(empty_db_url, step)
    for b in step.backfills:
        schema.engine_backfill(empty_db_url)(b)
    crud(empty_db_url, old)  # backward: the previous application, the revision rolling out
    crud(empty_db_url, new)  # forward: the new application, the revision not yet completed
    schema.complete(empty_db_url, step)
    crud(empty_db_url, new)
    if not step.breaking:
        crud(empty_db_url, old)  # additive: the previous application still runs after complete
