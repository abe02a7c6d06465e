"""What the connected role may do, asked of the catalog before a step that needs it, so that a
missing privilege is refused up front (exit 2, one line naming it and the way on) instead of failing
half-way. The README's privileges table says what each command needs."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from tasks.errors import InputError


class PrivilegeMissing(InputError):
    """The role lacks a privilege a step needs; the message names it and the ways on (exit 2)."""


# The user relations of the current schema owned by another role: (relation, owner, whether the
# current role can act as that owner).
_OTHERS = """
SELECT c.relname, pg_get_userbyid(c.relowner), pg_has_role(c.relowner, 'USAGE')
FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'S', 'v', 'm')
  AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)
ORDER BY c.relname
"""


@dataclass(frozen=True)
class Role:
    name: str
    superuser: bool
    createdb: bool
    owns_database: bool
    create_in_schema: bool  # CREATE on the current schema
    others_own: tuple[tuple[str, str], ...]  # (relation, owner) owned by another role
    not_ours: tuple[tuple[str, str], ...]  # of those, the ones the role cannot act as the owner of


def of(conn: psycopg.Connection) -> Role:
    row = conn.execute(
        "SELECT current_user, r.rolsuper, r.rolcreatedb, pg_has_role(d.datdba, 'USAGE'), "
        "has_schema_privilege(current_schema(), 'CREATE') "
        "FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()"
    ).fetchone()
    assert row is not None
    others = [] if row[1] else conn.execute(_OTHERS).fetchall()
    return Role(
        row[0], row[1], row[2], row[3], row[4],
        tuple((r, o) for r, o, _ in others), tuple((r, o) for r, o, ours in others if not ours),
    )  # fmt: skip


def _relations(pairs: tuple[tuple[str, str], ...]) -> str:
    shown = ", ".join(f"{rel} (owner {owner})" for rel, owner in pairs[:3])
    return shown + (f" and {len(pairs) - 3} more" if len(pairs) > 3 else "")


def require_checkpoint(role: Role, *, template: bool) -> None:
    """A local checkpoint creates a database: CREATEDB. A non-superuser's online copy is restored as
    that role (pg_dump --no-owner), so it must own every table; the template copy needs to own the
    database it copies."""
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
    if not template and role.others_own:
        raise PrivilegeMissing(
            f"the online checkpoint is restored as role {role.name}, which does not own "
            f"{_relations(role.others_own)}; {way_on} (a superuser's URL, or ALTER TABLE … OWNER TO {role.name})"
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
