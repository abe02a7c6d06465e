"""A local branch taken online: a consistent snapshot of the source copied into a new database,
while the application goes on reading and writing the source.

A REPEATABLE READ transaction on the source exports its snapshot (pg_export_snapshot); `pg_dump
--snapshot` dumps exactly that state and `psql` restores it, in one transaction, into a database
created from template0 with the source's encoding and locale. Then every table of the copy is
fingerprinted and compared with the source's fingerprints read in the same snapshot (the checksums
a restore is verified by, tasks/verify.py): a checkpoint is only named once it is proven equal to
what it copied. Nobody is disconnected, and nothing waits long on another session: pg_dump takes
ACCESS SHARE locks (which writers do not conflict with) and gives up after LOCK_WAIT if a session
holds one of the tables in ACCESS EXCLUSIVE mode; the attempt is then retried (tasks/retry.py).

Measured on two cores over 300,000 tasks while two writers ran (docs/checkpoints.md): about 2.6 s
for the copy and 0.6 s for each side's fingerprints, against 0.3 s for CREATE DATABASE … TEMPLATE,
which must end every other session on the source first (`--template-copy`, for quiet moments).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from tasks import pgtools
from tasks.db import APPLICATION, DatabaseError, connect, label, normalize_url, with_database
from tasks.errors import VerificationFailed
from tasks.verify import compare_fingerprints, table_columns, table_fingerprints

LOCK_WAIT = "5s"  # pg_dump's --lock-wait-timeout: never queue long behind another session's lock


class CopyFailed(DatabaseError):
    """pg_dump or psql failed; retried as transient (a pre-check refuses what would always fail)."""


def _locale_clause(conn: psycopg.Connection) -> sql.Composable:
    """ENCODING, LC_COLLATE, LC_CTYPE (and the locale provider, 15+) of the current database."""
    row = conn.execute(
        "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
        "WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    parts = [
        sql.SQL("ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
            sql.Literal(row[0]), sql.Literal(row[1]), sql.Literal(row[2])
        )
    ]
    if conn.info.server_version >= 150000:
        provider = conn.execute(
            "SELECT datlocprovider FROM pg_database WHERE datname = current_database()"
        ).fetchone()
        if provider and provider[0] == "i":  # ICU: name the same ICU locale (libc is the default)
            icu = conn.execute(
                "SELECT daticulocale FROM pg_database WHERE datname = current_database()"
                if conn.info.server_version < 170000
                else "SELECT datlocale FROM pg_database WHERE datname = current_database()"
            ).fetchone()
            parts.append(sql.SQL("LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(icu[0] if icu else "")))
    return sql.SQL(" ").join(parts)


def _child_env(url: str, step: str) -> tuple[str, dict[str, str]]:
    """A libpq URL without the password, and the environment that carries it (never argv: ps shows that)."""
    u = make_url(normalize_url(url))
    env = {**os.environ, "PGAPPNAME": f"{APPLICATION}/{step}", "PGCONNECT_TIMEOUT": "10"}
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    return u.set(password=None).render_as_string(hide_password=False), env


def copy_database(server_url: str, source: str, target: str, admin: Callable[[], psycopg.Connection]) -> None:
    """Create `target` as a verified copy of `source` as it is now; on any failure `target` is
    dropped again (it is only kept once it is proven equal)."""
    src = connect(with_database(server_url, source), step="checkpoint:snapshot")
    created = False
    try:
        src.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = src.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
        tools = pgtools.clients(src.info.server_version // 10000)
        # a superuser restores every object with its owner; any other role restores them as itself
        # (it may only if it owns them all: tasks/privileges.py checks that first)
        row = src.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        owners = bool(row and row[0])
        with admin() as a:
            a.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 {}").format(
                    sql.Identifier(target), _locale_clause(src)
                )
            )
        created = True
        _dump_restore(
            tools, with_database(server_url, source), with_database(server_url, target), snapshot, owners
        )
        label(src, "checkpoint:verify")
        expected = table_fingerprints(src, table_columns(src, bookkeeping=True))
        src.rollback()
        with connect(with_database(server_url, target), step="checkpoint:verify") as dst:
            problems = compare_fingerprints(expected, table_fingerprints(dst, table_columns(dst, bookkeeping=True)))
        if problems:
            raise VerificationFailed(f"the copy of {source} into {target} differs: {problems[0]}")
        created = False  # proven: keep it
    finally:
        src.close()
        if created:
            with admin() as a:
                a.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target)))


def _dump_restore(
    tools: dict[str, os.PathLike[str]], source_url: str, target_url: str, snapshot: str, owners: bool
) -> None:
    """pg_dump of the snapshot piped into psql, in one transaction; both ended if anything fails."""
    source, dump_env = _child_env(source_url, "checkpoint:dump")
    target, restore_env = _child_env(target_url, "checkpoint:restore")
    with tempfile.TemporaryFile() as dump_err, tempfile.TemporaryFile() as restore_err:
        dump = subprocess.Popen(
            [tools["pg_dump"], "--no-password", f"--snapshot={snapshot}", f"--lock-wait-timeout={LOCK_WAIT}",
             *([] if owners else ["--no-owner"]), "--dbname", source],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=dump_err, env=dump_env,
        )  # fmt: skip
        try:
            restore = subprocess.Popen(
                [tools["psql"], "--no-psqlrc", "--quiet", "--no-password", "--single-transaction",
                 "--set", "ON_ERROR_STOP=1", "--dbname", target],
                stdin=dump.stdout, stdout=subprocess.DEVNULL, stderr=restore_err, env=restore_env,
            )  # fmt: skip
            assert dump.stdout is not None
            dump.stdout.close()  # psql holds the pipe now: pg_dump sees it close if psql stops
            try:
                restored, dumped = restore.wait(), dump.wait()
            finally:
                _end(restore)
        finally:
            _end(dump)
        for name, code, err in (("pg_dump", dumped, dump_err), ("psql", restored, restore_err)):
            if code != 0:
                err.seek(0)
                said = [line for line in err.read().decode(errors="replace").splitlines() if line.strip()]
                raise CopyFailed(f"{name} exited {code}: {said[-1] if said else 'no message'}", transient=True)


def _end(proc: subprocess.Popen[bytes]) -> None:
    """A child still running when we leave (an error, an interruption) is stopped, never left behind."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

