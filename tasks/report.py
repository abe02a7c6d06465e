"""Reports: `<report-dir>/<run_id>/report.json` and `report.md`, and the rows of the quarantine table
artifact. Everything here is built from plain data; nothing in it may carry a password (URLs are
masked before they arrive)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COUNT_LABELS = {
    "records_read": "records read",
    "inserted": "inserted",
    "updated": "updated",
    "unchanged": "unchanged",
    "conflicts": "conflicts (Phase 2 kept)",
    "duplicates": "duplicates",
    "quarantined": "quarantined",
    "disappeared": "disappeared from their files",
    "deleted": "deleted (--propagate-deletes)",
}
# A file's status: "loaded" (its records streamed), "unchanged" (byte for byte what the last sync
# of its source read, with nothing of it left to do: counted, not read again), or why it was refused.
MIGRATED = ("loaded", "unchanged")
FILES_SHOWN = 200  # rows of the per-file table in report.md (report.json has them all)
FILE_COLUMNS = ("path", "owner", "status", "records", "inserted", "updated", "unchanged", "conflicts", "quarantined", "why")


@dataclass(frozen=True)
class Rows:
    """Rows too many to hold (the files of a run): how many, how many refused, the first ones in
    report order (refused first), and how to read them all, each as the text of a JSON object,
    which the report's writing does."""

    total: int
    refused: int
    head: list[dict[str, Any]]
    read: Callable[[], Iterable[str]]


def write(report: dict[str, Any], report_dir: str | Path, name: str = "report") -> Path:
    """Write <report_dir>/<run_id>/<name>.json (whole or not at all) and .md; returns the .md path."""
    folder = Path(report_dir) / str(report["run_id"])
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{name}.json.partial"  # a report cut short (disk full, rows unreadable) is never report.json
    with partial.open("w", encoding="utf-8") as f:
        f.writelines(_json_lines(report))
    partial.replace(folder / f"{name}.json")
    md = folder / f"{name}.md"
    md.write_text(markdown(report), encoding="utf-8")
    return md


ROWS_PER_LINE = 100  # a longer list of rows (the files of a run) is written one row per line


def _json_lines(report: dict[str, Any]) -> Iterator[str]:
    """The report as indented JSON, except that a long list of rows has one row per line: json's
    indenting encoder is pure Python (3.8 s for 50,000 file rows), its compact one is C."""
    yield "{"
    for i, (key, value) in enumerate(report.items()):
        yield ("," if i else "") + f"\n  {json.dumps(key)}: "
        if isinstance(value, Rows) or (
            isinstance(value, list) and len(value) > ROWS_PER_LINE and all(isinstance(r, dict) for r in value)
        ):
            yield "["  # row by row: the text of 100,000 rows is never held whole
            texts = value.read() if isinstance(value, Rows) else (json.dumps(row, default=str) for row in value)
            for j, text in enumerate(texts):
                yield ("," if j else "") + "\n    " + text
            yield "\n  ]"
        else:  # JSON text holds no raw newline, so each one starts an indented line
            yield json.dumps(value, indent=2, default=str).replace("\n", "\n  ")
    yield "\n}\n"


def _table(rows: list[list[Any]], header: list[str]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown, for report.md and the Prefect artifact."""
    kind = report.get("kind", "phase1")
    lines = [f"# {report.get('title', 'Phase 1 → Phase 2 migration')}", ""]
    lines += [f"- **run**: `{report['run_id']}` ({kind}, status **{report['status']}**)"]
    for key, label in (("source", "source"), ("database", "database"), ("schema", "schema")):
        if key in report:
            lines.append(f"- **{label}**: {_describe(report[key])}")
    if "timing" in report:
        t = report["timing"]
        lines.append(f"- **duration**: {t['duration_s']:.2f} s ({t.get('rows_per_s', 0):,.0f} rows/s)")
    if report.get("dry_run"):
        lines.append("- **dry run**: nothing was written")
    if report.get("resumed"):
        lines.append(
            f"- **resumed** an interrupted run ({report.get('chunks_skipped', 0)} chunks were already committed)"
        )
    counts = report.get("counts")
    if counts:
        lines += ["", "## Counts", ""]
        lines += _table([[COUNT_LABELS.get(k, k), f"{v:,}"] for k, v in counts.items()], ["", "records"])
    files = report.get("files")
    if isinstance(files, Rows) and files.total > 1:
        lines += ["", f"## Files ({files.total:,}, {files.refused:,} refused)", ""]
        rows = file_rows(files.head[:FILES_SHOWN])
        lines += _table([[r[c] if not isinstance(r[c], int) else f"{r[c]:,}" for c in FILE_COLUMNS] for r in rows], list(FILE_COLUMNS))
        if files.total > FILES_SHOWN:
            lines.append(f"\n({files.total - FILES_SHOWN:,} more files in report.json)")
    checks = report.get("verification")
    if checks:
        lines += ["", "## Verification", "", f"**{'passed' if checks['ok'] else 'FAILED'}**", ""]
        if "source_checksum" in checks:
            lines.append(f"- checksum from the source: `{checks['source_checksum']}`")
            lines.append(f"- checksum from the database: `{checks['database_checksum']}`")
        lines += [f"- {p}" for p in checks.get("problems", [])]
        if checks.get("mismatches"):
            lines += [
                "",
                *_table(
                    [[m["position"], m["legacy_id"], m["problem"]] for m in checks["mismatches"]],
                    ["position", "legacy id", "problem"],
                ),
            ]
    fk = report.get("foreign_keys_checked")
    if fk and fk["per_chunk"] + fk["per_row"]:
        lines.append(
            f"- **foreign keys**: checked once per chunk, referenced rows locked, in {fk['per_chunk']} "
            f"chunk(s); by PostgreSQL's per-row triggers in {fk['per_row']}"
        )
    if report.get("checkpoint"):
        lines.append(
            f"- **checkpoint branch**: `{report['checkpoint']['name']}` (of `{report['checkpoint']['parent']}`)"
        )
    if report.get("steps"):
        header = list(report["steps"][0])
        lines += ["", "## Steps", ""]
        lines += _table([[row[k] for k in header] for row in report["steps"]], header)
    if report.get("checks"):
        lines += ["", "## Checks", ""]
        lines += _table(
            [
                [c["check"], c["status"].upper(), c["count"], c["sample"], c["detail"]]
                for c in report["checks"]
            ],
            ["check", "status", "count", "sample", "detail"],
        )
    quarantine = report.get("quarantine")
    if quarantine and quarantine.get("top_reasons"):
        lines += ["", "## Most common quarantine reasons", ""]
        lines += _table([[r, n] for r, n in quarantine["top_reasons"]], ["reason", "records"])
    inference = report.get("inference")
    if inference:
        lines += ["", "## What the file holds and how it was read", ""]
        where = ", ".join(f"`{k}` ({n:,})" for k, n in inference["records_in"].items()) or "none"
        lines.append(
            f"- **records** in a JSON {inference['document']}, found in {where} ({inference['mode']})"
        )
        lines += [f"- not migrated: `{k}`: {what}" for k, what in inference["not_migrated"].items()]
        if inference.get("salvaged"):
            lines.append(f"- **salvaged**: {inference['salvaged']}")
        if inference.get("lenient_json"):
            lines.append(f"- lenient JSON: {inference['lenient_json']}")
        for target, order in inference.get("dates", {}).items():
            lines.append(f"- `{target}` dates with `/`, `.` or `-` read as {order}")
        if inference["rules"]:
            lines += [
                "",
                *_table([[r, f"{n:,}"] for r, n in inference["rules"].items()], ["rule", "records"]),
            ]
        if inference["defaults"]:
            lines += [
                "",
                *_table([[r, f"{n:,}"] for r, n in inference["defaults"].items()], ["default", "records"]),
            ]
        if inference["kept_in_legacy_extra"]:
            kept = ", ".join(f"`{k}` ({n:,})" for k, n in inference["kept_in_legacy_extra"].items())
            lines.append(f"\n- kept in `legacy_extra`: {kept}")
        if inference.get("overrides"):
            lines.append(f"- given: {_describe(inference['overrides'])}")
    for block in report.get("sql", []):
        lines += ["", f"### SQL of {block['revision']}", "", "```sql", block["sql"].strip(), "```"]
    for note in report.get("notes", []):
        lines.append(f"\n> {note}")
    return "\n".join(lines) + "\n"


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: `{v}`" for k, v in value.items() if v not in (None, ""))
    return f"`{value}`"


def file_rows(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for the per-file table (refused first, as tasks/file_results.py reads them): a file
    without an owner of its own gives its records to the run's default user; `why` it was refused."""
    shown = {"owner": lambda f: f["owner"] or "(default user)", "why": lambda f: f["error"] or ""}
    return [{c: shown[c](f) if c in shown else f[c] for c in FILE_COLUMNS} for f in files]


def quarantine_rows(entries: list[Any], limit: int = 200) -> list[dict[str, Any]]:
    """Rows for the quarantine table artifact (position, where, legacy id, reasons, the record, shortened)."""
    rows = []
    for q in entries[:limit]:
        raw = q.raw if len(q.raw) <= 200 else q.raw[:200] + "…"
        rows.append(
            {
                "position": q.position,
                "location": q.location,
                "legacy_id": q.legacy_id,
                "reasons": "; ".join(q.reasons),
                "record": raw,
            }
        )
    return rows
