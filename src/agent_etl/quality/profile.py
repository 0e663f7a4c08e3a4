"""Streaming data profiles: ``Profiler(...).observe(batch)`` per batch, ``result()`` at the end.

Memory is bounded whatever the row count: per column a 16 KiB HyperLogLog (or an exact set of at
most ``exact_distinct`` 64-bit hashes before it), a 19 kB KLL sketch, a 2048-bin histogram and at
most 4096 top-k counters. The result is a JSON-safe dict:

    {"version": 1, "rows", "batches", "sampled_rows": None, "schema": {col: type},
     "columns": {col: {"type", "kind", "count", "nulls", "null_rate", "distinct", "distinct_exact",
                       "min", "max", "mean", "std", "quantiles", "histogram", "top", "top_exact",
                       "length", "outliers", "nonfinite" (numeric)}}}

How each number is made:

- count, nulls, min, max, mean, std (ddof=1) are exact; mean/std merge per-batch moments with
  Chan's update, so large offsets do not cancel the variance. NaN and +/-inf count as values but
  stay out of the numeric statistics (``nonfinite`` says how many).
- distinct is exact (``distinct_exact``) up to 100,000 values, then HyperLogLog (0.81% standard
  error). NaN is not a distinct value (as pandas' ``nunique``).
- quantiles come from a KLL sketch: each is within 0.35% of rank of the true one.
- the histogram has exact counts: bins placed from the first batch's range, doubled in width
  (neighbours merged) when later values fall outside, shown as at most 30 bins.
- top: the 10 most frequent values of strings and booleans, and of numbers and dates while they
  have at most 1000 distinct values; exact until 4096 distinct values, then Misra-Gries
  (``top_exact`` false: counts may be short by a bounded amount). Columns whose values were all
  unique when the exact distinct set overflowed get no top.
- outliers: a second pass is impossible in a stream, so the fences (``low``, ``high``) come from
  the final quantiles (IQR, MAD) or moments (z-score), and the count from the exact histogram:
  whole bins beyond a fence plus a linear share of the bin the fence falls in (off by at most
  that bin's count, 1/2048 of the range). The method is, per column, the one configured
  (``outliers: {col: iqr|zscore|mad}``) or chosen from the shape: z-score (mean +/- 3 std) for
  near-normal columns, MAD (modified z-score > 3.5) for skewed or heavy-tailed ones, IQR (1.5
  IQR beyond the quartiles) otherwise; ``auto`` says which happened.

Profiles are not computed from a sample (``sampled_rows`` is None): the sketches above cost about
as much per row as drawing a sample would, and are more accurate than the same sketches on one.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from agent_etl.exceptions import Problem, SpecError
from agent_etl.quality.columns import PROFILES, ColumnProfile, kind_of
from agent_etl.quality.numeric import METHODS
from agent_etl.quality.sketches import Hasher

VERSION = 1


class Profiler:
    """Profile a stream of batches. ``columns``: the columns to profile (default all);
    ``outliers``: ``{column: "iqr" | "zscore" | "mad" | "auto"}``; ``where``: names the stream in
    errors (e.g. "quality group on 'orders'"), ``line`` its YAML line."""

    def __init__(self, columns: Iterable[str] | None = None, outliers: dict[str, str] | None = None, *,
                 exact_distinct: int = 100_000, where: str = "profile", line: int | None = None):
        self.only = list(columns) if columns is not None else None
        self.outliers = dict(outliers or {})
        self.exact_distinct = exact_distinct
        self.where, self.line = where, line
        bad = {c: m for c, m in self.outliers.items() if m not in (*METHODS, "auto")}
        if bad:
            col, method = next(iter(bad.items()))
            raise SpecError(Problem(f"{where}: unknown outlier method {method!r} for column {col!r}", line,
                                    f"use one of {', '.join(METHODS)} or auto"))
        self.rows = self.batches = 0
        self.schema: pa.Schema | None = None
        self.columns: dict[str, ColumnProfile] = {}
        self._hasher = Hasher()

    def bind(self, schema: pa.Schema) -> None:
        """Check the configured columns against the stream's schema (a SpecError names them)."""
        names = list(schema.names)
        problems = []
        for what, cols in (("profile column", self.only or []), ("outlier column", self.outliers)):
            for col in cols:
                if col not in names:
                    close = difflib.get_close_matches(col, names, n=1)
                    hint = (f"did you mean {close[0]!r}? " if close else "") + f"available columns: {', '.join(names)}"
                    problems.append(Problem(f"{self.where}: {what} {col!r} is not in the stream", self.line, hint))
        for col in self.outliers:
            if col in names and kind_of(_plain(schema.field(col).type)) != "numeric":
                problems.append(Problem(f"{self.where}: outlier column {col!r} is {schema.field(col).type}, not a "
                                        "number", self.line, "set an outlier method only for numeric columns"))
        if problems:
            raise SpecError(problems)
        self.schema = schema
        for name in self.only if self.only is not None else names:
            if name not in self.columns:
                t = _plain(schema.field(name).type)
                self.columns[name] = PROFILES[kind_of(t)](name, t, self._hasher, self.exact_distinct,
                                                          self.outliers.get(name, "auto"))

    def observe(self, batch: pa.RecordBatch | pa.Table) -> None:
        if isinstance(batch, pa.Table):
            for b in batch.to_batches():
                self.observe(b)
            return
        if self.schema is None or (batch.schema is not self.schema and not batch.schema.equals(self.schema)):
            self.bind(batch.schema)
        self.rows += batch.num_rows
        self.batches += 1
        for name, col in self.columns.items():
            i = batch.schema.get_field_index(name)
            if i < 0:  # a column missing from this batch: all its rows are null
                col.observe(pa.array([], col.type), batch.num_rows)
                continue
            values = batch.column(i)
            if values.type != col.type:
                values = values.cast(col.type)
            nulls = values.null_count
            col.observe(values.drop_null() if nulls else values, nulls)

    def result(self) -> dict[str, Any]:
        self._hasher.close()
        schema = {f.name: str(f.type) for f in self.schema} if self.schema is not None else {}
        return {"version": VERSION, "rows": self.rows, "batches": self.batches, "sampled_rows": None,
                "schema": schema, "columns": {name: col.result() for name, col in self.columns.items()}}


def _plain(t: pa.DataType) -> pa.DataType:
    """Profile dictionary-encoded columns as their values."""
    return t.value_type if pa.types.is_dictionary(t) else t


def profile_table(table: pa.Table, **kw: Any) -> dict[str, Any]:
    """Profile a whole table (batches as they are): a convenience for notebooks and tests."""
    profiler = Profiler(**kw)
    profiler.bind(table.schema)
    profiler.observe(table)
    return profiler.result()


def profiler_for(group: Any) -> Profiler | None:
    """The profiler a quality group asks for (``profile: true`` or ``{columns, outliers}``), or None."""
    options = getattr(group, "profile", None)
    where, line = f"profile of quality group on {group.input!r}", getattr(group, "_line", None)
    if options is None:
        return Profiler(where=where, line=line)
    if not options.enabled:
        return None
    return Profiler(options.columns, options.outliers, where=where, line=line)
