"""``castable``: every value of a column must convert to a type, e.g. text that must parse as a number.

``castable: {column: amount_text, type: decimal128(12,2)}`` flags the rows whose value does not
convert. Types are written as for the ``cast`` transform (``int64``, ``float64``, ``bool``,
``date32``, ``timestamp[us]``, ``timestamp[us, tz=UTC]``, ``decimal128(p,s)``, ``string``; SQL
spellings such as ``int`` or ``date`` work too). Nulls pass (add ``not_null`` for them).

What "converts" means is DuckDB's ``TRY_CAST``, the conversion the ``derive``/``sql`` transforms
use, evaluated on the whole batch at once. It is more lenient than Arrow's parser behind the
``cast`` transform: DuckDB trims blanks (``" 12"``), rounds ``"1.5"`` to an integer and reads
``"1e3"`` as 1000, where the ``cast`` transform rejects those. Convert with
``derive: {columns: {x: "TRY_CAST(x AS BIGINT)"}}`` to get exactly what this check accepted.
Timestamps without an offset are read as UTC.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field, field_validator

from agent_etl.exceptions import Problem, ToolError
from agent_etl.tools.databases.duckdb.in_memory import BatchQuery, reason
from agent_etl.tools.validators.base import CheckConfig
from agent_etl.tools.validators.rows import _column, _TypedCheck

_DUCKDB_TYPES = {"int8": "TINYINT", "int16": "SMALLINT", "int32": "INTEGER", "int64": "BIGINT",
                 "uint8": "UTINYINT", "uint16": "USMALLINT", "uint32": "UINTEGER", "uint64": "UBIGINT",
                 "float": "FLOAT", "double": "DOUBLE", "bool": "BOOLEAN", "string": "VARCHAR",
                 "large_string": "VARCHAR", "date32[day]": "DATE", "date64[ms]": "DATE"}


def duckdb_type(t: pa.DataType) -> str | None:
    """DuckDB's name for an Arrow type the check supports, or None."""
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision},{t.scale})" if t.precision <= 38 else None
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else {"s": "TIMESTAMP_S", "ms": "TIMESTAMP_MS", "us": "TIMESTAMP",
                                           "ns": "TIMESTAMP_NS"}[t.unit]
    return _DUCKDB_TYPES.get(str(t))


class Castable(_TypedCheck):
    """Fail rows whose value does not convert to the given type (DuckDB TRY_CAST; nulls pass)."""

    class Config(CheckConfig):
        """The type every value must convert to: ``castable: {column: day_text, type: date32}``."""

        column: str = Field(description="the column checked")
        type: str = Field(description="the Arrow type every value must convert to, e.g. date32, int64")

        @field_validator("type")
        @classmethod
        def _known(cls, value: str) -> str:
            from agent_etl.tools.type_names import parse_type

            t = parse_type(value)  # its ValueError names the type and suggests one
            if duckdb_type(t) is None:
                raise ValueError(f"castable does not support type {value!r}; use a number, bool, string, date, "
                                 "timestamp or decimal type")
            return value

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        from agent_etl.tools.type_names import parse_type

        self._query = BatchQuery("b", f"SELECT TRY_CAST(v AS {duckdb_type(parse_type(config.type))}) IS NULL "
                                      "AND v IS NOT NULL FROM b")

    def columns(self) -> list[str]:
        return [self.config.column]

    def _resolve(self, schema: pa.Schema) -> list[Problem]:
        return []  # any column converts to text, and TRY_CAST says per value what converts

    def failures(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        self._ensure_bound(batch)
        import duckdb

        one = pa.record_batch([_column(batch, self.config.column)], names=["v"])
        try:
            return self._query.column(one)
        except duckdb.Error as e:
            raise ToolError(f"quality check {self.label}: DuckDB cannot convert column {self.config.column!r} "
                            f"({one.schema.field(0).type}) to {self.config.type}: {reason(e)}; cast the column "
                            "to string first (cast transform)") from e
