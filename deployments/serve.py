"""Serve every deployment of prefect.yaml from one process, against the configured Prefect API:

    prefect server start            # in another terminal, or point PREFECT_API_URL elsewhere
    python -m deployments.serve     # schedules run here; trigger manual runs from the UI or
                                    # prefect deployment run phase1-migration/phase1-migration --param source=…

prefect.yaml is the single list of deployments: `prefect deploy --all` reads it for work pools,
this module reads it for the one-process way, so the two never drift apart.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml
from prefect import serve
from prefect.client.schemas.schedules import CronSchedule

ROOT = Path(__file__).resolve().parents[1]


def declared(path: Path = ROOT / "prefect.yaml") -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))["deployments"]


def load_flow(entrypoint: str) -> Any:
    """`flows/phase1.py:phase1_migration` -> the flow object."""
    file, _, name = entrypoint.partition(":")
    module = importlib.import_module(file.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def deployments(path: Path = ROOT / "prefect.yaml") -> list[Any]:
    out = []
    for spec in declared(path):
        schedules = [
            CronSchedule(cron=s["cron"], timezone=s.get("timezone", "UTC")) for s in spec.get("schedules", [])
        ]
        out.append(
            load_flow(spec["entrypoint"]).to_deployment(
                name=spec["name"],
                description=spec.get("description"),
                parameters=spec.get("parameters", {}),
                schedules=schedules or None,
                concurrency_limit=spec.get("concurrency_limit"),
            )
        )
    return out


if __name__ == "__main__":
    serve(*deployments())
