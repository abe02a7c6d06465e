"""Serve this project's flows from one process against the configured Prefect API:

prefect server start            # in another terminal, or point PREFECT_API_URL elsewhere
python -m deployments.serve     # then trigger runs from the UI or `prefect deployment run`
"""

from __future__ import annotations

from prefect import serve

from flows.audit import audit
from flows.backfill import backfill
from flows.phase1 import phase1_migration, phase1_rollback


def deployments() -> list:
    return [
        phase1_migration.to_deployment(name="phase1-migration", concurrency_limit=1),
        phase1_rollback.to_deployment(name="phase1-rollback", concurrency_limit=1),
        backfill.to_deployment(
            name="backfill-tasks-priority",
            parameters={"name": "tasks.priority", "max_runtime": 600},
            cron="*/15 * * * *",
            concurrency_limit=1,
        ),
        audit.to_deployment(name="audit-nightly", cron="30 2 * * *", concurrency_limit=1),
    ]


if __name__ == "__main__":
    serve(*deployments())
