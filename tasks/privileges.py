"""What the connected role may do, asked of the catalog before a step that needs it, so that a
missing privilege is refused up front (exit 2, one line naming it and the way on) instead of failing
half-way. The README's privileges table says what each command needs."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from tasks.errors import InputError


class PrivilegeMissing(InputError):
    """The role lacks a privilege a step needs; the message names it and the ways on (exit 2)."""


# The user relations of the current schema whose owner the role cannot act as.
_NOT_OURS = """
SELECT c.relname, pg_get_userbyid(c.relowner)
FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'S', 'v', 'm')
  AND NOT pg_has_role(c.relowner, 'USAGE')
ORDER BY c.relname
"""


@dataclass(frozen=True)
class Role:
    name: str
    superuser: bool
    createdb: bool
    owns_database: bool
    create_in_schema: bool  # CREATE on the current schema
    not_ours: tuple[tuple[str, str], ...]  # (relation, owner) the role cannot act as the owner of


def of(conn: psycopg.Connection) -> Role:
    row = conn.execute(
        "SELECT current_user, r.rolsuper, r.rolcreatedb, pg_has_role(d.datdba, 'USAGE'), "
        "has_schema_privilege(current_schema(), 'CREATE') "
        "FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()"
    ).fetchone()
    assert row is not None
    not_ours = () if row[1] else tuple(conn.execute(_NOT_OURS).fetchall())
    return Role(row[0], row[1], row[2], row[3], row[4], not_ours)


def _relations(pairs: tuple[tuple[str, str], ...]) -> str:
    shown = ", ".join(f"{rel} (owner {owner})" for rel, owner in pairs[:3])
    return shown + (f" and {len(pairs) - 3} more" if len(pairs) > 3 else "")


def require_checkpoint(role: Role, *, template: bool) -> None:
    """A local checkpoint creates a database: CREATEDB; the online copy restores every object as
    its owner, the template copy needs to own the database it copies."""
    way_on = "run with --no-checkpoint, or --provider neon, or grant it"
    if role.superuser:
        return
    if not role.createdb:
        raise PrivilegeMissing(
            f"a local checkpoint creates a database, and role {role.name} has no CREATEDB; {way_on} "
            f"(ALTER ROLE {role.name} CREATEDB)"
        )
    if template and not role.owns_database:
        raise PrivilegeMissing(
            f"--template-copy copies the database, which role {role.name} does not own; copy online "
            f"(without --template-copy), or {way_on.removeprefix('run ')}"
        )
    if role.not_ours:
        raise PrivilegeMissing(
            f"the checkpoint copies every table with its owner, and role {role.name} cannot act as the "
            f"owner of {_relations(role.not_ours)}; {way_on} (GRANT <owner> TO {role.name})"
        )


def require_schema_change(role: Role) -> None:
    """Schema changes alter the tables, so they run as their owner (or a superuser)."""
    if role.superuser:
        return
    if role.not_ours:
        raise PrivilegeMissing(
            f"role {role.name} may not change the schema: it does not own {_relations(role.not_ours)}; "
            "run schema changes with the owner's DATABASE_URL"
        )
    if not role.create_in_schema:
        raise PrivilegeMissing(
            f"role {role.name} may not change the schema: it has no CREATE on the schema; run schema "
            "changes with the owner's DATABASE_URL"
        )
