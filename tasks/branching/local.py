"""Branches on one PostgreSQL server: a branch is a database copied with CREATE DATABASE … TEMPLATE.

`--database-url` names the main database; the branch `X` is the database `X` on the same server. A
branch remembers its parent, creation time and expiry in its database comment. PostgreSQL copies a
template only while nobody else is connected to it, so other sessions on the source are ended when
needed, and every such interruption is logged and kept in `notes` for the report. Nothing runs in
the background here, so a branch past its expiry is dropped by the next `create` or `list` (Neon's
own clean-up is not exact to the second either), and the notes say so.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import UTC, datetime

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from tasks.branching.base import Branch, rfc3339
from tasks.db import DatabaseError, normalize_url, with_database
from tasks.errors import InputError, first_line

log = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}")
MARK = "branch_of"


class LocalBranches:
    kind = "local"

    def __init__(self, database_url: str) -> None:
        self.server_url = normalize_url(database_url)
        self.main = make_url(self.server_url).database or "postgres"
        self.notes: list[str] = []

    # --- plumbing --------------------------------------------------------------------------------

    def _admin(self) -> psycopg.Connection:
        """A connection to the maintenance database: never to a database being copied or replaced."""
        try:
            return psycopg.connect(with_database(self.server_url, "postgres"), autocommit=True)
        except psycopg.OperationalError as exc:
            raise DatabaseError(f"cannot reach the server's maintenance database: {first_line(exc)}") from exc

    def _end_sessions(self, admin: psycopg.Connection, database: str, why: str) -> None:
        ended = admin.execute(
            # client sessions only: CREATE DATABASE stops autovacuum workers itself, and they are
            # not the application's sessions to report
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
            (database,),
        ).fetchone()
        count = ended[0] if ended else 0
        if count:
            note = f"ended {count} session(s) on {database} to {why}"
            log.warning(note)
            self.notes.append(note)

    def _while_busy(
        self, admin: psycopg.Connection, database: str, why: str, statement: sql.Composable
    ) -> None:
        """Run a statement that needs `database` free of other sessions, ending them when they block it."""
        for attempt in range(5):
            try:
                admin.execute(statement)
                return
            except psycopg.errors.ObjectInUse:
                if attempt == 4:
                    raise DatabaseError(
                        f"{database} stays busy: sessions keep reconnecting; cannot {why}"
                    ) from None
                self._end_sessions(admin, database, why)

    def _copy(self, admin: psycopg.Connection, name: str, template: str) -> None:
        """CREATE DATABASE name TEMPLATE template."""
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template)
        )
        self._while_busy(admin, template, f"copy it into {name}", statement)

    def _mark(
        self,
        admin: psycopg.Connection,
        name: str,
        parent: str,
        created: datetime,
        expires_at: datetime | None = None,
    ) -> None:
        info = {MARK: parent, "created_at": created.isoformat()}
        if expires_at:
            info["expires_at"] = rfc3339(expires_at)
        comment = json.dumps(info)
        admin.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(comment))
        )

    def _exists(self, admin: psycopg.Connection, name: str) -> bool:
        return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None

    @staticmethod
    def _check_name(name: str) -> str:
        if not NAME.fullmatch(name):
            raise InputError(f"invalid branch name {name!r}: letters, digits, _ . - (up to 63)")
        return name

    # --- the interface ---------------------------------------------------------------------------

    def create(
        self, name: str, parent: str | None = None, *, at: str | None = None, expires_at: datetime | None = None
    ) -> Branch:
        if at:
            raise InputError(
                "a local branch is a copy of now; branching at a timestamp or LSN needs --provider neon"
            )
        parent = parent or self.main
        self._check_name(name)
        self._drop_expired()
        with self._admin() as admin:
            if self._exists(admin, name):
                raise InputError(f"branch {name!r} already exists")
            if not self._exists(admin, parent):
                raise InputError(f"no database {parent!r} to branch from")
            created = datetime.now(UTC)
            self._copy(admin, name, parent)
            self._mark(admin, name, parent, created, expires_at)
        return Branch(name, parent, created, name, expires_at)

    def list(self) -> list[Branch]:
        self._drop_expired()
        return self._marked()

    def _marked(self) -> list[Branch]:
        """Every database this provider created as a branch, expired or not."""
        with self._admin() as admin:
            rows = admin.execute(
                "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database ORDER BY datname"
            ).fetchall()
        out = []
        for name, comment in rows:
            info = _parse(comment)
            if info is not None:
                out.append(
                    Branch(name, info[MARK], _when(info.get("created_at")), name, _when(info.get("expires_at")))
                )
        return out

    def _drop_expired(self) -> None:
        now = datetime.now(UTC)
        for branch in self._marked():
            if branch.expires_at and branch.expires_at <= now and branch.name != self.main:
                with self._admin() as admin:
                    self._end_sessions(admin, branch.name, "drop it (expired)")
                    admin.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(branch.name))
                    )
                note = f"branch {branch.name} expired at {rfc3339(branch.expires_at)}: dropped"
                log.info(note)
                self.notes.append(note)

    def get(self, name: str) -> Branch:
        for branch in self._marked():
            if branch.name == name:
                return branch
        raise InputError(f"no branch {name!r} (python -m flows.branches list)")

    def delete(self, name: str) -> None:
        if name == self.main:
            raise InputError(f"{name!r} is the main database, not a branch; it is never deleted from here")
        self.get(name)  # only what we created as a branch
        with self._admin() as admin:
            self._end_sessions(admin, name, "delete it")
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def reset(self, name: str) -> Branch:
        branch = self.get(name)
        parent = branch.parent or self.main
        staged = f"{name[:40]}-reset-{uuid.uuid4().hex[:8]}"
        with self._admin() as admin:
            self._copy(admin, staged, parent)  # the old copy stays until the new one exists
            self._swap(admin, name, staged, keep_as=None)
            created = datetime.now(UTC)
            # as Neon does: the time-to-live it was given runs again from the reset
            ttl = branch.expires_at - branch.created_at if branch.expires_at and branch.created_at else None
            expires_at = (created + ttl).replace(microsecond=0) if ttl else None
            self._mark(admin, name, parent, created, expires_at)
        return Branch(name, parent, created, name, expires_at)

    def restore(
        self,
        target: str,
        *,
        source_branch: str | None = None,
        timestamp: str | None = None,
        preserve_under_name: str | None = None,
    ) -> None:
        if timestamp:
            raise InputError(
                "point-in-time restore needs --provider neon; locally, restore from a checkpoint branch"
            )
        if not source_branch:
            raise InputError("say which branch to restore from (--from-branch NAME)")
        if preserve_under_name:
            self._check_name(preserve_under_name)
        self.get(source_branch)
        staged = f"{target[:40]}-restore-{uuid.uuid4().hex[:8]}"
        with self._admin() as admin:
            if preserve_under_name and self._exists(admin, preserve_under_name):
                raise InputError(f"{preserve_under_name!r} already exists")
            self._copy(admin, staged, source_branch)
            self._swap(admin, target, staged, keep_as=preserve_under_name)
            if preserve_under_name:
                self._mark(admin, preserve_under_name, target, datetime.now(UTC))

    def _swap(self, admin: psycopg.Connection, target: str, staged: str, keep_as: str | None) -> None:
        """Put `staged` in place of `target` by renames (instant), keeping or dropping the old one."""
        old = keep_as or f"{target[:40]}-old-{uuid.uuid4().hex[:8]}"
        self._end_sessions(admin, target, "replace it")
        rename = sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(target), sql.Identifier(old))
        self._while_busy(admin, target, "replace it", rename)
        admin.execute(
            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(staged), sql.Identifier(target))
        )
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS NULL").format(sql.Identifier(target)))
        if not keep_as:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(old)))

    def url(self, name: str) -> str:
        return with_database(self.server_url, name)

    def check_main(self, url: str) -> None:
        """Nothing to check: main is the database the URL names."""

    def connection_uri(
        self, name: str, *, pooled: bool = False, database: str | None = None, role: str | None = None
    ) -> str:
        if pooled:
            raise InputError("a local server has no connection pooler: --pooled needs --provider neon")
        if database and database != name:
            raise InputError(
                "a local branch is one database, named like the branch: --database needs --provider neon"
            )
        if name != self.main:
            self.get(name)
        url = self.url(name)
        if role:  # another role's password is not ours to know: the URL carries none
            u = make_url(url)
            url = URL.create(u.drivername, role, None, u.host, u.port, u.database, u.query).render_as_string(
                hide_password=False
            )
        return url


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def _parse(comment: str | None) -> dict | None:
    if not comment or MARK not in comment:
        return None
    try:
        info = json.loads(comment)
    except ValueError:
        return None
    return info if isinstance(info, dict) and MARK in info else None
