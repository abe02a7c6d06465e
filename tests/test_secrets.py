"""No password and no Neon API key anywhere a person or Prefect keeps: every flow's command (Phase
1 and its rollback, backfill, audit, schema, branches, rollback, on both providers) is run with a
database URL that carries a password and with NEON_API_KEY set, and its output, its reports and
Prefect's own database are searched for them afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import neon_double, roles
from tests.conftest import ROOT
from tests.neon_double import NeonProject
from tests.prefect_server import prefect_server as served_prefect

neon_project = neon_double.neon_project
EXAMPLE = str(ROOT / "examples" / "tasks.json")


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A Prefect server of its own, whose database (PREFECT_HOME/prefect.db) is searched afterwards."""
    with served_prefect(tmp_path / "prefect-home") as server:
        yield server.api, server.home


def test_no_password_or_api_key_in_output_reports_or_prefects_database(
    owner_db: str,
    neon_project: NeonProject,
    prefect_server: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Each command through its main(), as `python -m flows.<name>` runs it, in this process (an
    interpreter per command would take minutes), recording on a Prefect server of its own."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.commands import audit, backfill, branches, phase1, rollback
    from flows.commands import schema as schema_flow

    api, home = prefect_server
    secrets = {roles.PASSWORD, neon_project.double.password, neon_project.double.api_key}
    runs = str(tmp_path / "runs")
    said: list[str] = []

    def run(main, *args: str, url: str = owner_db, ok: tuple[int, ...] = (0,), **env: str) -> str:  # type: ignore[no-untyped-def]
        monkeypatch.setenv("DATABASE_URL", url)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        code = main(list(args))
        out = capfd.readouterr()
        said.extend([out.out, out.err])
        assert code in ok, (main.__module__, args, out.err)
        return out.out

    with temporary_settings(updates={PREFECT_API_URL: api}):
        migrated = json.loads(run(phase1.main, "--source", EXAMPLE, "--report-dir", runs, "--json"))
        run(phase1.main, "rollback", migrated["run_id"], "--report-dir", runs)
        run(backfill.main, "--table", "tasks", "--column", "notes", "--value", "x", "--report-dir", runs)
        run(audit.main, "--report-dir", runs, ok=(0, 1))
        run(schema_flow.main, "status")
        run(schema_flow.main, "downgrade", "0007", "--allow-data-loss", "--report-dir", runs)
        run(schema_flow.main, "upgrade", "--report-dir", runs)
        for args in (["create", "dev"], ["list"], ["connection-string", "dev"], ["delete", "dev"]):
            run(branches.main, *args, "--report-dir", runs)
        run(rollback.main, "restore", "--from-branch", migrated["checkpoint"]["name"], "--report-dir", runs)
        run(audit.main, "--report-dir", runs, url=f"postgresql://{roles.OWNER}:{roles.PASSWORD}@127.0.0.1:9/x", ok=(3,))
        main_url = neon_project.main_url
        for args in (["create", "dev"], ["list"], ["connection-string", "dev"], ["connection-string", "dev", "--pooled"],
                     ["delete", "dev"]):  # fmt: skip
            run(branches.main, *args, "--provider", "neon", "--report-dir", runs, url=main_url)
        run(phase1.main, "--source", EXAMPLE, "--provider", "neon", "--report-dir", runs, url=main_url)
        bad = neon_project.double.api_key[:-4] + "xxxx"
        run(branches.main, "list", "--provider", "neon", url=main_url, ok=(3,), NEON_API_KEY=bad)

    kept = [p for p in Path(runs).rglob("*") if p.is_file()]
    assert len(kept) >= 20, "every flow wrote its report"
    assert (home / "prefect.db").exists()
    places = {f"output {i // 2} ({'err' if i % 2 else 'out'})": text for i, text in enumerate(said)}
    places |= {str(p): p.read_bytes().decode(errors="replace") for p in kept}
    places["the Prefect server's log"] = (home / "server.log").read_text(errors="replace")
    places["Prefect's database"] = b"".join(p.read_bytes() for p in home.glob("prefect.db*")).decode(errors="replace")
    found = [(secret[:4] + "…", where) for secret in secrets for where, text in places.items() if secret in text]
    assert found == []
