"""`connection-string` and `--expires-in` for both providers: the environment-specific connection
strings of the specification (masked unless --reveal, or written to an env file), and branches that
go away on their own."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from flows.commands.branches import main
from tasks.branching.local import LocalBranches
from tests import neon_double
from tests.neon_double import NeonProject

neon_project = neon_double.neon_project
neon_flow_env = neon_double.neon_flow_env


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out.strip(), out.err.strip()


def test_connection_string_on_neon(neon_project: NeonProject, monkeypatch, capsys, tmp_path: Path) -> None:
    password = neon_project.double.password
    monkeypatch.setenv("DATABASE_URL", neon_project.main_url)
    code, shown, _ = run(capsys, "connection-string", "main", "--provider", "neon")
    assert code == 0 and password not in shown and make_url(shown).database == "neondb" and ":***@" in shown
    code, revealed, _ = run(capsys, "connection-string", "main", "--provider", "neon", "--reveal")
    assert code == 0 and revealed == neon_project.main_url
    code, pooled, note = run(capsys, "connection-string", "main", "--provider", "neon", "--pooled", "--reveal")
    assert "-pooler." in pooled and pooled.replace("-pooler.", ".") == revealed and "migrations need" in note

    env_file = tmp_path / ".env.dev"
    env_file.write_text("APP_MODE=dev\nDATABASE_URL='postgresql://old@x/y'\n")
    code, printed, said = run(capsys, "connection-string", "main", "--provider", "neon", "--env-file", str(env_file))
    assert code == 0 and password not in printed + said and str(env_file) in said
    assert env_file.read_text() == f"APP_MODE=dev\nDATABASE_URL='{revealed}'\n"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600  # it holds a password now

    code, _, error = run(capsys, "connection-string", "main", "--provider", "neon", "--database", "nope")
    assert code == 2 and error.startswith("error: Neon: not found") and "\n" not in error
    code, _, error = run(capsys, "connection-string", "nope", "--provider", "neon")
    assert code == 2 and "no Neon branch 'nope'" in error

    monkeypatch.delenv("DATABASE_URL")  # asking Neon needs no local database
    monkeypatch.setattr("tasks.db.embedded_server_url", lambda *a, **k: pytest.fail("embedded server started"))
    assert run(capsys, "connection-string", "main", "--provider", "neon", "--reveal")[1] == revealed


def test_connection_string_locally(db_url: str, monkeypatch, capsys) -> None:
    url = make_url(db_url).set(password="local-pw").render_as_string(hide_password=False)
    monkeypatch.setenv("DATABASE_URL", url)
    branches = LocalBranches(url)
    dev = f"{branches.main}-dev"
    branches.create(dev)
    code, shown, _ = run(capsys, "connection-string", dev)
    assert code == 0 and make_url(shown).database == dev and "local-pw" not in shown and ":***@" in shown
    code, revealed, _ = run(capsys, "connection-string", dev, "--reveal")
    assert revealed == branches.url(dev)
    code, as_role, _ = run(capsys, "connection-string", dev, "--role", "app", "--reveal")
    assert make_url(as_role).username == "app" and make_url(as_role).password is None
    for args, problem in (
        (["--pooled"], "no connection pooler"),
        (["--database", "other"], "--database needs --provider neon"),
    ):
        code, _, error = run(capsys, "connection-string", dev, *args)
        assert code == 2 and problem in error
    code, _, error = run(capsys, "connection-string", f"{branches.main}-nope")
    assert code == 2 and "no branch" in error


def test_local_branches_expire(db_url: str) -> None:
    branches = LocalBranches(db_url)
    now = datetime.now(UTC).replace(microsecond=0)
    kept = branches.create(f"{branches.main}-dev", expires_at=now + timedelta(days=7))
    branches.create(f"{branches.main}-old", expires_at=now - timedelta(seconds=1))
    listed = {b.name: b for b in branches.list()}
    assert listed[kept.name].expires_at == now + timedelta(days=7)
    assert f"{branches.main}-old" not in listed
    assert any(n.startswith(f"branch {branches.main}-old expired at") for n in branches.notes)
    reset = branches.reset(kept.name)  # the same time-to-live, from now
    assert reset.expires_at and reset.expires_at >= kept.expires_at


def test_create_with_an_expiry_on_neon(neon_project: NeonProject, neon_flow_env: dict) -> None:
    from flows.branches import branch_create

    state = branch_create(name="dev", expires_in="7d", branch_provider="neon", report_dir=neon_flow_env["report_dir"], return_state=True)
    assert state.is_completed(), state.message
    expires = neon_project.double.branch(neon_project.id, "dev").expires_at
    assert expires and timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)
    assert state.result()["report_data"]["branch"]["expires_at"] == expires.isoformat()
    refused = branch_create(name="dev2", expires_in="soon", branch_provider="neon", report_dir=neon_flow_env["report_dir"], return_state=True)
    outcome = refused.result(raise_on_failure=False)
    assert outcome["exit_code"] == 2 and "not a duration" in outcome["error"]


@pytest.mark.parametrize("text", ["0d", "7", "1y", "-1d"])
def test_expiry_durations_are_checked(text: str) -> None:
    from tasks.branching.base import expiry
    from tasks.errors import InputError

    with pytest.raises(InputError, match="not a duration"):
        expiry(text)
