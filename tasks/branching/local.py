"""Branches on one PostgreSQL server: a branch is another database on it, a copy of its parent.

`--database-url` names the main database; the branch `X` is the database `X` on the same server. A
branch remembers its parent, creation time and expiry in its database comment.

A copy is taken online by default (tasks/branching/snapshot.py: a consistent snapshot copied while
the application keeps working, verified table by table). `--template-copy` (BRANCH_COPY=template)
copies with CREATE DATABASE … TEMPLATE instead: faster, but PostgreSQL copies a template only while
nobody else is connected to it, so other sessions on the source are ended, each such interruption
logged and kept in `notes` for the report: for quiet moments. Replacing a database (reset, restore)
always ends the sessions on the one replaced. Every operation is made of units of the retry policy
(tasks/retry.py). Nothing runs in the background here, so a branch past its expiry is dropped by the
next `create` or `list` (Neon's own clean-up is not exact to the second either), and the notes say so.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from tasks import privileges
from tasks.branching import snapshot
from tasks.branching.base import Branch, rfc3339
from tasks.db import DatabaseError, connect, normalize_url, retrying, with_database
from tasks.errors import InputError

log = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}")
MARK = "branch_of"
T = TypeVar("T")
COPIES = ("online", "template")


def copy_method() -> str:
    """How branches are copied: BRANCH_COPY (set by --template-copy), else online."""
    method = os.environ.get("BRANCH_COPY") or "online"
    if method not in COPIES:
        raise InputError(f"BRANCH_COPY={method!r}: expected online or template")
    return method


class LocalBranches:
    kind = "local"

    def __init__(self, database_url: str, copy: str | None = None) -> None:
        self.server_url = normalize_url(database_url)
        self.main = make_url(self.server_url).database or "postgres"
        self.copy = copy or copy_method()
        self.notes: list[str] = []

    # --- plumbing --------------------------------------------------------------------------------

    def _admin(self) -> psycopg.Connection:
        """A connection to the maintenance database: never to a database being copied or replaced."""
        return connect(with_database(self.server_url, "postgres"), autocommit=True, step="branches")

    def _unit(self, what: str, fn: Callable[[psycopg.Connection], T]) -> T:
        """fn(admin connection) as one unit of the retry policy, on a new connection each attempt."""

        def attempt() -> T:
            with self._admin() as admin:
                return fn(admin)

        return retrying(attempt, what=what)

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
        self, admin: psycopg.Connection, database: str, why: str, statement: sql.Composable | Callable[[], None]
    ) -> None:
        """Run what needs `database` free of other sessions, ending them when they block it."""
        for attempt in range(5):
            try:
                if callable(statement):
                    statement()
                else:
                    admin.execute(statement)
                return
            except psycopg.errors.ObjectInUse:
                if attempt == 4:
                    raise DatabaseError(
                        f"{database} stays busy: sessions keep reconnecting; cannot {why}"
                    ) from None
                self._end_sessions(admin, database, why)

    def _copy(self, name: str, template: str) -> None:
        """Make the new database `name` a copy of `template` (see the module docstring), refusing up
        front what the role may not do. Each attempt starts from nothing: what a failed one left of
        `name` (which did not exist before, the callers check) is dropped first."""
        with connect(with_database(self.server_url, template), autocommit=True, step="branches") as conn:
            privileges.require_checkpoint(privileges.of(conn), template=self.copy == "template")

        def attempt() -> None:
            if self.copy == "online":
                snapshot.copy_database(self.server_url, template, name, self._admin)
                return
            statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
            with self._admin() as admin:
                self._while_busy(admin, template, f"copy it into {name}", statement)

        def clear() -> None:
            with self._admin() as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

        retrying(attempt, what=f"copy {template} into {name}", before_retry=clear)

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

        def check(admin: psycopg.Connection) -> None:
            if self._exists(admin, name):
                raise InputError(f"branch {name!r} already exists")
            if not self._exists(admin, parent):
                raise InputError(f"no database {parent!r} to branch from")

        self._unit(f"create branch {name}", check)
        created = datetime.now(UTC)
        self._copy(name, parent)
        self._unit(f"mark branch {name}", lambda admin: self._mark(admin, name, parent, created, expires_at))
        return Branch(name, parent, created, name, expires_at)

    def list(self) -> list[Branch]:
        self._drop_expired()
        return self._marked()

    def _marked(self) -> list[Branch]:
        """Every database this provider created as a branch, expired or not."""
        rows = self._unit(
            "list branches",
            lambda admin: admin.execute(
                "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database ORDER BY datname"
            ).fetchall(),
        )
        out = []
        for name, comment in rows:
            info = _parse(comment)
            if info is not None:
                out.append(
                    Branch(name, info[MARK], _when(info.get("created_at")), name, _when(info.get("expires_at")))
                )
        return out

    def _drop(self, name: str, why: str) -> None:
        def drop(admin: psycopg.Connection) -> None:
            self._end_sessions(admin, name, why)
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

        self._unit(f"drop {name}", drop)

    def _drop_expired(self) -> None:
        now = datetime.now(UTC)
        for branch in self._marked():
            if branch.expires_at and branch.expires_at <= now and branch.name != self.main:
                self._drop(branch.name, "drop it (expired)")
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
        self._drop(name, "delete it")

    def reset(self, name: str) -> Branch:
        branch = self.get(name)
        parent = branch.parent or self.main
        staged = f"{name[:40]}-reset-{uuid.uuid4().hex[:8]}"
        self._copy(staged, parent)  # the old copy stays until the new one exists
        self._swap(name, staged, keep_as=None)
        created = datetime.now(UTC)
        # as Neon does: the time-to-live it was given runs again from the reset
        ttl = branch.expires_at - branch.created_at if branch.expires_at and branch.created_at else None
        expires_at = (created + ttl).replace(microsecond=0) if ttl else None
        self._unit(f"mark branch {name}", lambda admin: self._mark(admin, name, parent, created, expires_at))
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
        if preserve_under_name and self._unit("check", lambda admin: self._exists(admin, preserve_under_name)):
            raise InputError(f"{preserve_under_name!r} already exists")
        self._copy(staged, source_branch)
        self._swap(target, staged, keep_as=preserve_under_name)
        if preserve_under_name:
            kept = preserve_under_name
            self._unit(f"mark branch {kept}", lambda admin: self._mark(admin, kept, target, datetime.now(UTC)))

    def _swap(self, target: str, staged: str, keep_as: str | None) -> None:
        """Put `staged` in place of `target`: both renames in one transaction (instant, and all or
        nothing, so a retry finds either the old state or the new one), then drop the old one."""
        old = keep_as or f"{target[:40]}-old-{uuid.uuid4().hex[:8]}"

        def rename(admin: psycopg.Connection) -> None:
            if not self._exists(admin, staged):  # an earlier attempt's commit got through
                return
            self._end_sessions(admin, target, "replace it")

            def both() -> None:
                with admin.transaction():
                    for a, b in ((target, old), (staged, target)):
                        admin.execute(
                            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(a), sql.Identifier(b))
                        )
                    admin.execute(sql.SQL("COMMENT ON DATABASE {} IS NULL").format(sql.Identifier(target)))

            self._while_busy(admin, target, "replace it", both)

        self._unit(f"replace {target}", rename)
        if not keep_as:
            self._drop(old, "drop the replaced copy")

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
