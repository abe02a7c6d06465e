"""Where a flow finds its database without a credential ever being a flow parameter."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from tasks.db import database_url
from tasks.errors import InputError

# Set only in-process, by a flow that runs another flow against a branch (rehearse, rollback): the
# branch URL reaches the subflow without being stored as a parameter.
_override: ContextVar[str | None] = ContextVar("database_override", default=None)


@contextmanager
def database_override(url: str) -> Iterator[None]:
    token = _override.set(url)
    try:
        yield
    finally:
        _override.reset(token)


def resolve_database_url(database_secret: str | None = None) -> str:
    """An in-process override (a branch), else a Prefect Secret block named database_secret, else
    DATABASE_URL, else the embedded server."""
    if _override.get():
        return database_url(_override.get())
    if database_secret:
        from prefect.blocks.system import Secret

        try:
            value = Secret.load(database_secret).get()
        except ValueError as exc:
            raise InputError(f"no Prefect Secret block named {database_secret!r}") from exc
        return database_url(str(value))
    return database_url()
