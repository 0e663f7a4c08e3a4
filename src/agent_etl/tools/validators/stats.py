"""Dataset checks on a column's statistics, computed over every batch of the stream.

- ``completeness: {column, min}``: the share of non-null values is at least ``min`` (0..1). Only
  Arrow nulls count as missing (a float NaN is a value). An empty stream passes (``row_count``
  is the check for that).
- ``mean: {column, min, max}`` and ``stddev: {column, min, max, ddof}``: numerically stable
  (each batch's mean and sum of squared deviations, merged with Chan's formula). Nulls and NaN
  are skipped, as pandas does; ``stddev`` is the sample standard deviation (``ddof: 1``, pandas'
  default) unless ``ddof: 0``. A stream without any value fails: there is no mean to compare.
- ``quantile: {column, q, min, max}``: exact (linear interpolation, as ``numpy.quantile`` and
  pandas) while the column has at most ``exact_limit`` (default 2,000,000) non-null values, kept
  as float64 (8 bytes each). Beyond that the values move into a KLL sketch (``datasketches``,
  k=800) and memory stays at a few tens of kB: the quantile is then approximate, the value at a
  rank within about ±0.35% of ``q`` (99% confidence), and the message says so.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from agent_etl.exceptions import Problem, ToolError
from agent_etl.quality.numeric import Moments
from agent_etl.tools.validators.base import Check, CheckConfig

_KLL_K = 800


class _Bounds(CheckConfig):
    column: str = Field(description="the column checked")
    min: float | None = Field(None, description="the lowest value that passes (none: no lower bound)")
    max: float | None = Field(None, description="the highest value that passes (none: no upper bound)")

    @model_validator(mode="after")
    def _bounds(self) -> _Bounds:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


def _numeric_problem(name: str, t: pa.DataType) -> list[Problem]:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return []
    return [Problem(f"column {name!r} is {t}, not a number",
                    hint="statistics bounds need a numeric column; cast it first (cast transform)")]


def _values(batch: pa.RecordBatch, name: str) -> np.ndarray:
    """The column's non-null, non-NaN values as float64."""
    col = batch.column(name)
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if col.null_count:
        col = pc.drop_null(col)
    values = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return values[~np.isnan(values)] if pa.types.is_floating(col.type) else values


def _outside(what: str, value: float, lo: float | None, hi: float | None) -> str | None:
    if lo is not None and value < lo:
        return f"{what} is {value:.6g}, below the minimum {lo:g}"
    if hi is not None and value > hi:
        return f"{what} is {value:.6g}, above the maximum {hi:g}"
    return None


class _ColumnStat(Check):
    scope = "dataset"
    whole_data = True

    def columns(self) -> list[str]:
        return [self.config.column]

    def bind(self, schema: pa.Schema) -> list[Problem]:
        return _numeric_problem(self.config.column, schema.field(self.config.column).type)


class Completeness(Check):
    """Fail the dataset when the share of non-null values of a column is below ``min``."""

    scope = "dataset"
    whole_data = True

    class Config(CheckConfig):
        """Minimum share of non-null values: ``completeness: {column: email, min: 0.95}``."""

        column: str = Field(description="the column checked")
        min: float = Field(ge=0, le=1, description="the share of non-null values at least (0 to 1)")

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.rows = self.nulls = 0

    def columns(self) -> list[str]:
        return [self.config.column]

    def observe(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        self.nulls += batch.column(self.config.column).null_count

    def finish(self) -> str | None:
        if not self.rows:
            return None
        ratio = (self.rows - self.nulls) / self.rows
        if ratio < self.config.min:
            return (f"{ratio:.2%} of {self.rows} values are present ({self.nulls} null), "
                    f"expected at least {self.config.min:.2%}")
        return None


class _MomentStat(_ColumnStat):
    """A check on the streaming moments (count, mean, squared deviations) of a column."""

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.moments = Moments()

    def observe(self, batch: pa.RecordBatch) -> None:
        self.moments.add(_values(batch, self.config.column))


class Mean(_MomentStat):
    """Fail the dataset when a column's mean lies outside [min, max]."""

    class Config(_Bounds):
        """Bounds on the mean: ``mean: {column: amount, min: 10, max: 200}``."""

    def finish(self) -> str | None:
        if not self.moments.n:
            return f"column {self.config.column!r} has no values, so no mean"
        return _outside("the mean", self.moments.mean, self.config.min, self.config.max)


class Stddev(_MomentStat):
    """Fail the dataset when a column's standard deviation lies outside [min, max]."""

    class Config(_Bounds):
        """Bounds on the standard deviation: ``stddev: {column: amount, max: 50}`` (sample, ddof 1)."""

        ddof: int = Field(1, ge=0, le=1, description="1: the sample standard deviation; 0: the population's")

    def finish(self) -> str | None:
        m = self.moments
        if m.n <= self.config.ddof:
            return f"column {self.config.column!r} has {m.n} value(s), too few for a standard deviation"
        return _outside("the standard deviation", math.sqrt(m.m2 / (m.n - self.config.ddof)),
                        self.config.min, self.config.max)


class Quantile(_ColumnStat):
    """Fail the dataset when a column's q-quantile lies outside [min, max]."""

    class Config(_Bounds):
        """Bounds on a quantile: ``quantile: {column: amount, q: 0.99, max: 1000}`` (q=0.5 is the median)."""

        q: float = Field(ge=0, le=1, description="which quantile (0.5: the median)")
        exact_limit: int = Field(2_000_000, ge=0, description="values kept for an exact answer; a sketch beyond")

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self._parts: list[np.ndarray] = []
        self._kept = 0
        self._sketch = None

    @property
    def label(self) -> str:
        return f"quantile({self.config.column},{self.config.q:g})"

    def observe(self, batch: pa.RecordBatch) -> None:
        values = _values(batch, self.config.column)
        if self._sketch is None and self._kept + len(values) <= self.config.exact_limit:
            self._parts.append(values)
            self._kept += len(values)
            return
        if self._sketch is None:
            try:
                from datasketches import kll_doubles_sketch
            except ImportError:
                raise ToolError(f"quality check {self.label}: more than {self.config.exact_limit} values need the "
                                "datasketches package for an approximate quantile; pip install datasketches, or "
                                "raise exact_limit (8 bytes of memory per value)") from None
            self._sketch = kll_doubles_sketch(_KLL_K)
            for part in self._parts:
                self._sketch.update(part)
            self._parts, self._kept = [], 0
        self._sketch.update(values)

    def finish(self) -> str | None:
        q = self.config.q
        what = f"the {q:g} quantile"
        if self._sketch is not None:
            value = self._sketch.get_quantile(q)
            what += f" (approximate, rank error ±{self._sketch.normalized_rank_error(False):.2%})"
        elif self._kept:
            value = float(np.quantile(np.concatenate(self._parts), q))
        else:
            return f"column {self.config.column!r} has no values, so no quantile"
        return _outside(what, value, self.config.min, self.config.max)
