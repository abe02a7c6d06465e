"""Every flow's parameters, declared once, as a pydantic model per flow: name, type, default,
description and bounds. Each flow's signature is its model's fields (`takes`), which is where
Prefect builds the UI's form from; each command line is built from the same model (flows/cli.py).
This module imports no Prefect, so `--help` answers without it.

None of them carries a credential: the database comes from the worker's DATABASE_URL or a Secret
block's name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from tasks.backfill import Settings
from tasks.db import DURATION, STATEMENT_TIMEOUT
from tasks.errors import InputError

Provider = Literal["local", "neon"]


def _duration(text: str) -> str:
    if not DURATION.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration such as 2s, 500ms or 1min")
    return text


Duration = Annotated[str, AfterValidator(_duration)]  # a PostgreSQL duration setting
F = TypeVar("F", bound=Callable[..., Any])


def described(default: Any, description: str, **constraints: Any) -> Any:
    return Field(default=default, description=description, **constraints)


class Parameters(BaseModel):
    """A flow's parameters. Subclasses add their own; the order of fields is the form's."""

    model_config = ConfigDict(extra="forbid")


ParametersT = TypeVar("ParametersT", bound=Parameters)


def of(model: type[ParametersT], params: dict[str, Any]) -> ParametersT:
    """A flow's parameters as its model, checked again inside the run (Prefect checks each one
    against the signature; this also checks what relates them): a broken rule is one line, exit 2."""
    try:
        return model(**params)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = f"{first['loc'][0]}: " if first["loc"] else ""
        raise InputError(where + first["msg"].removeprefix("Value error, ")) from None


# How a run goes rather than what it does: listed after a flow's other parameters.
OPERATIONAL = ("lock_wait_seconds", "checkpoint", "branch_provider", "lock_timeout", "statement_timeout",
               "report_dir", "database_secret")  # fmt: skip


def fields(model: type[Parameters]) -> list[tuple[str, FieldInfo]]:
    """The model's fields as the form and the command line list them: what the flow does, then how."""
    items = list(model.model_fields.items())
    return [f for f in items if f[0] not in OPERATIONAL] + [f for f in items if f[0] in OPERATIONAL]


def takes(model: type[Parameters]) -> Callable[[F], F]:
    """Give a flow written as `def f(**params)` the model's fields as its keyword-only signature
    (inspect.signature honours `__signature__`, and Prefect reads its parameters from it)."""

    def apply(fn: F) -> F:
        params = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=info.annotation)
            for name, info in fields(model)
        ]
        returns = inspect.signature(fn).return_annotation
        fn.__signature__ = inspect.Signature(params, return_annotation=returns)  # type: ignore[attr-defined]
        return fn

    return apply


# --- shared by many flows (a new Field each time: pydantic keeps one per model) ---------------------


def report_dir() -> Any:
    return described("runs", "Folder for {run_id}/report.json and .md on the worker")


def database_secret() -> Any:
    return described(
        None, "Name of a Prefect Secret block holding the database URL; empty: the worker's DATABASE_URL"
    )


def branch_provider() -> Any:
    return described(None, "Where branches live: local (same server) or neon; empty: $BRANCH_PROVIDER or local")


def checkpoint() -> Any:
    return described(True, "Take a checkpoint branch {database}-backup-{UTC time} before writing")


def lock_timeout() -> Any:
    return described(Settings.lock_timeout, "lock_timeout of every statement (e.g. 2s, 500ms)")


def lock_wait() -> Any:
    return described(30.0, "Seconds to wait for another migration run to finish", ge=0)


# --- backfill -------------------------------------------------------------------------------------


class Backfill(Parameters):
    name: str | None = described(
        None, "A backfill a revision declares (tasks.priority, tasks.status); or give table/column/value"
    )
    table: str | None = described(None, "Table to fill (checked against the catalog)")
    column: str | None = described(None, "Column to set where it IS NULL")
    value: str | None = described(None, "The value, as PostgreSQL text for the column's type (e.g. {} for text[])")
    batch_size: int = described(Settings.batch_size, "First batch size; it adapts from there", ge=1)
    target_batch_seconds: float = described(
        Settings.target_seconds, "The batch size adapts to keep a batch near this", gt=0
    )
    pause: float = described(Settings.pause, "Seconds to sleep between batches", ge=0)
    max_runtime: float | None = described(
        Settings.max_runtime, "Stop cleanly after this many seconds; the next run resumes", gt=0
    )
    lock_timeout: Duration = lock_timeout()
    report_dir: str = report_dir()
    database_secret: str | None = database_secret()


# --- schema ---------------------------------------------------------------------------------------

class SchemaRun(Parameters):
    """What every schema run takes."""

    checkpoint: bool = checkpoint()
    branch_provider: Provider | None = branch_provider()
    lock_timeout: Duration = lock_timeout()
    statement_timeout: Duration = described(STATEMENT_TIMEOUT, "statement_timeout of every statement (e.g. 15min)")
    lock_wait_seconds: float = lock_wait()
    report_dir: str = report_dir()
    database_secret: str | None = database_secret()


class SchemaUpgrade(SchemaRun):
    target: str = described("head", "Revision to reach (head, or an id such as 0009)")
    complete: bool = described(False, "Complete the target too: every application instance runs it")


class SchemaDowngrade(SchemaRun):
    target: str = described(..., "Revision to go back to (an id such as 0004, or base)")
    allow_data_loss: bool = described(False, "Run a downgrade that drops data (a checkpoint is taken first)")


# --- audit ----------------------------------------------------------------------------------------


class Audit(Parameters):
    source: str | None = described(None, "The Phase 1 file to compare counts and checksums with (path on the worker)")
    fix: bool = described(False, "Move orphan rows to quarantine (undoable), then check again")
    report_dir: str = report_dir()
    database_secret: str | None = database_secret()


class AuditUndoFix(Parameters):
    run_id: str = described(..., "The audit run whose --fix-orphans to undo")
    report_dir: str = report_dir()
    database_secret: str | None = database_secret()


# --- rollback -------------------------------------------------------------------------------------


class RollbackDowngrade(Parameters):
    to: str = described(..., "A revision id (e.g. 0004), or a number N: that many revisions back")
    allow_data_loss: bool = described(False, "Allow a downgrade that drops data (checkpointed first)")
    branch_provider: Provider | None = branch_provider()
    report_dir: str = report_dir()
    database_secret: str | None = database_secret()


class RollbackRestore(Parameters):
    from_branch: str | None = described(None, "The branch whose content main becomes")
    timestamp: str | None = described(None, "ISO 8601 point in time of main to restore, e.g. 2026-11-24T01:00:00Z (Neon only)")
    branch_provider: Provider | None = branch_provider()
    report_dir: str = report_dir()
    database_secret: str | None = database_secret()

    @model_validator(mode="after")
    def _one_source(self) -> RollbackRestore:
        if bool(self.from_branch) == bool(self.timestamp):
            raise ValueError("restore needs exactly one of --from-branch NAME or --timestamp T")
        return self


# --- branches -------------------------------------------------------------------------------------


class BranchRun(Parameters):
    branch_provider: Provider | None = branch_provider()
    report_dir: str = report_dir()
    database_secret: str | None = database_secret()


EXPIRES_IN = "Delete the branch after this long: 7d, 12h, 30m, 2w (Neon's expires_at)"


class BranchCreate(BranchRun):
    name: str = described(..., "Name of the new branch")
    parent: str | None = described(None, "Branch to copy (default: main)")
    at: str | None = described(None, "Timestamp or LSN of the parent to branch at (Neon only)")
    expires_in: str | None = described(None, EXPIRES_IN)


class BranchDelete(BranchRun):
    name: str = described(..., "The branch to delete (never main)")


class BranchReset(BranchRun):
    name: str = described("staging", "The branch to make a fresh copy of its parent")


class Rehearse(BranchRun):
    what: Literal["schema", "phase1"] = described(
        "schema", "What to rehearse: the schema upgrade or the Phase 1 migration"
    )
    target: str = described("head", "Schema revision to rehearse")
    source: str | None = described(None, "The Phase 1 file, for a phase1 rehearsal (path on the worker)")
    keep: bool = described(False, "Keep the branch even when the rehearsal passes")
    expires_in: str | None = described(None, EXPIRES_IN)

    @model_validator(mode="after")
    def _needs_source(self) -> Rehearse:
        if self.what == "phase1" and not self.source:
            raise ValueError("a Phase 1 rehearsal needs the source file (--source)")
        return self


# --- phase 1 --------------------------------------------------------------------------------------

DEFAULT_USER = "phase1-migration@example.com"  # owner of records that name none


class Phase1Read(Parameters):
    """How a Phase 1 file is read: the same for a migration and for `inspect`."""

    source: str | None = described(
        "cli/tasks.json",
        "The Phase 1 tasks.json, a directory of them, or a glob such as 'uploads/**/tasks.json' (on the worker)",
    )
    field_map: list[str] | None = described(
        None,
        "SOURCE=TARGET: map a source key to a field (id, title, notes, completed, status, created_at, updated_at, "
        "owner, priority, tags, completed_at, due_date, legacy_extra), or name where the records are "
        "(KEY or KEY.KEY=tasks); repeatable, wins over the mapping file and the built-in table",
    )
    mapping_file: str | None = described(
        None,
        "YAML mapping file: records (where), fields (key: target), dates (day-first|month-first), vocabulary "
        "(extends the built-in table: aliases, statuses, booleans, time_formats, ...)",
    )
    strict: bool = described(
        False,
        "No inference: {tasks: [...]} or a bare list, exact keys, integer ids, booleans, ISO 8601 times; a record "
        "that would need a default is quarantined",
    )
    lenient_json: bool = described(False, "Accept // and /* */ comments and trailing commas")
    salvage: bool = described(False, "A truncated file: load the records before the cut and quarantine the cut one")
    chunk_size: int = described(5_000, "Records per COPY and per checkpoint", ge=1)


class Phase1(Phase1Read):
    manifest: str | None = described(
        None,
        "CSV with a header naming its path and email columns: the files to migrate (relative to the manifest's "
        "folder) and their owners (instead of source)",
    )
    owner_from_path: str | None = described(None, "Where a file's path names its owner, e.g. 'uploads/{email}/tasks.json'")
    source_name: str = described("phase1", "Names the legacy source; with the legacy id it makes each row's uuid5")
    default_user_email: str = described(DEFAULT_USER, "Owner of records that name none (created if missing)")
    owner_map: str | None = described(
        None, "CSV of legacy_id,email: owners per task (wins over the record's own owner), on the worker"
    )
    propagate_deletes: bool = described(
        False, "Delete the rows of records gone from their file (only rows the application left alone)"
    )
    cutover: bool = described(False, "The last sync: close the sources, so later runs on them are refused")
    shards: int = described(
        0,
        "Split the files into this many shards, each a flow run of shard_deployment on the migrations work pool "
        "(needs a Prefect server; 0: all in this run)",
        ge=0,
    )
    shard: int | None = described(None, "Which shard this run is (set by the run that split them)", ge=0)
    shard_deployment: str = described(
        "phase1-migration/phase1-shard", "The deployment each shard runs as (on the migrations work pool)"
    )
    dry_run: bool = described(False, "Validate, transform and report without writing anything")
    report_dir: str = report_dir()
    workers: int = described(2, "Parallel COPY connections", ge=1)
    lock_wait_seconds: float = described(0.0, "Seconds to wait for another migration run to finish", ge=0)
    checkpoint: bool = checkpoint()
    branch_provider: Provider | None = branch_provider()
    database_secret: str | None = database_secret()

    @model_validator(mode="after")
    def _files_named_once(self) -> Phase1:
        """A manifest names the files: a --source of another file besides it would be left out unsaid."""
        if self.manifest and self.source not in (None, type(self).model_fields["source"].default):
            raise ValueError("give --source or --manifest, not both")
        return self


class Phase1Rollback(Parameters):
    run_id: str = described(..., "The Phase 1 run to undo (its id is in the run's report)")
    report_dir: str = report_dir()
    force: bool = described(False, "Remove the rows even if the application changed them since")
    database_secret: str | None = database_secret()
