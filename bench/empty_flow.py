"""The yardstick of the small-file target: an empty two-task Prefect flow started the standard way,

    python bench/empty_flow.py

with nothing of this project imported and no PREFECT_API_URL, so Prefect starts its own temporary
(ephemeral) server for the run. A 1,000-record Phase 1 run, end to end, should take at most 1.3x
as long (bench/phase1.py prints both)."""

from prefect import flow, task


@task
def first() -> int:
    return 1


@task
def second(value: int) -> int:
    return value + 1


@flow(name="empty")
def empty() -> int:
    return second(first())


if __name__ == "__main__":
    empty()
