"""Column-shaping transforms: select, rename, cast. Zero-copy where Arrow allows it."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from agent_etl.tools.base import BatchTransform, ToolConfig
from agent_etl.tools.transforms.inputs import missing_columns, tool_error
from agent_etl.tools.type_names import EXAMPLE_TYPES, parse_type, sql_type


class Select(BatchTransform):
    """Keep only the listed columns, in the listed order."""
    streaming = True

    class Config(ToolConfig):
        """Keep only the listed columns, in the listed order."""

        columns: list[str] = Field(min_length=1, description="columns to keep, in output order")

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        missing_columns(self, self.config.columns, batch.schema)
        return batch.select(self.config.columns)


class Rename(BatchTransform):
    """Rename columns: columns: {old: new}."""
    streaming = True

    class Config(ToolConfig):
        """Rename columns: columns: {old: new}."""

        columns: dict[str, str] = Field(min_length=1, description="old name -> new name")

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        mapping = self.config.columns
        missing_columns(self, list(mapping), batch.schema)
        names = [mapping.get(n, n) for n in batch.schema.names]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise tool_error(self, f"renaming gives duplicate column name(s) {', '.join(map(repr, dupes))}",
                             "rename or drop the existing column of that name first (select / rename)")
        return batch.rename_columns(names)


class Cast(BatchTransform):
    """Change column types: columns: {name: type}, e.g. int64, date32, decimal128(12,2)."""
    streaming = True

    threaded = True

    class Config(ToolConfig):
        """Change column types: columns: {name: type}, e.g. int64, date32, decimal128(12,2)."""

        columns: dict[str, str] = Field(min_length=1, description=f"column -> type ({EXAMPLE_TYPES})")
        safe: bool = Field(True, description="fail on lossy conversions (overflow, truncation); false allows them")

        @field_validator("columns")
        @classmethod
        def _types(cls, value: dict[str, str]) -> dict[str, str]:
            for name, type_name in value.items():
                try:
                    parse_type(type_name)
                except ValueError as e:
                    raise ValueError(f"column {name!r}: {e}") from None
            return value

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self._types = {name: parse_type(t) for name, t in self.config.columns.items()}
        self._rows = 0  # rows seen before this batch, to say where a bad value is in the stream

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        missing_columns(self, list(self._types), batch.schema)
        arrays, fields = list(batch.columns), list(batch.schema)
        for name, target in self._types.items():
            i = batch.schema.get_field_index(name)
            if arrays[i].type != target:
                arrays[i] = self._cast(name, arrays[i], target)
                fields[i] = fields[i].with_type(target)
        self._rows += batch.num_rows
        return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields, batch.schema.metadata))

    def _cast(self, name: str, arr: pa.Array, target: pa.DataType) -> pa.Array:
        safe = self.config.safe
        try:
            return _convert(arr, target, safe)
        except pa.ArrowNotImplementedError as e:
            raise tool_error(self, f"cannot cast column {name!r} from {arr.type} to {target}: {e}",
                             f"convert it with a derive expression instead, e.g. {name}: \"CAST({_ident(name)} AS "
                             f"{sql_type(target)})\"") from e
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            row = _first_bad(arr, target, safe)
            value = arr[row].as_py()
            shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
            lossy = safe and _casts(arr.slice(row, 1), target, safe=False)
            if lossy:
                hint = "fix the data, or set safe: false to allow lossy conversion (truncation, overflow)"
            else:
                hint = (f"fix the data, or turn bad values into nulls with a derive expression instead: "
                        f"{name}: \"TRY_CAST({_ident(name)} AS {sql_type(target)})\"")
            raise tool_error(self, f"cannot cast column {name!r} to {target}: value {shown} at row "
                                   f"{self._rows + row + 1} of the stream ({e})", hint) from e


def _ident(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_]\w*", name) else '"' + name.replace('"', '""') + '"'


def _convert(arr: pa.Array, target: pa.DataType, safe: bool) -> pa.Array:
    if pa.types.is_integer(arr.type) and pa.types.is_decimal(target):
        # pyarrow rejects int64 -> decimal(12,2) by type, not by value; widen first so values are checked
        wide = pa.decimal128(38, target.scale) if target.scale <= 18 else pa.decimal256(76, target.scale)
        return pc.cast(pc.cast(arr, wide), target, safe=safe)
    if (pa.types.is_timestamp(target) and target.tz and
            (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type))):
        try:
            return pc.cast(arr, target, safe=safe)
        except pa.ArrowInvalid:
            # text without a zone offset: read it as wall-clock time in the target zone
            naive = pc.cast(arr, pa.timestamp(target.unit), safe=safe)
            return pc.assume_timezone(naive, target.tz)
    return pc.cast(arr, target, safe=safe)


def _casts(arr: pa.Array, target: pa.DataType, safe: bool) -> bool:
    try:
        _convert(arr, target, safe)
        return True
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return False


def _first_bad(arr: pa.Array, target: pa.DataType, safe: bool) -> int:
    """Index of the first value that does not convert: a bisection of whole-slice casts, O(n) in all."""
    lo, hi = 0, len(arr)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _casts(arr.slice(lo, mid - lo), target, safe):
            lo = mid
        else:
            hi = mid
    return lo
