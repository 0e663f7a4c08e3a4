"""``referential``: every value of a column must be a key of another input of the pipeline.

``referential: {column: customer_id, input: customers, key: id}`` flags the rows of the gated
stream whose ``customer_id`` is not among the ``id`` values of the step ``customers`` (a foreign
key). ``key`` defaults to ``column``. A null passes, as a null foreign key does in SQL.

The referenced step becomes a dependency of the gated step: the pipeline reads it in full (the
rows its own quality gates let through) before the gated step's first batch is checked, so a
referenced step must not depend on the gated one. Its distinct keys are kept as one sorted NumPy
array (8 bytes per key for numbers and dates, the longest key's length for text) and each batch is
looked up with one ``searchsorted``: memory grows with the distinct keys, not with the rows of
either stream. Key and column must be of one kind (both integers, both text, or the same type).
"""

from __future__ import annotations

import difflib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from agent_etl.exceptions import Problem, SpecError
from agent_etl.tools.validators.base import Check, CheckConfig
from agent_etl.tools.validators.dataset import _encode, _isin_sorted, _SortedKeys


def _kind(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "text"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    return str(t)


class Referential(Check):
    """Fail rows whose value is not a key of another input (nulls pass)."""

    scope = "dataset"
    whole_data = True

    class Config(CheckConfig):
        """A foreign key: ``referential: {column: customer_id, input: customers, key: id}``."""

        column: str = Field(description="the column whose values must be keys of input")
        input: str = Field(min_length=1, description="the step whose keys the values must be among")
        key: str | None = Field(None, description="the key column of that step (default: column)")

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.key = config.key or config.column
        self._seen = _SortedKeys()
        self._keys: np.ndarray | None = None
        self._key_type: pa.DataType | None = None
        self._problems: list[Problem] = []
        self._ready = False

    def columns(self) -> list[str]:
        return [self.config.column]

    def inputs(self) -> list[str]:
        return [self.config.input]

    def reference(self, name: str, batch: pa.RecordBatch) -> None:
        if name != self.config.input or self._problems:
            return
        if self.key not in batch.schema.names:
            close = difflib.get_close_matches(self.key, batch.schema.names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            self._problems.append(Problem(f"key {self.key!r} is not a column of {name!r}",
                                          hint=f"{hint}columns of {name!r}: {', '.join(batch.schema.names)}"))
            return
        col = batch.column(self.key)
        self._key_type = self._key_type or col.type
        if col.null_count:
            col = pc.drop_null(col)
        keys = np.sort(_encode([col]))
        if len(keys):
            distinct = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
            self._seen.add(distinct[~self._seen.contains(distinct)])

    def referenced(self) -> list[Problem]:
        runs = self._seen.runs
        self._keys = np.sort(np.concatenate(runs)) if len(runs) > 1 else (runs[0] if runs else np.zeros(0, np.int64))
        self._seen = _SortedKeys()
        self._ready = True
        return list(self._problems)

    def bind(self, schema: pa.Schema) -> list[Problem]:
        if self._key_type is None:
            return []  # an empty reference: nothing to compare types with, and every value fails
        t = schema.field(self.config.column).type
        if _kind(t) != _kind(self._key_type):
            return [Problem(f"column {self.config.column!r} ({t}) cannot be compared with key {self.key!r} "
                            f"({self._key_type}) of {self.config.input!r}",
                            hint="cast one of them so both are integers or both text (cast transform)")]
        return []

    def failures(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        if not self._ready:
            raise SpecError(f"quality check {self.label}: input {self.config.input!r} was not read; a referential "
                            "check runs in a pipeline, where the gate reads the referenced step first")
        col = batch.column(self.config.column)
        valid = None
        if col.null_count:
            valid = col.is_valid()
            col = col.filter(valid)
        missing = ~_isin_sorted(_encode([col]), self._keys)
        if valid is not None:
            full = np.zeros(batch.num_rows, dtype=bool)
            full[np.flatnonzero(valid.to_numpy(zero_copy_only=False))] = missing
            missing = full
        return pa.array(missing, type=pa.bool_())
