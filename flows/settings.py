"""Where a flow finds its database without a credential ever being a flow parameter."""

from __future__ import annotations

from tasks.db import database_url
from tasks.errors import InputError


def resolve_database_url(database_secret: str | None = None) -> str:
    """A Prefect Secret block named database_secret, else DATABASE_URL, else the embedded server."""
    if database_secret:
        from prefect.blocks.system import Secret

        try:
            value = Secret.load(database_secret).get()
        except ValueError as exc:
            raise InputError(f"no Prefect Secret block named {database_secret!r}") from exc
        return database_url(str(value))
    return database_url()
