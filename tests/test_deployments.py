"""The deployments as declared: every flow loads from prefect.yaml, its UI form has a type, default
and description for each parameter and no credential, schedules carry a concurrency limit of 1,
artifact keys are stable and lowercase-dashed, and every command line shares the same flags."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

import pytest

from deployments.serve import declared, deployments, load_flow
from tests.conftest import ROOT

CREDENTIAL = re.compile(r"url|password|dsn|api_key|token|conn", re.I)
DASHED = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


def test_every_deployment_loads_with_a_described_credential_free_form() -> None:
    specs = declared()
    assert {s["name"] for s in specs} >= {
        "phase1-migration",
        "schema-upgrade",
        "schema-complete",
        "schema-rollback",
        "schema-downgrade",
        "backfill-tasks-priority",
        "audit-nightly",
        "staging-refresh",
    }
    for spec, deployment in zip(specs, deployments(), strict=True):
        assert DASHED.fullmatch(spec["name"]) and spec["work_pool"]["name"] == "migrations"
        flow = load_flow(spec["entrypoint"])
        assert flow.persist_result is True, spec["name"]
        properties = deployment._parameter_openapi_schema.model_dump()["properties"]
        for name, schema in properties.items():
            assert schema.get("description"), f"{spec['name']}.{name} has no description"
            assert not CREDENTIAL.search(name), f"{spec['name']}.{name} looks like a credential"
        assert set(spec.get("parameters", {})) <= set(properties), spec["name"]
        if spec.get("schedules"):
            assert deployment.concurrency_limit == 1 and deployment.schedules


def test_artifact_keys_are_stable_and_lowercase_dashed() -> None:
    keys = set()
    for path in (ROOT / "flows").glob("*.py"):
        keys |= set(re.findall(r'key="([^"]+)"', path.read_text()))
    assert keys >= {
        "phase1-report",
        "phase1-quarantine",
        "phase1-progress",
        "backfill-progress",
        "audit-checks",
    }
    assert [k for k in keys if not DASHED.fullmatch(k)] == []


COMMANDS = [
    ["flows.phase1"],
    ["flows.phase1", "rollback"],
    ["flows.backfill"],
    ["flows.audit"],
    ["flows.schema", "upgrade"],
    ["flows.schema", "downgrade"],
    ["flows.schema", "status"],
    ["flows.branches", "create"],
    ["flows.branches", "rehearse"],
    ["flows.rollback", "restore"],
]


def command_main(module: str):  # type: ignore[no-untyped-def]
    """The command line of flows/<flow>.py: flows/commands/<flow>.py."""
    return importlib.import_module(f"flows.commands.{module.rsplit('.', 1)[-1]}").main


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_one_cli_feel_across_flows(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    main = command_main(command[0])
    with pytest.raises(SystemExit) as done:
        main([*command[1:], "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--database-url", "--report-dir", "--json"):
        assert flag in out, (command, flag)
    with pytest.raises(SystemExit) as bad:
        main([*command[1:], "--no-such-flag"])
    err = capsys.readouterr().err
    assert bad.value.code == 2 and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_answers_without_importing_prefect(command: list[str]) -> None:
    """`--help` is built from the flow's parameters without loading Prefect (or starting anything)."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", *command, "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0 and "usage:" in out.stdout, out.stderr[-500:]
    loaded = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert not {m for m in loaded if m.split(".")[0] == "prefect"}, "Prefect was imported for --help"
