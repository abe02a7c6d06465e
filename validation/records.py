"""The pandera schema for Phase 1 records, after the field mapping and the value conversions
(tasks/conversions.py): the contract a record meets before it becomes a row.

Validation is lazy: every failure of a record is collected, not the first, and each becomes one
reason in quarantine. Nothing is cut: a title of 5,000 characters fails, it is not shortened.
Values PostgreSQL cannot store (NUL in text, lone UTF-16 surrogates) fail too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import NoneType
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandas.api.types import infer_dtype

from tasks.mapping import type_name

TITLE_MAX = 200
KEY_MAX = 200
PRIORITIES = ("low", "medium", "high")
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


# pandas' name (infer_dtype) for a column whose values are all instances of a type checked here. Not
# for an exact test: "boolean" takes numpy's bool too, "string" a subclass of str.
_ALL_OF = {str: "string"}


def is_type(s: pd.Series, kind: type, *, exact: bool = False, missing: bool = False) -> pd.Series:
    """Elementwise type test, a missing value (None) counting as `missing`. A column all of `kind`
    (the common case; not for an exact test) is told in one pass in C; else each distinct type is
    decided once (a chunk usually holds one or two)."""
    values = s.to_numpy()
    if not exact and infer_dtype(values, skipna=False) == _ALL_OF.get(kind):
        return pd.Series(True, index=s.index, dtype=bool)
    types = list(map(type, values))
    verdict = {
        t: missing if t is NoneType else (t is kind) if exact else issubclass(t, kind) for t in set(types)
    }
    if len(verdict) == 1:
        return pd.Series(next(iter(verdict.values())), index=s.index, dtype=bool)
    return pd.Series([verdict[t] for t in types], index=s.index, dtype=bool)


def _is(kind: type, *, exact: bool = False):
    def check(s: pd.Series) -> pd.Series:
        return is_type(s, kind, exact=exact, missing=True)  # a missing value is `nullable`'s business

    return check


Verdicts = Callable[[list[Any]], "np.ndarray | list[bool]"]


def _only(kind: type, pred: Verdicts, *, exact: bool = False):
    """Apply pred to the values of one type only (as a list); other types, and missing values, are
    the type check's and `nullable`'s business and pass here."""

    def check(s: pd.Series) -> pd.Series:
        mask = is_type(s, kind, exact=exact)
        if mask.all():
            return pd.Series(np.asarray(pred(s.tolist()), dtype=bool), index=s.index)
        out = pd.Series(True, index=s.index)
        if mask.any():
            out[mask] = np.asarray(pred(s[mask].tolist()), dtype=bool)
        return out

    return check


def _lengths(values: list[str]) -> np.ndarray:
    return np.fromiter(map(len, values), dtype=np.int64, count=len(values))


def storable(values: list[str]) -> np.ndarray | list[bool]:
    """False where PostgreSQL cannot store the text (a NUL, an unpaired surrogate). The column is
    tested whole first: NUL is one memchr and only a string with a surrogate fails to encode."""
    joined = "\n".join(values)
    if "\x00" not in joined:
        try:
            joined.encode("utf-8")
            return np.ones(len(values), dtype=bool)
        except UnicodeEncodeError:
            pass
    return [UNSTORABLE.search(v) is None for v in values]


def not_blank(values: list[str]) -> np.ndarray:
    return _lengths(list(map(str.strip, values))) > 0


def at_most(limit: int) -> Verdicts:
    return lambda values: _lengths(values) <= limit


def _check(fn: Callable[[pd.Series], pd.Series], error: str) -> pa.Check:
    """A column check that sees the whole column, missing values too: the checks above let them
    pass. (Left to pandera, each check finds and drops them first: 1.5 of 5.7 ms per 5,000 records.)"""
    return pa.Check(fn, error=error, ignore_na=False)


def _text(
    nullable: bool, *, required_msg: str | None = None, extra: list[pa.Check] | None = None
) -> pa.Column:
    checks = [
        _check(_is(str), "must be a string"),
        _check(
            _only(str, storable), "contains a NUL or an unpaired surrogate, which PostgreSQL cannot store"
        ),
        *(extra or []),
    ]
    return pa.Column(None, nullable=nullable, required=not nullable, checks=checks)


SCHEMA = pa.DataFrameSchema(
    {
        # None for a record without an id (its key is derived from its content after validation)
        "legacy_key": _text(
            True, extra=[_check(_only(str, at_most(KEY_MAX)), f"is longer than {KEY_MAX} characters")]
        ),
        "title": _text(
            False,
            extra=[
                _check(_only(str, not_blank), "is empty"),
                _check(_only(str, at_most(TITLE_MAX)), f"is longer than {TITLE_MAX} characters"),
            ],
        ),
        "description": _text(True),
        "completed": pa.Column(
            None, nullable=False, checks=[_check(_is(bool, exact=True), "must be true or false")]
        ),
        "owner": pa.Column(
            None,
            nullable=True,
            required=False,
            checks=[
                _check(_is(str), "must be a string"),
                _check(
                    _only(str, lambda values: [EMAIL.match(v.strip()) is not None for v in values]),
                    "is not an email address",
                ),
            ],
        ),
        "priority": pa.Column(
            None,
            nullable=False,
            checks=[_check(_only(str, lambda v: [p in PRIORITIES for p in v]), "is not low, medium or high")],
        ),
    },
    strict=False,
    name="phase1_record",
)

# Human words for pandera's built-in failures.
_BUILTIN = {"not_nullable": "is missing", "column_in_dataframe": "is missing"}
TYPE_ERRORS = {"must be a string", "must be true or false"}


# Columns that may be null: one that is null throughout a chunk has nothing to check, and the
# schema does not require it.
NULLABLE = frozenset(name for name, column in SCHEMA.columns.items() if column.nullable)


def _all_null(values: list[Any]) -> bool:
    return bool(values) and values[0] is None and values.count(None) == len(values)


def frame(columns: dict[str, list[Any]]) -> pd.DataFrame:
    """Object columns, so values keep their JSON types for the checks (no pandas inference). A
    nullable column with no value in it is left out: pandera's per-check null handling costs as
    much as the checks themselves, for nothing to check."""
    return pd.DataFrame(
        {
            name: pd.Series(values, dtype=object)
            for name, values in columns.items()
            if name not in NULLABLE or not _all_null(values)
        }
    )


Failure = tuple[str, str]  # (column, what is wrong with its value)


def failure_cases(schema: pa.DataFrameSchema, df: pd.DataFrame) -> dict[int, list[Failure]]:
    """Lazy validation of df against schema: row index -> every (column, problem) of that row;
    rows that pass are absent."""
    try:
        schema.validate(df, lazy=True)
    except pa.errors.SchemaErrors as exc:
        return _by_row(exc.failure_cases)
    return {}


def failures(schema: pa.DataFrameSchema, df: pd.DataFrame) -> dict[int, list[str]]:
    """The same, each failure as one line."""
    return {
        i: [f"{column} {problem}" for column, problem in found]
        for i, found in failure_cases(schema, df).items()
    }


def validate(df: pd.DataFrame) -> dict[int, list[Failure]]:
    """Phase 1 records after mapping and conversion: row index -> every (column, problem)."""
    return failure_cases(SCHEMA, df)


def _by_row(cases: pd.DataFrame) -> dict[int, list[Failure]]:
    found: dict[int, list[Failure]] = {}
    for column, check, value, index in cases[["column", "check", "failure_case", "index"]].itertuples(
        index=False
    ):
        if index is None or pd.isna(index):
            continue
        text = _BUILTIN.get(str(check), str(check))
        if text in TYPE_ERRORS:
            text = f"{text} (got {type_name(value)})"
        found.setdefault(int(index), []).append((str(column), text))
    return found
