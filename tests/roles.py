"""The roles production has, on the test server: (a) a Neon-like owner, (b) an owner without
CREATEDB, (c) an application role with DML grants only. Roles are per cluster: made once, kept."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from tasks import schema
from tasks.db import drop_database, with_database

OWNER = "tm_neon_owner"  # (a)
NO_CREATEDB = "tm_owner_nocreatedb"  # (b)
APP = "tm_app"  # (c)
PASSWORD = "role-pw-5e1f"  # a password in every role URL (the server may trust; it must never show)

ATTRIBUTES = {
    # Neon's neondb_owner: CREATEDB and CREATEROLE, not a superuser, no REPLICATION; a non-superuser
    # may not set session_replication_role unless granted (none is)
    OWNER: "LOGIN CREATEDB CREATEROLE NOSUPERUSER NOREPLICATION",
    NO_CREATEDB: "LOGIN NOCREATEDB NOCREATEROLE NOSUPERUSER NOREPLICATION",
    APP: "LOGIN NOCREATEDB NOCREATEROLE NOSUPERUSER NOREPLICATION",
}


def as_role(url: str, role: str) -> str:
    return make_url(url).set(username=role, password=PASSWORD).render_as_string(hide_password=False)


def ensure_roles(server_url: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        for role, attributes in ATTRIBUTES.items():
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL("{} ROLE {} " + attributes + " PASSWORD {}").format(
                    sql.SQL(verb), sql.Identifier(role), sql.Literal(PASSWORD)
                )
            )


def _owned_database(server_url: str, name: str, owner: str, template: str | None = None) -> str:
    """CREATE DATABASE … OWNER owner (by the superuser), its schema the owner's too (14 does not
    give the public schema to the database owner); returns the owner's URL of it."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(owner), sql.Identifier(template or "template0")
            )
        )
    url = with_database(server_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(owner)))
    return as_role(url, owner)


def templates(server_url: str) -> dict[str, str]:
    """role -> the name of a database at head migrated by that role, so it owns every object."""
    ensure_roles(server_url)
    made = {}
    for role in (OWNER, NO_CREATEDB):
        name = f"tmpl_{role[3:10]}_{uuid.uuid4().hex[:6]}"
        schema.upgrade(_owned_database(server_url, name, role))
        made[role] = name
    return made


def fresh(server_url: str, template: str, owner: str) -> Iterator[str]:
    """A database cloned from the role's template, owned by it; yields the owner's URL, then drops it
    and its branches."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield _owned_database(server_url, name, owner, template)
    with psycopg.connect(server_url, autocommit=True) as conn:
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (name + "%",))]
    for each in names:
        drop_database(server_url, each)


def grant_dml(owner_url: str, role: str) -> None:
    """What an application role gets: CONNECT, USAGE on the schema, DML on its tables."""
    database = make_url(owner_url).database
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(
                sql.Identifier(role)
            )
        )
        # and on the tables later revisions create, as an owner sets it up for its application
        conn.execute(
            sql.SQL(
                "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {}"
            ).format(sql.Identifier(role))
        )
