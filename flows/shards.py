"""A user base larger than one machine: the Phase 1 run that splits its files into shards.

The parent (a phase1-migration run with `shards` set) checks that the files exist, takes the one
checkpoint branch of the run and brings the schema to head, then starts one flow run per shard of
the `phase1-shard` deployment on the `migrations` work pool (`run_deployment`), so process workers
on any number of machines take them. Each shard is a phase1-migration run of its own files (a
stable hash of each file's legacy source picks its shard, so shards never overlap and a re-run
after a crash resumes the crashed shard's own run). The parent waits, reads each shard's result
from the database (every shard records its flow run id there), and reports them as one: counts
summed, a row per file, a row per shard; it fails naming the shards that failed.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.runtime import flow_run
from prefect.states import State

from flows import params as P
from flows.checkpoint import take_checkpoint
from flows.outcome import publish
from flows.phase1 import FILES_SHOWN, sources_of
from flows.settings import resolve_database_url
from tasks import file_results, schema
from tasks import report as reports
from tasks.db import Session, mask_url
from tasks.errors import FilesRefused, InputError, VerificationFailed
from tasks.runs import shard_runs
from tasks.sources import shard
from tasks.verify import ACCOUNTED

POLL_SECONDS = 2.0
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def fan_out(shards: int, deployment: str, report_dir: str, started: float) -> State:
    """Run the files of this flow run's parameters as `shards` flow runs of `deployment`."""
    logger = get_run_logger()
    params = dict(flow_run.parameters)
    p = P.of(P.Phase1, params)
    sources = sources_of(p)
    sizes = [len(shard(sources, i, shards)) for i in range(shards)]
    if p.dry_run:
        raise InputError("a dry run is not split into shards: run it without shards")
    url = resolve_database_url(p.database_secret)
    branch = None
    if p.checkpoint:
        branch, _ = take_checkpoint(url, p.branch_provider, p.lock_wait_seconds)
    # the schema at head once, under the migration lock, before the shards share it
    with Session(url, lock_wait=p.lock_wait_seconds) as control:
        control.run("phase1:lock", lambda _conn: None)
        before, after = schema.upgrade(url)
    runs = []
    for i in range(shards):
        shard_params = {**params, "shards": shards, "shard": i, "checkpoint": False}
        runs.append(run_deployment(deployment, parameters=shard_params, timeout=0, as_subflow=True))
        logger.info("shard %d of %d (%d files): flow run %s", i, shards, sizes[i], runs[-1].id)
    states = _wait([r.id for r in runs])
    with Session(url) as session:  # each read a unit: a lost session is replaced, the read rerun
        found = session.run("phase1:shards", shard_runs, [str(r.id) for r in runs])
        run_ids = [found[str(r.id)]["run_id"] for r in runs if str(r.id) in found]
        totals = session.run("phase1:shards", file_results.totals, run_ids)
        files = reports.Rows(
            totals.files,
            totals.refused,
            session.run("phase1:shards", file_results.first, run_ids, FILES_SHOWN),
            lambda: file_results.every(session, run_ids),
        )
        rows = []
        for i, r in enumerate(runs):
            got = found.get(str(r.id), {})
            rows.append({"shard": i, "files": sizes[i], "flow_run": str(r.id), "state": states[r.id],
                         "run_id": got.get("run_id"), "status": got.get("status")})  # fmt: skip
        # A shard that refused files ends Failed (exit 4) with its run completed: the run says how it went.
        failed = [row for row in rows if row["status"] != "completed"]
        counts = {
            c: sum(found.get(str(r.id), {}).get("stats", {}).get(c, 0) for r in runs)
            for c in ("records_read", *ACCOUNTED, "disappeared", "deleted")
        }
        refused = sum(found.get(str(r.id), {}).get("stats", {}).get("refused", 0) for r in runs)
        report = {
            "title": "Phase 1 → Phase 2 migration, in shards",
            "kind": "phase1",
            "run_id": str(flow_run.id),
            "status": "completed" if not failed else "shards_failed",
            "resumed": False,
            "source": {
                "path": p.manifest or p.source,
                "files": len(sources),
                "refused": refused,
                "unchanged": totals.unchanged_files,
            },
            "database": mask_url(url),
            "schema": {"before": before, "after": after},
            "shards": rows,
            "counts": counts,
            "files": files,
            "checkpoint": branch,
            "verification": {
                "ok": not failed,
                "problems": [
                    f"shard {row['shard']} ({row['flow_run']}): {row['state']}, {row['status'] or 'no run recorded'}"
                    for row in failed
                ],
            },
            "timing": {"duration_s": round(time.monotonic() - started, 3), "rows_per_s": 0.0},
            "notes": [],
        }
        if failed:
            names = ", ".join(str(row["shard"]) for row in failed)
            code, message = VerificationFailed.exit_code, f"shards failed: {names}"
        elif refused:
            code, message = FilesRefused.exit_code, f"{shards} shards completed; {refused} files refused"
        else:
            code, message = 0, f"{shards} shards completed"
        return publish(
            report,
            report_dir,
            key="phase1-report",
            description="Phase 1 migration in shards",
            exit_code=code,
            message=message,
        )


def _wait(ids: list[Any]) -> dict[Any, str]:
    """Each flow run's final state type, once every one has reached one."""
    states: dict[Any, str] = {}
    with get_client(sync_client=True) as client:
        while len(states) < len(ids):
            for run_id in ids:
                if run_id in states:
                    continue
                run = client.read_flow_run(run_id)
                kind = run.state.type.value if run.state else "PENDING"
                if kind in TERMINAL:
                    states[run_id] = kind
            if len(states) < len(ids):
                time.sleep(POLL_SECONDS)
    return states
