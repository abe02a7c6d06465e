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


def fields(model: type[Parameters]) -> list[tuple[str, FieldInfo]]:
    """The model's fields as the form and the command line list them: its own, then the shared ones."""
    own = set(vars(model).get("__annotations__", {}))
    items = list(model.model_fields.items())
    return [f for f in items if f[0] in own] + [f for f in items if f[0] not in own]


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
