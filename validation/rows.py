"""The pandera schema for `tasks` rows as the database holds them: what the audit reads back, chunk
by chunk, to catch rows the constraints no longer guard (a dropped CHECK, a column that went
nullable, a title written by some other path). The same rules as a Phase 1 record, on stored types."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa

from validation.records import TITLE_MAX, UNSTORABLE, failures

PRIORITIES = ("low", "medium", "high")
STATUSES = ("todo", "in_progress", "done")


def _not_blank(s: pd.Series) -> pd.Series:
    return s.astype(str).str.strip().str.len() > 0


TASK_ROWS = pa.DataFrameSchema(
    {
        "id": pa.Column(str, nullable=False, unique=True),
        "user_id": pa.Column(str, nullable=False),
        "title": pa.Column(
            str,
            nullable=False,
            checks=[
                pa.Check(_not_blank, error="is empty"),
                pa.Check(lambda s: s.str.len() <= TITLE_MAX, error=f"is longer than {TITLE_MAX} characters"),
                pa.Check(lambda s: ~s.str.contains(UNSTORABLE), error="contains an unstorable character"),
            ],
        ),
        "notes": pa.Column(str, nullable=True),
        "status": pa.Column(str, nullable=False, checks=pa.Check.isin(STATUSES)),
        "created_at": pa.Column(pd.DatetimeTZDtype("ns", "UTC"), nullable=False),
        "updated_at": pa.Column(pd.DatetimeTZDtype("ns", "UTC"), nullable=False),
        # Columns of later revisions, checked when the database has them.
        "priority": pa.Column(str, nullable=False, required=False, checks=pa.Check.isin(PRIORITIES)),
        "tags": pa.Column(object, nullable=False, required=False),
    },
    strict=False,
    coerce=False,
    name="tasks_row",
)

COLUMNS = ("id", "user_id", "title", "notes", "status", "created_at", "updated_at")
OPTIONAL = ("priority", "tags")


def frame(rows: list[tuple], columns: list[str]) -> pd.DataFrame:
    """A chunk of rows as the schema expects them: uuids as text, timestamps in UTC."""
    df = pd.DataFrame.from_records(rows, columns=columns)
    for name in ("id", "user_id"):
        df[name] = df[name].astype(str).where(df[name].notna(), None)
    for name in ("created_at", "updated_at"):
        df[name] = pd.to_datetime(df[name], utc=True).astype(pd.DatetimeTZDtype("ns", "UTC"))
    for name in ("title", "notes", "status", "priority"):
        if name in df:
            df[name] = df[name].astype(object)
    return df


def validate(df: pd.DataFrame) -> dict[int, list[str]]:
    """Row index -> every reason that row fails."""
    return failures(TASK_ROWS, df)
