"""Both application versions at once (pgroll's design): a schema per version holding views
`SELECT physical AS logical` over the real tables, and triggers that write every change made through
one version into the other version's columns.

An application built against revision R sets `search_path = public_R, public`: while R is being
rolled out it sees R's shape through the views in public_R, and whatever R did not touch (and,
after a later revision removed public_R, the completed physical tables) through public. The
previous version's writers keep using their own schema or the physical tables, which start only
ever adds to. The schema's comment records whether R is `started` or `complete`.

A trigger tells the versions apart by the first schema on the writing session's search path.
"""

from __future__ import annotations

from collections.abc import Sequence

from migrations.ops.base import OnlineOperation, Sync
from migrations.ops.context import Context, literal, quote, version_schema

STARTED, COMPLETE = "started", "complete"


def search_path(revision: str | None) -> str:
    return f"{version_schema(revision)}, public" if revision else "public"


def create_schema(ctx: Context) -> None:
    ctx.execute(f"CREATE SCHEMA {quote(ctx.schema)}")
    mark(ctx, STARTED)


def mark(ctx: Context, state: str) -> None:
    ctx.execute(f"COMMENT ON SCHEMA {quote(ctx.schema)} IS {literal(state)}")


def drop_schema(ctx: Context, revision: str | None) -> None:
    if revision:
        ctx.execute(f"DROP SCHEMA IF EXISTS {quote(version_schema(revision))} CASCADE")


def restore_completed(ctx: Context, ops: Sequence[OnlineOperation]) -> None:
    """The version schema of ctx.revision as its complete left it (a downgrade back to it): views of
    the tables it touched, by their new names, each column by its own name."""
    create_schema(ctx)
    create_views(ctx, ops, completed=True)
    mark(ctx, COMPLETE)


def create_views(ctx: Context, ops: Sequence[OnlineOperation], completed: bool = False) -> None:
    """One view per table the revision touches, built from the live catalog when it runs (so the
    same statement serves `--sql`); security_invoker where the server has it (PostgreSQL >= 15).
    completed: after the revision's complete, when the physical names are the new version's."""
    tables: dict[str, tuple[str, dict[str, str | None]]] = {}
    for o in ops:
        if completed:
            tables[o.view_name()] = (o.view_name(), {})
            continue
        view, renames = tables.get(o.table, (o.table, {}))
        tables[o.table] = (o.view_name() if o.view_name() != o.table else view, {**renames, **o.renames()})
    for table, (view, renames) in tables.items():
        hidden = [physical for physical, logical in renames.items() if logical is None]
        mapping = ", ".join(
            f"({literal(p)}, {literal(logical)})" for p, logical in renames.items() if logical is not None
        )
        mapped = f"LEFT JOIN (VALUES {mapping}) AS m(physical, logical) ON m.physical = a.attname" if mapping else ""
        logical = "coalesce(m.logical, a.attname)" if mapping else "a.attname"
        hide = f" AND a.attname <> ALL (ARRAY[{', '.join(literal(h) for h in hidden)}]::name[])" if hidden else ""
        ctx.execute(
            f"""DO $$
DECLARE
  columns text;
BEGIN
  SELECT string_agg(format('%I AS %I', a.attname, {logical}), ', ' ORDER BY a.attnum) INTO columns
    FROM pg_attribute a {mapped}
   WHERE a.attrelid = {literal('public.' + quote(table))}::regclass AND a.attnum > 0 AND NOT a.attisdropped{hide};
  EXECUTE format('CREATE VIEW %I.%I %s AS SELECT %s FROM public.%I', {literal(ctx.schema)}, {literal(view)},
    CASE WHEN current_setting('server_version_num')::int >= 150000 THEN 'WITH (security_invoker = true)' END,
    columns, {literal(table)});
END $$"""
        )


def function_name(ctx: Context, sync: Sync) -> str:
    return f"_sync_{ctx.revision}_{sync.table}_{sync.name}"


def create_sync(ctx: Context, sync: Sync) -> None:
    name = quote(function_name(ctx, sync))
    table = quote(sync.table)
    declare = "\n".join(f"  {quote(c)} public.{table}.{quote(c)}%TYPE := NEW.{quote(c)};" for c in sync.reads)

    def fill(targets: dict[str, str], recompute: list[str]) -> str:
        """Set targets on every insert, and on an update where one of `recompute` holds."""
        assign = "".join(f"\n      NEW.{quote(c)} := {expr};" for c, expr in targets.items())
        if not targets:
            return ""
        update = f"\n    ELSIF {' OR '.join(recompute)} THEN{assign}" if recompute else ""
        return f"\n    IF TG_OP = 'INSERT' THEN{assign}{update}\n    END IF;"

    def changed(columns: tuple[str, ...]) -> list[str]:
        return [f"NEW.{quote(c)} IS DISTINCT FROM OLD.{quote(c)}" for c in columns]

    # Written by the new version: its columns decide the old ones; otherwise the reverse. Each column
    # the expressions name is a variable; inside an expression's own subquery its columns win.
    ctx.execute(
        f"""CREATE OR REPLACE FUNCTION public.{name}() RETURNS trigger LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
{declare}
BEGIN
  IF (current_schemas(false))[1] = {literal(ctx.schema)} THEN{fill(sync.to_old, changed(sync.watch_new))}
  ELSE{fill(sync.to_new, changed(sync.watch_old))}
  END IF;
  RETURN NEW;
END $$"""
    )
    ctx.execute(
        f"CREATE TRIGGER {name} BEFORE INSERT OR UPDATE ON public.{table} "
        f"FOR EACH ROW EXECUTE FUNCTION public.{name}()"
    )


def drop_sync(ctx: Context, sync: Sync) -> None:
    name = quote(function_name(ctx, sync))
    ctx.execute(f"DROP TRIGGER IF EXISTS {name} ON public.{quote(sync.table)}")
    ctx.execute(f"DROP FUNCTION IF EXISTS public.{name}()")
