"""``length``: the length of a text, binary or list value must lie within bounds.

Text is measured in characters (code points, not bytes), binary values in bytes, lists in items.
A null passes (add ``not_null`` when a null is an error too).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from agent_etl.exceptions import Problem
from agent_etl.tools.validators.base import CheckConfig
from agent_etl.tools.validators.rows import _column, _no_nulls, _TypedCheck, _value_type


class Length(_TypedCheck):
    """Fail rows whose text/binary/list length lies outside [min, max] (nulls pass)."""

    class Config(CheckConfig):
        """Bounds on a length: ``length: {column: zip, min: 5, max: 10}`` (text in characters)."""

        column: str = Field(description="the column checked")
        min: int | None = Field(None, ge=0, description="characters at least")
        max: int | None = Field(None, ge=0, description="characters at most")

        @model_validator(mode="after")
        def _bounds(self) -> Length.Config:
            if self.min is None and self.max is None:
                raise ValueError("length needs min, max or both")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
            return self

    _measure = None

    def columns(self) -> list[str]:
        return [self.config.column]

    def _resolve(self, schema: pa.Schema) -> list[Problem]:
        t = _value_type(schema.field(self.config.column).type)
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
            self._measure = pc.utf8_length
        elif pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
            self._measure = pc.binary_length
        elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            self._measure = pc.list_value_length
        else:
            return [Problem(f"column {self.config.column!r} is {t}, which has no length",
                            hint="length works on text, binary and list columns; cast the column to string first")]
        return []

    def failures(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        self._ensure_bound(batch)
        lengths = self._measure(_column(batch, self.config.column))
        mask = None
        if self.config.min is not None:
            mask = pc.less(lengths, self.config.min)
        if self.config.max is not None:
            over = pc.greater(lengths, self.config.max)
            mask = over if mask is None else pc.or_(mask, over)
        return _no_nulls(mask)
