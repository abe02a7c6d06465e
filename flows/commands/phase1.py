"""`python -m flows.phase1`: migrate Phase 1 tasks.json files into the Phase 2 schema, losing
nothing; `inspect` shows how a file would be read (nothing is written, no database, no Prefect);
`rollback RUN_ID` undoes one run."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, ExitStack, nullcontext
from typing import Any

from flows import cli, orchestrator
from flows import params as P

DESCRIPTION = "Migrate a Phase 1 tasks.json into the Phase 2 PostgreSQL schema, losing nothing."
EPILOG = (
    "Exit codes: 0 done and verified, 1 verification failed, 2 bad input or usage, 3 database unavailable or "
    "busy, 4 done and verified but some files were refused whole (the report names them and why)."
)
COMMANDS = {
    None: cli.Command(P.Phase1, "migrate"),
    "inspect": cli.Command(
        P.Phase1Read,
        "show how a Phase 1 file would be read: where its records are, which key gives which field, the value "
        "conversions and defaults with how many records each covers, what would be quarantined; nothing is written",
        extra=lambda p: p.add_argument("--json", action="store_true", help="print the account as JSON (for scripts)"),
    ),
    "rollback": cli.Command(P.Phase1Rollback, "remove exactly the rows a Phase 1 run inserted, verified", ("run_id",)),
}
SUMMARY_RULES = 12  # lines of the inference account a run's summary prints (the report has all)


def main(argv: list[str] | None = None) -> int:
    name, params, args = cli.parse("python -m flows.phase1", DESCRIPTION, EPILOG, COMMANDS, argv)
    assert params is not None
    if name == "inspect":
        return _inspect(params, args.json)
    from tasks.errors import UserFacingError

    try:  # input that is plainly wrong exits here, before the orchestrator is involved
        cli.apply_database_url(args.database_url)
        if isinstance(params, P.Phase1):
            _quick_checks(params)
    except UserFacingError as exc:
        return cli.fail(str(exc), exc.exit_code)
    server = orchestrator.start()  # boots while the files are found, a single one checked whole
    from flows import phase1

    flow = phase1.phase1_rollback if name == "rollback" else phase1.phase1_migration
    with ExitStack() as ahead:
        try:
            if isinstance(params, P.Phase1):
                ahead.enter_context(_prepared(params))
        except UserFacingError as exc:
            return cli.refuse(exc, server)
        with cli.progress_bar(not args.json):
            return cli.run_flow(
                lambda: flow(**params.model_dump(), return_state=True), as_json=args.json, summary=summary, server=server
            )


def _quick_checks(p: P.Phase1) -> None:
    """The checks that read nothing but the options: the mapping and the owner map."""
    from tasks.mapping import FieldMapping, read_owner_map

    FieldMapping.build(p.field_map or [], p.mapping_file, p.strict)
    read_owner_map(p.owner_map)


def _prepared(p: P.Phase1) -> AbstractContextManager[None]:
    """The run's job, prepared before the flow starts (bad input fails here) and handed to it; a
    run split into shards only has its files told here (a bad manifest or pattern fails), the
    shards prepare their own."""
    from flows import phase1

    if phase1.fans_out(p):
        phase1.sources_of(p)
        return nullcontext()
    return phase1.prepared_ahead(p)


def _inspect(p: P.Parameters, as_json: bool) -> int:
    """`inspect`: what the file holds and how it would be read, before anything is written."""
    from flows.phase1 import account, dry_load, prepare
    from flows.phase1 import dry_counts as counts_of
    from tasks.errors import UserFacingError
    from tasks.inference import lines as inference_lines

    try:
        job = prepare(**p.model_dump())
        summary = dry_load(job, "00000000-0000-4000-8000-000000000000")
        job = job.after(summary)
    except UserFacingError as exc:
        return cli.fail(str(exc), exc.exit_code)
    found = account(job, summary)
    found["counts"] = counts_of(summary, job)
    if as_json:
        print(json.dumps(found, indent=2, default=str))
        return 0
    c = found["counts"]
    print(f"{job.origin}:" if not job.single else f"{job.files[0].source.path}:")
    print("\n".join(inference_lines(found, job.records)))
    for f in job.refused:
        print(f"refused: {f.error}")
    print(
        f"would insert {c['inserted']:,}, count {c['duplicates']:,} as duplicates and quarantine "
        f"{c['quarantined']:,} of {c['records_read']:,} records"
    )
    return 0


def summary(outcome: dict[str, Any]) -> str:
    from flows.outcome import closing_lines
    from tasks.inference import lines as inference_lines

    r = outcome["report_data"]
    if r["kind"] == "phase1-rollback":
        c = r["counts"]
        return (
            f"run {r['run_id']} rolled back: {c['tasks_removed']:,} tasks, {c['users_removed']} users, "
            f"{c['quarantine_removed']:,} quarantined records removed"
            + (f"; {c['rows_restored']:,} of its updates and deletes undone" if c.get("rows_restored") else "")
            + f"\nreport: {outcome['report']}"
        )
    c, v, t = r["counts"], r["verification"], r["timing"]
    lines = [
        f"run {r['run_id']} {r['status']} in {t['duration_s']:.1f} s ({t['rows_per_s']:,.0f} records/s)"
        + (" (resumed)" if r["resumed"] else ""),
        f"records read {c['records_read']:,} = inserted {c['inserted']:,} + updated {c['updated']:,} + unchanged "
        f"{c['unchanged']:,} + conflicts {c['conflicts']:,} + duplicates {c['duplicates']:,} + quarantined {c['quarantined']:,}",
    ]
    if c.get("disappeared"):
        lines.append(f"disappeared from their files: {c['disappeared']:,} ({c.get('deleted', 0):,} deleted)")
    if "files" in r["source"]:  # a run of many files: the totals, then the first refused (listed first)
        total, refused, unchanged = r["source"]["files"], r["source"]["refused"], r["source"].get("unchanged", 0)
        lines.append(
            f"files: {total:,}, loaded {total - refused - unchanged:,}, unchanged since their last sync "
            f"{unchanged:,}, refused {refused:,}"
        )
        lines += [f"  refused: {f['error']}" for f in r.get("files", [])[: min(refused, 10)]]
        if refused > 10:
            lines.append(f"  … {refused - 10:,} more refused files in the report")
    if r["quarantine"]["top_reasons"]:
        lines.append(
            "most common quarantine reasons: "
            + "; ".join(f"{why} ({n})" for why, n in r["quarantine"]["top_reasons"][:3])
        )
    if not r.get("dry_run"):
        # over the rows the run inserted: the sums say nothing of the rows it updated, so the line says which
        verdict = "match" if v["source_checksum"] == v["database_checksum"] else "DO NOT MATCH"
        lines.append(
            f"checksums of the {c['inserted']:,} rows inserted {verdict}: source {v['source_checksum']}, "
            f"database {v['database_checksum']}"
        )
    lines += [
        f"  position {m['position']} (id {m['legacy_id']}): {m['problem']}"
        for m in v.get("mismatches", [])[:10]
    ]
    if r.get("checkpoint"):
        lines.append(f"checkpoint branch: {r['checkpoint']['name']}")
    account = inference_lines(r["inference"], c["records_read"])
    lines += [f"how the file was read: {account[0]}", *account[1:SUMMARY_RULES]]
    if len(account) > SUMMARY_RULES:
        lines.append(f"  … {len(account) - SUMMARY_RULES} more lines in the report")
    return "\n".join(lines + closing_lines(outcome))


def run() -> None:
    cli.run_command(main)
