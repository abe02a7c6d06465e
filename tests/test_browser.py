"""The Prefect UI as an operator sees it: Debian's headless Chromium, driven by Playwright (no browser
download), against `prefect server start` with every deployment of prefect.yaml served
(`python -m deployments.serve`, the `served` fixture of test_e2e_prefect). Screenshots of every
step are kept in the test's tmp dir (printed at the end of each test, pytest keeps the last three
runs); none is committed by the test.

About two minutes, so it has its own marker and target: `make test-browser` (pytest -m browser),
which CI runs after `make test`; it skips only where no Chromium is installed.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from deployments.serve import declared
from tests.conftest import ROOT
from tests.prefect_server import wait_for
from tests.test_e2e_prefect import call, served  # noqa: F401 - `served` is a fixture

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Without these, Chromium reaches out for updates, sync and field trials, which this closed network
# refuses, and the GPU process fails in a container.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# How the UI words each cron of prefect.yaml (a new schedule needs its line here).
SCHEDULE_WORDS = {
    "*/15 * * * *": "Every 15 minutes",
    "30 2 * * *": "At 02:30 AM every day",
    "0 5 * * 1": "At 05:00 AM, only on Monday",
}
CREDENTIAL = re.compile(r"password|passwd|database_url|dsn|token|api_key|secret_value", re.I)


class Shots:
    """Numbered full-window screenshots of one test, in its tmp dir."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.taken = folder, 0

    def __call__(self, page: Any, name: str) -> Path:
        self.taken += 1
        path = self.folder / f"{self.taken:02d}-{name}.png"
        page.screenshot(path=str(path))
        return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("no Chromium installed (Debian's chromium package: make setup installs it as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def ui(browser: Any, served: dict[str, str]) -> dict[str, str]:  # noqa: F811
    """The served Prefect server's UI (browser first: no Chromium, no server started), once every
    deployment of prefect.yaml is registered (serve registers them one by one)."""
    names = {spec["name"] for spec in declared()}

    def registered() -> bool:
        with httpx.Client(base_url=served["api"], timeout=30) as client:
            return names <= {d["name"] for d in call(client, "POST", "/deployments/filter", json={})}

    wait_for("every deployment of prefect.yaml", registered)
    return {**served, "ui": served["api"].removesuffix("/api")}


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    # Wide and tall: the schedule column shows its text only when it fits, and the run form is long.
    context = browser.new_context(viewport={"width": 1920, "height": 2200})
    context.set_default_timeout(30_000)
    page = context.new_page()
    yield page
    context.close()
    print(f"screenshots: {tmp_path}")


@pytest.fixture
def shots(tmp_path: Path) -> Shots:
    return Shots(tmp_path)


def deployment(api: str, flow: str, name: str) -> dict[str, Any]:
    with httpx.Client(base_url=api, timeout=30) as client:
        return call(client, "GET", f"/deployments/name/{flow}/{name}")


def finished_run(api: str, run_id: str, timeout: float = 240) -> dict[str, Any]:
    run: dict[str, Any] = {}

    def done() -> bool:
        with httpx.Client(base_url=api, timeout=30) as client:
            run.update(call(client, "GET", f"/flow_runs/{run_id}"))
        return run["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}

    wait_for(f"flow run {run_id}", done, timeout=timeout)
    return run


def open_artifacts_tab(page: Any, ui: str, run_id: str) -> None:
    page.goto(f"{ui}/runs/flow-run/{run_id}")
    page.locator(".p-tab", has_text="Artifacts").click()


def test_the_deployments_page_lists_every_deployment_with_its_schedule(
    page: Any, ui: dict[str, str], shots: Shots
) -> None:
    from playwright.sync_api import expect

    page.goto(f"{ui['ui']}/deployments")
    specs = declared()
    expect(page.get_by_text(f"{len(specs)} Deployments")).to_be_visible()
    # The table shows ten a page, and a row names its flow under the deployment (phase1-shard's is
    # phase1-migration): an operator searches, and a deployment's row is the one linking to it.
    search = page.get_by_placeholder("Search deployments")
    for spec in specs:
        search.fill(spec["name"])
        link = page.locator("a[href*='/deployments/deployment/']").filter(
            has_text=re.compile(rf"^\s*{re.escape(spec['name'])}\s*$")
        )
        row = page.locator("tr", has=link)
        expect(row).to_have_count(1)
        for schedule in spec.get("schedules", []):
            words = SCHEDULE_WORDS.get(schedule["cron"])
            assert words, f"add how the UI words {schedule['cron']!r} to SCHEDULE_WORDS"
            expect(row).to_contain_text(words)
    search.fill("")
    shots(page, "deployments")


def property_block(page: Any, name: str) -> Any:
    label = page.locator(".schema-form-property__label").filter(
        has_text=re.compile(rf"^{re.escape(name)}( \(Optional\))?$")
    )
    return page.locator(".schema-form-property").filter(has=label)


def check_field(block: Any, name: str, prop: dict[str, Any], default: Any) -> None:
    """The widget shows the parameter's type and its default."""
    from playwright.sync_api import expect

    kinds = [option.get("type") for option in prop.get("anyOf", [])]
    if "null" in kinds:  # optional: the UI offers the type and None, None chosen for a None default
        kind = next(k for k in kinds if k != "null")
        expect(
            block.get_by_role("button", name={"string": "str", "array": "list", "integer": "int"}.get(kind, kind))
        ).to_be_visible()
        expect(block.get_by_role("button", name="None")).to_have_attribute(
            "aria-selected", "true" if default is None else "false"
        )
    elif prop.get("type") in ("integer", "number"):
        field = block.locator("input[type=number]")
        expect(field).to_have_value(f"{default:g}")  # as a number input shows it: 0.0 is 0
        if prop["type"] == "integer":
            expect(field).to_have_attribute("step", "1")
    elif prop.get("type") == "boolean":
        expect(block.get_by_role("switch")).to_have_attribute("aria-checked", str(default).lower())
    elif prop.get("type") == "string":
        expect(block.locator("textarea")).to_have_value(str(default))
    else:
        raise AssertionError(f"{name}: a parameter type this test does not know: {prop}")


def records_file(folder: Path) -> Path:
    """The example file (its dirty records included) plus 1,200 clean ones: counts over a thousand."""
    example = json.loads((ROOT / "examples" / "tasks.json").read_text(encoding="utf-8"))
    extra = [{"id": 10_000 + i, "title": f"imported task {i}", "completed": i % 3 == 0} for i in range(1200)]
    path = folder / "tasks.json"
    path.write_text(json.dumps({**example, "tasks": example["tasks"] + extra}), encoding="utf-8")
    return path


def test_a_custom_run_of_phase1_from_its_form_shows_its_report_quarantine_and_progress(
    page: Any, ui: dict[str, str], shots: Shots, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    dep = deployment(ui["api"], "phase1-migration", "phase1-migration")
    schema = dep["parameter_openapi_schema"]
    # The operator's path: Deployments -> phase1-migration -> Run -> Custom run.
    page.goto(f"{ui['ui']}/deployments")
    page.get_by_role("link", name="phase1-migration", exact=True).first.click()
    expect(page).to_have_url(re.compile(rf"/deployments/deployment/{dep['id']}"))
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("button", name="Custom run", exact=True).click()
    expect(page).to_have_url(re.compile(r"/run\b"))
    expect(page.get_by_text("Parameters", exact=True)).to_be_visible()

    assert schema["properties"], "the flow has no parameters?"
    for name, prop in schema["properties"].items():
        assert not CREDENTIAL.search(name), f"{name} looks like a credential"
        block = property_block(page, name)
        expect(block).to_have_count(1)
        expect(block.get_by_text(prop["description"], exact=True)).to_be_visible()
        check_field(block, name, prop, dep["parameters"].get(name, prop.get("default")))
    expect(page.locator("input[type=password]")).to_have_count(0)
    assert "postgresql://" not in page.content()
    shots(page, "custom-run-form")

    source, report_dir = records_file(tmp_path), tmp_path / "runs"
    property_block(page, "source").locator("textarea").fill(str(source))
    property_block(page, "report_dir").locator("textarea").fill(str(report_dir))
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_text("scheduled to start now").first).to_be_visible()
    with httpx.Client(base_url=ui["api"], timeout=30) as client:
        runs = call(client, "POST", "/flow_runs/filter", json={"deployments": {"id": {"any_": [dep["id"]]}}})
    assert len(runs) == 1, runs  # one submit, one run
    run_id = runs[0]["id"]
    run = finished_run(ui["api"], run_id)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["parameters"]["source"] == str(source)

    open_artifacts_tab(page, ui["ui"], run_id)
    for key in ("phase1-report", "phase1-quarantine", "phase1-progress"):
        expect(page.get_by_text(key, exact=True)).to_be_visible()
    shots(page, "run-artifacts")

    page.get_by_text("phase1-report", exact=True).click()
    expect(page.get_by_role("heading", name="Phase 1 → Phase 2 migration")).to_be_visible()
    counts = page.locator("table").filter(has_text="records read")
    expect(counts.locator("tr", has_text="records read")).to_contain_text("1,215")
    expect(counts.locator("tr", has_text="inserted")).to_contain_text("1,209")
    expect(page.get_by_text("passed", exact=True)).to_be_visible()
    shots(page, "phase1-report")

    open_artifacts_tab(page, ui["ui"], run_id)
    page.get_by_text("phase1-quarantine", exact=True).click()
    table = page.locator("table").filter(has_text="reasons")
    for column in ("position", "legacy_id", "reasons", "record"):
        expect(table.get_by_role("columnheader", name=column)).to_be_visible()
    expect(table.locator("tbody tr")).to_have_count(5)
    expect(table).to_contain_text("title is empty")
    shots(page, "phase1-quarantine")

    open_artifacts_tab(page, ui["ui"], run_id)
    page.get_by_text("phase1-progress", exact=True).click()
    expect(page.get_by_text("Progress: 100%")).to_be_visible()
    shots(page, "phase1-progress")


def test_a_backfill_runs_progress_artifact_updates_in_the_ui(
    page: Any, ui: dict[str, str], shots: Shots, tmp_path: Path
) -> None:
    """A run of backfill-tasks-priority, slowed down to about 20 s (long enough to be seen part way
    on a busy machine), watched from its progress artifact's page: seen part way, then at 100%."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    with psycopg.connect(ui["db_url"]) as conn:
        conn.execute(
            "INSERT INTO users (id, email) VALUES (gen_random_uuid(), 'ui@example.com') ON CONFLICT DO NOTHING"
        )
        conn.execute(
            "INSERT INTO tasks (id, user_id, title, status) "
            "SELECT gen_random_uuid(), (SELECT id FROM users WHERE email = 'ui@example.com'), 'ui ' || g, 'todo' "
            "FROM generate_series(1, 1000) g"
        )
        todo = conn.execute("SELECT count(*) FROM tasks WHERE notes IS NULL").fetchone()[0]
    dep = deployment(ui["api"], "backfill", "backfill-tasks-priority")
    parameters = {
        "name": None,
        "table": "tasks",
        "column": "notes",
        "value": "filled from the UI test",
        "batch_size": 50,
        "target_batch_seconds": 0.0001,  # keeps the batches at 50 rows
        "pause": round(20 / -(-todo // 50), 3),  # about 20 s in all, whatever else the table holds
        "report_dir": str(tmp_path / "runs"),
    }
    with httpx.Client(base_url=ui["api"], timeout=30) as client:
        run_id = call(
            client, "POST", f"/deployments/{dep['id']}/create_flow_run", json={"parameters": parameters}
        )["id"]

    seen: list[int] = []

    def progress_shown() -> bool:
        open_artifacts_tab(page, ui["ui"], run_id)
        card = page.get_by_text("backfill-progress", exact=True)
        try:  # the tab lists its artifacts a moment after it opens
            card.wait_for(state="visible", timeout=5_000)
        except PlaywrightTimeout:
            return False
        card.click()
        shown = re.search(r"Progress: (\d+)%", page.get_by_text(re.compile(r"Progress: \d+%")).inner_text())
        assert shown, "no progress on the artifact's page"
        percent = int(shown[1])
        if not seen or percent != seen[-1]:
            seen.append(percent)
            shots(page, f"backfill-progress-{percent}")
        return percent == 100

    wait_for("the backfill's progress to reach 100% in the UI", progress_shown, timeout=240)
    assert finished_run(ui["api"], run_id)["state"]["type"] == "COMPLETED"
    assert any(0 < p < 100 for p in seen), f"never seen part way: {seen}"
    assert seen == sorted(seen) and seen[-1] == 100
    expect(page.get_by_text(f"{todo:,} rows done")).to_be_visible()  # as the operator reads it
