"""Prefect tasks around plain functions that touch the database. They have no retries of their own:
the units inside them retry (tasks/retry.py says which and for how long), so a transient fault is
retried at one depth, and a Prefect retry would only repeat a whole step the units already cover."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NONE


def db_task(fn: Callable[..., Any], name: str) -> Any:
    """A thin Prefect task: no caching (inputs include live connections and the results are not
    reusable across runs) and no retries (see the module's docstring)."""
    return task(
        fn,
        name=name,
        cache_policy=NONE,
        persist_result=False,  # live connections in, run-specific results out: nothing to reuse
        retries=0,
    )
