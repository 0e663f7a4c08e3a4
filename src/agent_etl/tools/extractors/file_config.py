"""Options shared by the file extractors, and the Arrow type names ``column_types`` takes."""

from __future__ import annotations

import re

import pyarrow as pa
from typing import Annotated

from pydantic import AfterValidator, Field

from agent_etl.tools.base import ToolConfig

_ALIASES = {"int": pa.int64(), "integer": pa.int64(), "date": pa.date32(), "timestamp": pa.timestamp("us")}
_DECIMAL = re.compile(r"decimal(?:128|256)?\(\s*(\d+)\s*,\s*(\d+)\s*\)", re.I)
_TIMESTAMP_TZ = re.compile(r"timestamp\[(s|ms|us|ns)\s*,\s*tz=([^\]]+)\]", re.I)


def arrow_type(name: str) -> pa.DataType:
    """An Arrow type from its name: int64, float64, string, bool, date32, timestamp[s],
    timestamp[ms, tz=UTC], decimal(12,2); also int, date, timestamp (microseconds)."""
    text = name.strip()
    if m := _DECIMAL.fullmatch(text):
        precision, scale = int(m[1]), int(m[2])
        return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    if m := _TIMESTAMP_TZ.fullmatch(text):
        return pa.timestamp(m[1].lower(), tz=m[2].strip())
    try:
        return _ALIASES.get(text.lower()) or pa.type_for_alias(text.lower())
    except (ValueError, KeyError):
        raise ValueError(f"unknown type {name!r}; use an Arrow type name such as int64, float64, string, "
                         "bool, date32, timestamp[s], timestamp[ms, tz=UTC] or decimal(12,2)") from None


def _known_types(value: dict[str, str]) -> dict[str, str]:
    for name in value.values():
        arrow_type(name)
    return value


# the ``column_types`` option of a tool: {column: Arrow type name}, every name known when the spec is validated
ColumnTypes = Annotated[dict[str, str], AfterValidator(_known_types)]


class FileConfig(ToolConfig):
    """Options shared by the file extractors."""

    path: str = Field(min_length=1, description="a file, a directory (every file of the format in it) or a glob")
    partitions: int = Field(1, ge=1, le=64, description="groups of files (by size) read by as many copies of the "
                            "branch in a run spread over workers (--bus nats://); one task reads them all otherwise")


class TypedFileConfig(FileConfig):
    column_types: ColumnTypes = Field(
        default_factory=dict, description="Arrow type per column, e.g. {id: int64, day: date32}")

    def arrow_types(self, first: pa.Schema | None = None) -> dict[str, pa.DataType]:
        """These column types over those of the first file (whose all-null columns stay untyped)."""
        types = {f.name: f.type for f in first if not pa.types.is_null(f.type)} if first else {}
        return types | {col: arrow_type(t) for col, t in self.column_types.items()}
