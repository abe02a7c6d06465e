"""A test double of Neon's API v2 on loopback, for the tests: the Neon cloud is out of reach here.

It answers the endpoints the client uses (branches: list, create, delete, restore, a branch's
endpoints; operations; the connection URI), and holds every request and every answer to Neon's published OpenAPI definition
(tests/neon_openapi.py); what does not match is answered 400 and kept in `violations`, which the
fixtures require to stay empty. Its branches are real databases on the test PostgreSQL:

- a branch is a copy of its parent (CREATE DATABASE … TEMPLATE, through LocalBranches' own copy,
  so other sessions on the parent are ended for a moment, which Neon does not do);
- each branch has a compute endpoint: a TCP listener on loopback that forwards to the branch's
  database, rewriting the database name of the startup packet as Neon's proxy routes by host, so
  every branch's URI names `neondb` and differs by host and port, as on Neon. Hosts are
  `ep-….local.neon.test` (`-pooler` for pooled URIs; no PgBouncer behind them) reached through
  libpq's `hostaddr=127.0.0.1`; a suspended compute holds its first connection for `cold_start`
  seconds, as Neon's proxy does while the compute starts;
- the role is `neondb_owner`, a member of a `neon_superuser` role and no superuser, owning the
  databases and their objects, as on Neon;
- operations start `running` and are `finished` after `polls_to_finish` reads; a change while one
  runs gets 423 Locked; restore with `preserve_under_name` keeps the old state as a new branch,
  which becomes the target's parent and takes over its children (Neon's documented behaviour);
  a reset from the parent reapplies the branch's time-to-live (`expires_at`).

Not emulated (answered 400): branching or restoring at a timestamp or LSN (no WAL history here).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import secrets
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tasks import schema
from tasks.branching.base import rfc3339
from tasks.branching.local import LocalBranches
from tests.neon_openapi import Answer, Call, Contract, contract

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request on the test output

ROLE = "neondb_owner"
DATABASE = "neondb"
SSL_REQUEST, GSS_REQUEST, CANCEL_REQUEST = 80877103, 80877104, 80877102

ROUTES = Map(
    [
        Rule("/api/v2/projects/<project_id>/branches", methods=["GET"], endpoint="list_branches"),
        Rule("/api/v2/projects/<project_id>/branches", methods=["POST"], endpoint="create_branch"),
        Rule("/api/v2/projects/<project_id>/branches/<branch_id>", methods=["DELETE"], endpoint="delete_branch"),
        Rule("/api/v2/projects/<project_id>/branches/<branch_id>/restore", methods=["POST"], endpoint="restore"),
        Rule("/api/v2/projects/<project_id>/branches/<branch_id>/endpoints", methods=["GET"], endpoint="endpoints"),
        Rule("/api/v2/projects/<project_id>/operations/<operation_id>", methods=["GET"], endpoint="operation"),
        Rule("/api/v2/projects/<project_id>/connection_uri", methods=["GET"], endpoint="connection_uri"),
    ]
)


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# --- compute endpoints ------------------------------------------------------------------------------


def _upstream(server_url: str) -> tuple[socket.AddressFamily, Any]:
    """Where the test PostgreSQL listens: its Unix socket (the embedded server) or host:port."""
    url = make_url(server_url)
    host = url.query.get("host") or url.host or "localhost"
    host = host[0] if isinstance(host, tuple) else host
    port = url.port or 5432
    if host.startswith("/"):
        return socket.AF_UNIX, f"{host}/.s.PGSQL.{port}"
    return socket.AF_INET, (host, port)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


class Compute:
    """One branch's read-write endpoint: loopback TCP in front of the branch's database."""

    def __init__(self, upstream: tuple[socket.AddressFamily, Any], database: Callable[[], str]) -> None:
        self.family, self.address = upstream
        self.database = database
        self.id = f"ep-double-{secrets.token_hex(4)}"
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.suspended, self.cold_start = False, 0.0
        self._waking = threading.Lock()
        self._open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def host(self, pooled: bool = False) -> str:
        return f"{self.id}{'-pooler' if pooled else ''}.local.neon.test"

    def close(self) -> None:
        for sock in [self.listener, *self._open]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()/recv()
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.socket(self.family, socket.SOCK_STREAM)
        self._open |= {client, upstream}
        try:
            with self._waking:  # the first connection to a suspended compute waits for it to start
                if self.suspended:
                    time.sleep(self.cold_start)
                    self.suspended = False
            packet = self._startup(client)
            if packet is None:
                return
            upstream.connect(self.address)
            upstream.sendall(packet)
            back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
            back.start()
            _pipe(client, upstream)
            back.join()
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                self._open.discard(sock)
                sock.close()

    def _startup(self, client: socket.socket) -> bytes | None:
        """The client's startup packet, with the database it names replaced by the branch's."""
        while True:
            head = _recv_exact(client, 8)
            if head is None:
                return None
            length, code = struct.unpack("!ii", head)
            if code in (SSL_REQUEST, GSS_REQUEST):
                client.sendall(b"N")  # plain TCP on loopback; libpq then sends the startup packet
                continue
            rest = _recv_exact(client, length - 8) or b""
            if code == CANCEL_REQUEST:
                return head + rest
            parts, params = rest.split(b"\0"), {}
            for i in range(0, len(parts) - 1, 2):
                if not parts[i]:
                    break
                params[parts[i]] = parts[i + 1]
            if params.get(b"database", DATABASE.encode()) == DATABASE.encode():
                params[b"database"] = self.database().encode()
            body = b"".join(k + b"\0" + v + b"\0" for k, v in params.items()) + b"\0"
            return struct.pack("!ii", len(body) + 8, code) + body


# --- projects and branches --------------------------------------------------------------------------


def _now() -> str:
    return rfc3339(datetime.now(UTC).replace(microsecond=0))


@dataclass
class DoubleBranch:
    id: str
    project_id: str
    name: str
    database: str  # the local database behind it
    parent_id: str | None
    default: bool = False
    expires_at: datetime | None = None
    ttl: int | None = None
    compute: Compute | None = None
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)
    last_reset_at: str | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "project_id": self.project_id,
            "name": self.name,
            "current_state": "ready",
            "state_changed_at": self.updated_at,
            "creation_source": "console",
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "default": self.default,
            "protected": False,
            "cpu_used_sec": 0,
            "active_time_seconds": 0,
            "compute_time_seconds": 0,
            "written_data_bytes": 0,
            "data_transfer_bytes": 0,
            "init_source": "parent-data",
        }
        if self.parent_id:
            out["parent_id"] = self.parent_id
        if self.expires_at:
            out["expires_at"] = rfc3339(self.expires_at)
            out["ttl_interval_seconds"] = self.ttl
        if self.last_reset_at:
            out["last_reset_at"] = self.last_reset_at
        return out


@dataclass
class DoubleProject:
    id: str
    prefix: str  # the main database's name; every branch's database starts with it
    branches: dict[str, DoubleBranch] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)

    def by_name(self, name: str) -> DoubleBranch:
        return next(b for b in self.branches.values() if b.name == name)

    @property
    def default(self) -> DoubleBranch:
        return next(b for b in self.branches.values() if b.default)


class NeonDouble:
    def __init__(self, server_url: str, definition: Contract, template: str, password: str) -> None:
        self.server_url, self.contract, self.template, self.password = server_url, definition, template, password
        self.api_key = f"neon-double-key-{secrets.token_hex(8)}"
        # its copy and swap, the same the local provider uses (the quick template copy: a test double)
        self.storage = LocalBranches(server_url, copy="template")
        self.upstream = _upstream(server_url)
        self.projects: dict[str, DoubleProject] = {}
        self.violations: list[str] = []
        self.calls: list[str] = []
        self.polls_to_finish = 1
        self._lock = threading.RLock()
        self.http = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_port}/api/v2"

    def stop(self) -> None:
        self.http.shutdown()
        for project in list(self.projects):
            self.drop_project(project)

    # --- what tests set up and look at -----------------------------------------------------------

    def new_project(self) -> str:
        """A project whose default branch `main` is a fresh database at head, owned by the role."""
        project = DoubleProject(f"double-{secrets.token_hex(5)}", f"t_neon_{secrets.token_hex(6)}")
        with self.storage._admin() as admin:
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
                    sql.Identifier(project.prefix), sql.Identifier(self.template), sql.Identifier(ROLE)
                )
            )
        main = self._branch(project, "main", project.prefix, None)
        main.default = True
        self.projects[project.id] = project
        return project.id

    def drop_project(self, project_id: str) -> None:
        project = self.projects.pop(project_id, None)
        if not project:
            return
        for branch in project.branches.values():
            if branch.compute:
                branch.compute.close()
        with self.storage._admin() as admin:
            names = admin.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (project.prefix + "%",)
            ).fetchall()
            for (name,) in names:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def uri(self, project_id: str, name: str, *, pooled: bool = False) -> str:
        branch = self.projects[project_id].by_name(name)
        assert branch.compute, f"branch {name} has no compute"
        host = branch.compute.host(pooled)
        return f"postgresql://{ROLE}:{self.password}@{host}:{branch.compute.port}/{DATABASE}?hostaddr=127.0.0.1"

    def branch(self, project_id: str, name: str) -> DoubleBranch:
        return self.projects[project_id].by_name(name)

    def suspend(self, project_id: str, name: str, cold_start: float) -> None:
        """Scale the branch's compute to zero: its next first connection waits cold_start seconds."""
        compute = self.branch(project_id, name).compute
        assert compute
        compute.suspended, compute.cold_start = True, cold_start

    # --- HTTP --------------------------------------------------------------------------------------

    @Request.application
    def _wsgi(self, request: Request) -> Response:
        call = Call(
            request.method,
            request.path,
            list(request.args.items(multi=True)),
            dict(request.headers),
            request.get_data() or None,
            request.content_type or "application/json",
        )
        self.calls.append(f"{request.method} {request.path}")
        problems = self.contract.request_problems(call)
        if problems:
            self.violations += [f"request {request.method} {request.path}: {p}" for p in problems]
            status, body = 400, _error("the request does not match Neon's API definition: " + problems[0])
        elif request.headers.get("Authorization") != f"Bearer {self.api_key}":
            status, body = 401, _error("authorization failed")
        else:
            try:
                endpoint, args = ROUTES.bind_to_environ(request.environ).match()
                with self._lock:
                    project = self.projects.get(args.pop("project_id"))
                    if project is None:
                        raise Refused(404, "project not found")
                    status, body = getattr(self, f"_{endpoint}")(project, request, **args)
            except Refused as exc:
                status, body = exc.status, _error(str(exc))
            except HTTPException as exc:
                self.violations.append(f"unexpected call {request.method} {request.path}")
                status, body = exc.code or 404, _error(exc.description or "not found")
        data = json.dumps(body).encode()
        problems = self.contract.response_problems(call, Answer(status, data))
        self.violations += [f"answer to {request.method} {request.path} ({status}): {p}" for p in problems]
        return Response(data, status=status, content_type="application/json")

    # --- the endpoints -----------------------------------------------------------------------------

    def _list_branches(self, project: DoubleProject, request: Request) -> tuple[int, Any]:
        branches = sorted(project.branches.values(), key=lambda b: (b.created_at, b.id))
        if request.args.get("sort_order", "desc") == "desc":
            branches.reverse()
        start = int(request.args.get("cursor") or 0)
        limit = int(request.args.get("limit") or len(branches) or 1)
        page = branches[start : start + limit]
        body: dict[str, Any] = {"branches": [b.describe() for b in page], "annotations": {}}
        if start + limit < len(branches):
            body["pagination"] = {"next": str(start + limit)}
        return 200, body

    def _create_branch(self, project: DoubleProject, request: Request) -> tuple[int, Any]:
        self._idle(project)
        wanted = (request.get_json(silent=True) or {}).get("branch", {})
        endpoints = (request.get_json(silent=True) or {}).get("endpoints", [])
        if wanted.get("parent_lsn") or wanted.get("parent_timestamp"):
            raise Refused(400, "the test double keeps no history: it cannot branch at a timestamp or LSN")
        parent = project.branches.get(wanted.get("parent_id") or project.default.id)
        if parent is None:
            raise Refused(404, "parent branch not found")
        branch_id = f"br-double-{secrets.token_hex(4)}"
        database = f"{project.prefix}_{branch_id}"
        self._copy(database, parent.database)
        made = self._branch(project, wanted.get("name") or branch_id, database, parent.id, branch_id, compute=bool(endpoints))
        if wanted.get("expires_at"):
            made.expires_at = datetime.fromisoformat(wanted["expires_at"].replace("Z", "+00:00"))
            made.ttl = int((made.expires_at - datetime.now(UTC)).total_seconds())
        ops = [self._op(project, "create_timeline", made)]
        if made.compute:
            ops.append(self._op(project, "start_compute", made))
        return 201, {
            "branch": made.describe(),
            "endpoints": [self._endpoint(made)] if made.compute else [],
            "operations": ops,
            "roles": [{"branch_id": made.id, "name": ROLE, "created_at": made.created_at, "updated_at": made.created_at}],
            "databases": [
                {
                    "id": 1,
                    "branch_id": made.id,
                    "name": DATABASE,
                    "owner_name": ROLE,
                    "created_at": made.created_at,
                    "updated_at": made.created_at,
                }
            ],
            "connection_uris": [
                {
                    "connection_uri": self.uri(project.id, made.name),
                    "connection_parameters": {
                        "database": DATABASE,
                        "password": self.password,
                        "role": ROLE,
                        "host": made.compute.host(),
                        "pooler_host": made.compute.host(pooled=True),
                    },
                }
            ]
            if made.compute
            else [],
        }

    def _delete_branch(self, project: DoubleProject, request: Request, branch_id: str) -> tuple[int, Any]:
        self._idle(project)
        branch = self._get(project, branch_id)
        if branch.default:
            raise Refused(400, "cannot delete the project's default branch")
        if any(b.parent_id == branch.id for b in project.branches.values()):
            raise Refused(400, "cannot delete a branch that has child branches")
        if branch.compute:
            branch.compute.close()
        with self.storage._admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(branch.database)))
        del project.branches[branch.id]
        ops = [self._op(project, "suspend_compute", branch), self._op(project, "delete_timeline", branch)]
        return 200, {"branch": branch.describe(), "operations": ops}

    def _restore(self, project: DoubleProject, request: Request, branch_id: str) -> tuple[int, Any]:
        self._idle(project)
        target = self._get(project, branch_id)
        wanted = request.get_json(silent=True) or {}
        source = self._get(project, wanted["source_branch_id"])
        if wanted.get("source_timestamp") or wanted.get("source_lsn"):
            raise Refused(400, "the test double keeps no history: it cannot restore to a timestamp or LSN")
        if source is target:
            raise Refused(400, "restoring a branch from itself needs source_timestamp or source_lsn")
        children = [b for b in project.branches.values() if b.parent_id == target.id]
        preserve = wanted.get("preserve_under_name")
        if children and not preserve:
            raise Refused(400, "the branch has children: preserve_under_name is required")
        reset_from_parent = source.id == target.parent_id
        kept_id = f"br-double-{secrets.token_hex(4)}"
        kept_db = f"{project.prefix}_{kept_id}" if preserve else None
        staged = f"{project.prefix}_staged_{secrets.token_hex(4)}"
        self._copy(staged, source.database)
        # connections to the target are interrupted, as on Neon
        self.storage._swap(target.database, staged, keep_as=kept_db)
        if preserve and kept_db:
            kept = self._branch(project, preserve, kept_db, target.parent_id, kept_id)
            for child in children:
                child.parent_id = kept.id
            target.parent_id = kept.id
        target.updated_at = _now()
        if reset_from_parent:
            target.last_reset_at = target.updated_at
            if target.ttl:
                target.expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=target.ttl)
        ops = [self._op(project, "create_timeline", target), self._op(project, "start_compute", target)]
        return 200, {"branch": target.describe(), "operations": ops}

    def _endpoints(self, project: DoubleProject, request: Request, branch_id: str) -> tuple[int, Any]:
        branch = self._get(project, branch_id)
        return 200, {"endpoints": [self._endpoint(branch)] if branch.compute else []}

    def _operation(self, project: DoubleProject, request: Request, operation_id: str) -> tuple[int, Any]:
        op = project.operations.get(operation_id)
        if op is None:
            raise Refused(404, "operation not found")
        if op["status"] == "running":
            op["_reads"] += 1
            if op["_reads"] >= self.polls_to_finish:
                op.update(status="finished", updated_at=_now())
        return 200, {"operation": {k: v for k, v in op.items() if not k.startswith("_")}}

    def _connection_uri(self, project: DoubleProject, request: Request) -> tuple[int, Any]:
        branch = self._get(project, request.args.get("branch_id") or project.default.id)
        if request.args["database_name"] != DATABASE or request.args["role_name"] != ROLE:
            raise Refused(404, "database or role not found on this branch")
        if not branch.compute:
            raise Refused(400, "the branch has no read-write endpoint")
        return 200, {"uri": self.uri(project.id, branch.name, pooled=request.args.get("pooled") == "true")}

    # --- plumbing ------------------------------------------------------------------------------------

    def _branch(
        self,
        project: DoubleProject,
        name: str,
        database: str,
        parent_id: str | None,
        branch_id: str | None = None,
        compute: bool = True,
    ) -> DoubleBranch:
        made = DoubleBranch(branch_id or f"br-double-{secrets.token_hex(4)}", project.id, name, database, parent_id)
        if compute:
            made.compute = Compute(self.upstream, lambda: made.database)
        project.branches[made.id] = made
        return made

    def _copy(self, name: str, source: str) -> None:
        self.storage._copy(name, source)
        with self.storage._admin() as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(name), sql.Identifier(ROLE)))

    @staticmethod
    def _get(project: DoubleProject, branch_id: str) -> DoubleBranch:
        if branch_id not in project.branches:
            raise Refused(404, f"branch {branch_id} not found")
        return project.branches[branch_id]

    @staticmethod
    def _idle(project: DoubleProject) -> None:
        if any(op["status"] == "running" for op in project.operations.values()):
            raise Refused(423, "project already has running operations, scheduling of new ones is prohibited")

    @staticmethod
    def _op(project: DoubleProject, action: str, branch: DoubleBranch) -> dict[str, Any]:
        op = {
            "id": str(uuid.uuid4()),
            "project_id": project.id,
            "branch_id": branch.id,
            "action": action,
            "status": "running",
            "failures_count": 0,
            "created_at": _now(),
            "updated_at": _now(),
            "total_duration_ms": 0,
            "_reads": 0,
        }
        if branch.compute:
            op["endpoint_id"] = branch.compute.id
        project.operations[op["id"]] = op
        return {k: v for k, v in op.items() if not k.startswith("_")}

    @staticmethod
    def _endpoint(branch: DoubleBranch) -> dict[str, Any]:
        assert branch.compute
        return {
            "host": branch.compute.host(),
            "id": branch.compute.id,
            "project_id": branch.project_id,
            "branch_id": branch.id,
            "region_id": "local",
            "autoscaling_limit_min_cu": 0.25,
            "autoscaling_limit_max_cu": 1,
            "type": "read_write",
            "current_state": "active",
            "pooler_enabled": False,
            "pooler_mode": "transaction",
            "disabled": False,
            "passwordless_access": False,
            "creation_source": "console",
            "created_at": branch.created_at,
            "updated_at": branch.created_at,
            "settings": {},
            "proxy_host": "local.neon.test",
            "suspend_timeout_seconds": 0,
            "provisioner": "k8s-neonvm",
        }


def _error(message: str) -> dict[str, str]:
    return {"code": "", "message": message}


# --- set-up once per test session -----------------------------------------------------------------

_SHARED: dict[str, NeonDouble] = {}


def _prepare(server_url: str, password: str) -> str:
    """The role Neon gives a project (neondb_owner in neon_superuser, no superuser) and a database
    at head that it owns, to copy for each project's main."""
    template = f"tmpl_neon_{secrets.token_hex(5)}"
    try:
        with psycopg.connect(server_url, autocommit=True) as admin:
            if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = 'neon_superuser'").fetchone():
                admin.execute("CREATE ROLE neon_superuser NOLOGIN CREATEDB CREATEROLE BYPASSRLS")
            verb = "ALTER" if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone() else "CREATE"
            admin.execute(
                sql.SQL(verb + " ROLE {} LOGIN CREATEDB CREATEROLE NOSUPERUSER PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal(password)
                )
            )
            admin.execute(sql.SQL("GRANT neon_superuser TO {}").format(sql.Identifier(ROLE)))
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(template), sql.Identifier(ROLE))
            )
    except psycopg.errors.InsufficientPrivilege as exc:
        pytest.skip(f"the Neon test double needs a server role that may create roles: {exc}")
    owner = make_url(server_url).set(username=ROLE, password=password, database=template)
    schema.upgrade(owner.render_as_string(hide_password=False))
    return template


def shared(server_url: str) -> NeonDouble:
    """The session's one double (started on first use, stopped at exit)."""
    if server_url not in _SHARED:
        definition = contract()
        password = f"pw-{secrets.token_hex(8)}"
        double = NeonDouble(server_url, definition, _prepare(server_url, password), password)
        _SHARED[server_url] = double

        def stop() -> None:
            double.stop()
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(double.template)))

        atexit.register(stop)
    return _SHARED[server_url]


@dataclass
class NeonProject:
    double: NeonDouble
    id: str
    env: dict[str, str]  # what a process needs to use this project through --provider neon

    @property
    def main_url(self) -> str:
        return self.double.uri(self.id, "main")

    def url(self, name: str) -> str:
        return self.double.uri(self.id, name)


@pytest.fixture
def neon_project(pg_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[NeonProject]:
    """A fresh project on the double, its NEON_* settings in the environment; every call made to it
    must match the definition."""
    double = shared(pg_server)
    double.violations.clear()
    double.calls.clear()
    project_id = double.new_project()
    env = {"NEON_API_KEY": double.api_key, "NEON_PROJECT_ID": project_id, "NEON_API_HOST": double.base_url}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        yield NeonProject(double, project_id, env)
    finally:
        double.drop_project(project_id)
    assert not double.violations, double.violations


@pytest.fixture
def neon_flow_env(neon_project: NeonProject, prefect_harness: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> dict[str, str]:
    """flow_env's counterpart on Neon: DATABASE_URL is main's URI on the double."""
    monkeypatch.setenv("DATABASE_URL", neon_project.main_url)
    return {"db_url": neon_project.main_url, "report_dir": str(tmp_path / "runs"), "api_url": prefect_harness}
