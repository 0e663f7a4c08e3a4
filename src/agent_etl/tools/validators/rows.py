"""Row checks: each gives, per batch, a vectorised mask of the rows that fail.

Nulls: only ``not_null`` flags a null. ``range``, ``regex`` and ``accepted_values`` let a null
value pass (as SQL ``CHECK`` constraints and dbt's tests do), so "must be present" and "must be
valid when present" stay two separate, composable rules; add ``not_null`` for the column when a
null is an error too.

Checks whose meaning depends on the column's type (``range`` bounds, ``accepted_values``,
``regex`` on a non-string column) resolve it in ``bind(schema)``, which returns the problems
found (the gate adds the check's label, input and YAML line) before any data moves.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator, model_validator

from agent_etl.exceptions import Problem, SpecError
from agent_etl.tools.validators.base import Check, CheckConfig, ColumnsConfig

Scalar = str | bool | int | float | dt.datetime | dt.date | None


def _no_nulls(mask: pa.Array) -> pa.Array:
    # A null in a mask would make a bad row look good once masks are OR-ed and used to filter.
    return pc.fill_null(mask, False) if mask.null_count else mask


# pa.nulls, not pa.array: pyarrow's first pa.array imports pandas (~0.3 s), which validating a pipeline never needs
_FALSE = pa.nulls(0, pa.bool_())


def _all_false(n: int) -> pa.BooleanArray:
    global _FALSE
    if len(_FALSE) < n:  # one shared buffer, sliced: batches are mostly the same size
        _FALSE = pa.array(np.zeros(n, dtype=bool))
    return _FALSE.slice(0, n)


def _missing(column: str, schema: pa.Schema) -> Problem:
    return Problem(f"column {column!r} is not in the input", hint=f"available columns: {', '.join(schema.names)}")


def _column(batch: pa.RecordBatch, name: str) -> pa.Array:
    col = batch.column(name)
    return col.dictionary_decode() if pa.types.is_dictionary(col.type) else col


def _value_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


class _TypedCheck(Check):
    """A row check that must see the schema before it can compare values."""

    _bound: pa.Schema | None = None

    def bind(self, schema: pa.Schema) -> list[Problem]:
        """Resolve the check for ``schema``; the problems found (none when the check can run)."""
        missing = [c for c in self.columns() if c not in schema.names]
        problems = [_missing(c, schema) for c in missing] if missing else self._resolve(schema)
        self._bound = None if problems else schema
        return problems

    def _resolve(self, schema: pa.Schema) -> list[Problem]:
        raise NotImplementedError

    def _ensure_bound(self, batch: pa.RecordBatch) -> None:
        if self._bound is None:  # used on its own, without a gate calling bind first
            problems = self.bind(batch.schema)
            if problems:
                raise SpecError([replace(p, message=f"{self.label}: {p.message}") for p in problems])


class NotNull(Check):
    """Fail rows where any of the given columns is null."""

    shorthand = "columns"

    class Config(ColumnsConfig):
        """Columns that must not be null: ``not_null: [a, b]``."""

    def columns(self) -> list[str]:
        return list(self.config.columns)

    def failures(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        mask = None
        for name in self.config.columns:
            col = batch.column(name)
            if col.null_count == 0:
                continue
            isnull = pc.is_null(col)
            mask = isnull if mask is None else pc.or_(mask, isnull)
        return _all_false(batch.num_rows) if mask is None else mask


class Range(_TypedCheck):
    """Fail rows whose value lies outside [min, max] (nulls pass; add not_null for them)."""

    class Config(CheckConfig):
        """Bounds of a numeric, date/timestamp or string column: ``range: {column: amount, min: 0}``.

        Dates and timestamps are written as ISO strings (``"2024-01-31"``, ``"2024-01-31T08:00:00Z"``)
        and compared in the column's type; a naive timestamp bound on a column with a time zone is
        read as UTC.
        """

        column: str = Field(description="the column checked")
        min: Scalar = Field(None, description="the lowest value that passes (none: no lower bound)")
        max: Scalar = Field(None, description="the highest value that passes (none: no upper bound)")
        inclusive: bool = Field(True, description="min and max themselves pass")

        @model_validator(mode="after")
        def _bounds(self) -> Range.Config:
            if self.min is None and self.max is None:
                raise ValueError("range needs min, max or both")
            for v in (self.min, self.max):
                if isinstance(v, bool):
                    # pydantic turns only ValueError into a validation error
                    raise ValueError(f"a range bound must be a number, date or string, not {v!r}")  # noqa: TRY004
            lo, hi = self.min, self.max
            numbers = all(isinstance(v, (int, float)) for v in (lo, hi))
            if numbers and lo > hi:
                raise ValueError(f"min ({lo}) is greater than max ({hi})")
            return self

    _lo: pa.Scalar | None = None
    _hi: pa.Scalar | None = None

    def columns(self) -> list[str]:
        return [self.config.column]

    def _resolve(self, schema: pa.Schema) -> list[Problem]:
        t = _value_type(schema.field(self.config.column).type)
        problems = []
        self._lo = self._hi = None
        for key in ("min", "max"):
            value = getattr(self.config, key)
            if value is None:
                continue
            scalar, why = _bound_scalar(value, t)
            if scalar is None:
                problems.append(Problem(
                    f"{key} {value!r} cannot be compared with column "
                    f"{self.config.column!r} of type {t}", hint=why))
            elif key == "min":
                self._lo = scalar
            else:
                self._hi = scalar
        return problems

    def failures(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        self._ensure_bound(batch)
        col = _column(batch, self.config.column)
        below, above = (pc.less, pc.greater) if self.config.inclusive else (pc.less_equal, pc.greater_equal)
        mask = None
        if self._lo is not None:
            mask = below(col, self._lo)
        if self._hi is not None:
            over = above(col, self._hi)
            mask = over if mask is None else pc.or_(mask, over)
        return _no_nulls(mask)


def _bound_scalar(value: Any, t: pa.DataType) -> tuple[pa.Scalar | None, str | None]:
    """The bound as a scalar comparable with type ``t``, or None and a hint saying why not."""
    try:
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            if not isinstance(value, (int, float)):
                return None, f"the column is numeric; write the bound as a number, e.g. {0}"
            scalar = pa.scalar(value)
        elif pa.types.is_date(t):
            if isinstance(value, str):
                value = dt.date.fromisoformat(value)
            if isinstance(value, dt.datetime):
                if value.time() != dt.time(0):
                    return None, "the column holds dates; write the bound as a date, e.g. \"2024-01-31\""
                value = value.date()
            if not isinstance(value, dt.date):
                return None, "the column holds dates; write the bound as an ISO date, e.g. \"2024-01-31\""
            scalar = pa.scalar(value, type=t)
        elif pa.types.is_timestamp(t):
            if isinstance(value, str):
                value = dt.datetime.fromisoformat(value)
            if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
                value = dt.datetime.combine(value, dt.time(0))
            if not isinstance(value, dt.datetime):
                return None, "the column holds timestamps; write the bound as an ISO timestamp, e.g. \"2024-01-31T08:00:00\""
            if t.tz is not None and value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)
            scalar = pa.scalar(value, type=t)
        elif pa.types.is_time(t):
            if not isinstance(value, str):
                return None, "the column holds times of day; write the bound as a string, e.g. \"08:30:00\""
            scalar = pa.scalar(dt.time.fromisoformat(value), type=t)
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            if not isinstance(value, str):
                return None, "the column holds strings (compared alphabetically); quote the bound, or cast the column"
            scalar = pa.scalar(value, type=t)
        else:
            return None, "range works on numeric, date, timestamp, time and string columns"
        pc.less(pa.array([], t), scalar)  # is there a comparison kernel for the pair at all?
    except ValueError as e:  # fromisoformat; also ArrowInvalid
        return None, f"not an ISO date/time ({e}); write it like \"2024-01-31\" or \"2024-01-31T08:00:00\""
    except (TypeError, pa.ArrowNotImplementedError, OverflowError) as e:
        return None, f"cast the column first (cast transform), or change the bound ({e})"
    return scalar, None


class Regex(_TypedCheck):
    """Fail rows whose string does not match the pattern as a whole (nulls pass)."""

    class Config(CheckConfig):
        """A regular expression (RE2 syntax) the whole value must match: ``regex: {column: email, pattern: ".+@.+"}``."""

        column: str = Field(description="the column checked")
        pattern: str = Field(min_length=1, description="a regular expression each value must match")
        ignore_case: bool = Field(False, description="match regardless of case")

        @field_validator("pattern")
        @classmethod
        def _compiles(cls, pattern: str) -> str:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"invalid regular expression {pattern!r}: {e}") from None
            try:
                pc.match_substring_regex(pa.array(["x"]), _anchored(pattern))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise ValueError(
                    f"regular expression {pattern!r} is not supported by RE2, the engine checks run on "
                    f"(no look-around or backreferences): {e}") from None
            return pattern

    def columns(self) -> list[str]:
        return [self.config.column]

    def _resolve(self, schema: pa.Schema) -> list[Problem]:
        t = _value_type(schema.field(self.config.column).type)
        try:
            pc.match_substring_regex(pa.array([], t), "x")
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return [Problem(f"column {self.config.column!r} is {t}, not a string",
                            hint="regex only matches string columns; cast it to string first (cast transform)")]
        return []

    def failures(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        self._ensure_bound(batch)
        col = _column(batch, self.config.column)
        matched = pc.match_substring_regex(col, _anchored(self.config.pattern), ignore_case=self.config.ignore_case)
        return _no_nulls(pc.invert(matched))


def _anchored(pattern: str) -> str:
    # Full-match semantics: RE2's `$` (without the m flag) matches only at the very end of the text.
    return f"^(?:{pattern})$"


class AcceptedValues(_TypedCheck):
    """Fail rows whose value is not one of the listed values (nulls pass)."""

    class Config(CheckConfig):
        """The allowed values of a column: ``accepted_values: {column: status, values: [paid, open]}``."""

        column: str = Field(description="the column checked")
        values: list[Scalar] = Field(min_length=1, description="the values that pass")

    _value_set: pa.Array | None = None

    def columns(self) -> list[str]:
        return [self.config.column]

    def _resolve(self, schema: pa.Schema) -> list[Problem]:
        t = _value_type(schema.field(self.config.column).type)
        values = [v for v in self.config.values if v is not None]
        try:
            self._value_set = pa.array(values).cast(t)
            pc.is_in(pa.array([], t), value_set=self._value_set)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, TypeError) as e:
            return [Problem(f"values {values!r} cannot be compared with column "
                            f"{self.config.column!r} of type {t}",
                            hint=f"write values of the column's type, or cast the column first ({e})")]
        return []

    def failures(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        self._ensure_bound(batch)
        col = _column(batch, self.config.column)
        mask = pc.invert(pc.is_in(col, value_set=self._value_set))
        # is_in says False for a null input; a null is not this check's business
        return pc.and_(mask, pc.is_valid(col)) if col.null_count else mask
