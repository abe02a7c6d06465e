"""Serve this project's flows from one process against the configured Prefect API:

prefect server start            # in another terminal, or point PREFECT_API_URL elsewhere
python -m deployments.serve     # then trigger runs from the UI or `prefect deployment run`
"""

from __future__ import annotations

from prefect import serve

from flows.phase1 import phase1_migration, phase1_rollback


def deployments() -> list:
    return [
        phase1_migration.to_deployment(name="phase1-migration", concurrency_limit=1),
        phase1_rollback.to_deployment(name="phase1-rollback", concurrency_limit=1),
    ]


if __name__ == "__main__":
    serve(*deployments())
