"""The parameters every deployable flow shares, as pydantic fields (type, default, description):
Prefect builds each flow's parameter model from them, which is the form the UI shows. None of them
carries a credential: the database comes from the worker's DATABASE_URL or a Secret block's name."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

Provider = Literal["local", "neon"]


def report_dir() -> Any:
    return Field(default="runs", description="Folder for {run_id}/report.json and .md on the worker")


def database_secret() -> Any:
    return Field(
        default=None,
        description="Name of a Prefect Secret block holding the database URL; empty: the worker's DATABASE_URL",
    )


def branch_provider() -> Any:
    return Field(
        default=None,
        description="Where branches live: local (same server) or neon; empty: $BRANCH_PROVIDER or local",
    )


def checkpoint() -> Any:
    return Field(default=True, description="Take a checkpoint branch {database}-backup-{UTC time} before writing")


def lock_timeout() -> Any:
    return Field(default="2s", description="lock_timeout of every statement (e.g. 2s, 500ms)")


def described(default: Any, description: str, **constraints: Any) -> Any:
    return Field(default=default, description=description, **constraints)
