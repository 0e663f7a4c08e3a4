"""``schema``: the stream must have the expected columns with the expected Arrow types.

``schema: {columns: {id: int64, amount: "decimal128(12,2)", created_at: "timestamp[us, tz=UTC]"}}``
fails the dataset on drift and says what drifted: missing columns, columns of another type and,
unless ``allow_extra: true``, columns that are not listed. Types are written as for the ``cast``
transform. A dictionary-encoded column counts as its value type (the encoding is not a type). The
schema of every batch is compared, so a change mid-stream is reported too.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field, field_validator

from agent_etl.exceptions import Problem
from agent_etl.tools.validators.base import Check, CheckConfig


def _plain(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


class Schema(Check):
    """Fail the dataset when columns are missing, unexpected or of another type."""

    scope = "dataset"

    class Config(CheckConfig):
        """Expected columns and types: ``schema: {columns: {id: int64, name: string}, allow_extra: true}``."""

        columns: dict[str, str] = Field(min_length=1, description="column name -> the Arrow type it must have")
        allow_extra: bool = Field(False, description="columns that are not listed are fine")

        @field_validator("columns")
        @classmethod
        def _types(cls, value: dict[str, str]) -> dict[str, str]:
            from agent_etl.tools.type_names import parse_type

            for name, type_name in value.items():
                try:
                    parse_type(str(type_name))
                except ValueError as e:
                    raise ValueError(f"column {name!r}: {e}") from None
            return value

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        from agent_etl.tools.type_names import parse_type

        self.expected = {name: parse_type(str(t)) for name, t in config.columns.items()}
        self.drift: list[str] = []
        self._seen: pa.Schema | None = None

    def bind(self, schema: pa.Schema) -> list[Problem]:
        self._compare(schema)
        return []  # drift is the check's verdict, given at the end, not a spec error

    def observe(self, batch: pa.RecordBatch) -> None:
        if self._seen is None or (batch.schema is not self._seen and not batch.schema.equals(self._seen)):
            self._compare(batch.schema)

    def _compare(self, schema: pa.Schema) -> None:
        self._seen = schema
        actual = {f.name: _plain(f.type) for f in schema}
        found = []
        missing = [n for n in self.expected if n not in actual]
        if missing:
            found.append("missing columns: " + ", ".join(missing))
        changed = [f"{n} is {actual[n]}, expected {t}" for n, t in self.expected.items() if n in actual
                   and actual[n] != t]
        if changed:
            found.append("type changes: " + "; ".join(changed))
        extra = [n for n in actual if n not in self.expected]
        if extra and not self.config.allow_extra:
            found.append("unexpected columns: " + ", ".join(extra) + " (allow_extra: true accepts them)")
        for text in found:
            if text not in self.drift:
                self.drift.append(text)

    def finish(self) -> str | None:
        return "; ".join(self.drift) if self.drift else None
