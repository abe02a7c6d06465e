"""The one retry policy of database-touching Prefect tasks: transient database errors (connection
lost, serialization failure, lock timeout) are retried with backoff; anything else fails at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from prefect.states import State

from tasks.db import is_transient


def retry_transient(_task: Any, _task_run: Any, state: State) -> bool:
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False


def db_task(fn: Callable[..., Any], name: str, retries: int = 2) -> Any:
    """A thin Prefect task around a plain function: retries for transient errors, no caching
    (inputs include live connections and the results are not reusable across runs)."""
    return task(
        fn,
        name=name,
        cache_policy=NONE,
        persist_result=False,  # live connections in, run-specific results out: nothing to reuse
        retries=retries,
        retry_delay_seconds=[1, 4, 16][:retries],
        retry_jitter_factor=0.5,
        retry_condition_fn=retry_transient,
    )
