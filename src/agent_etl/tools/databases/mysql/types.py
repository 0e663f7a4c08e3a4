"""MariaDB / MySQL types <-> Arrow types, for the mysql extractor and loader.

Reading (from the result's column metadata, so a query maps like a table)::

    TINYINT(1) / BOOLEAN, BIT(1) -> bool        TINYINT..BIGINT [UNSIGNED] -> int8..int64 / uint8..uint64
    DECIMAL(p,s) -> decimal128(p,s) (p > 38: decimal256)     FLOAT -> float32, DOUBLE -> float64
    CHAR/VARCHAR/TEXT, JSON, ENUM, SET -> string             BINARY/VARBINARY/BLOB -> binary
    DATE -> date32    DATETIME -> timestamp[us]    TIMESTAMP -> timestamp[us, UTC]    TIME -> time64[us]
    YEAR -> int16     BIT(n > 1) -> uint64         GEOMETRY -> binary (WKB)

Writing (tables created from the Arrow schema)::

    bool -> BOOLEAN   int8..int64 -> TINYINT..BIGINT   uint8..uint64 -> ... UNSIGNED
    float16/32 -> FLOAT   float64 -> DOUBLE   decimal(p,s) -> DECIMAL(p,s) (p <= 65, s <= 38)
    string -> LONGTEXT (VARCHAR(768) in a key)   binary -> LONGBLOB (VARBINARY(3072) in a key)
    date -> DATE   timestamp -> DATETIME(0/3/6)   tz-aware timestamp -> DATETIME(6) holding UTC
    time -> TIME(0/3/6)   dictionary -> its value type   null -> LONGTEXT

MariaDB/MySQL have no NaN or infinity: NaN is written as NULL; an infinite value fails the load,
naming the column. Lists, structs, maps and durations have no column type here: the load fails
naming the column and how to convert it upstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from agent_etl.exceptions import ToolError
from agent_etl.tools.databases.mysql.connections import ident

_UNSIGNED, _BINARY_CHARSET = 32, 63
_INTS = {1: 8, 2: 16, 9: 32, 3: 32, 8: 64}  # TINY, SHORT, INT24, LONG, LONGLONG -> bits


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType  # what the extractor yields
    expr: str  # what to SELECT (connectorx reads wide decimals exactly only as text, BIT only as a number)

    @property
    def plain(self) -> bool:
        return self.expr == ident(self.name)


def result_columns(fields: list[Any]) -> list[Column]:
    """Columns of a result from its protocol metadata (PyMySQL field descriptors)."""
    return [_column(f) for f in fields]


def _column(f: Any) -> Column:
    name, code, length = f.name, f.type_code, f.length
    q = ident(name)
    unsigned = bool(f.flags & _UNSIGNED)
    binary = f.charsetnr == _BINARY_CHARSET
    if code in (0, 246):  # DECIMAL: the display length holds the sign and the point
        scale = f.scale
        precision = max(1, scale, length - (1 if scale else 0) - (0 if unsigned else 1))
        t = pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
        # connectorx reads DECIMAL through rust_decimal (28 digits) at scale 10; wider ones as text
        return Column(name, t, q if precision <= 28 and scale <= 10 else f"CAST({q} AS CHAR)")
    if code == 1 and length == 1:
        return Column(name, pa.bool_(), q)
    if code in _INTS:
        bits = _INTS[code]
        return Column(name, getattr(pa, f"{'u' if unsigned else ''}int{bits}")(), q)
    if code == 16:  # BIT
        return Column(name, pa.bool_() if length == 1 else pa.uint64(), f"CAST({q} AS UNSIGNED)")
    simple = {4: pa.float32(), 5: pa.float64(), 7: pa.timestamp("us", "UTC"), 12: pa.timestamp("us"),
              10: pa.date32(), 14: pa.date32(), 11: pa.time64("us"), 13: pa.int16(), 245: pa.string()}
    if code in simple:
        return Column(name, simple[code], q)
    if code == 255:
        return Column(name, pa.binary(), f"ST_AsBinary({q})")
    if code in (249, 250, 251, 252, 253, 254, 15):
        return Column(name, pa.binary() if binary else pa.string(), q)
    return Column(name, pa.string(), f"CAST({q} AS CHAR)")  # NULL and anything newer: its text


def conform(batch: pa.RecordBatch, columns: list[Column]) -> pa.RecordBatch:
    """connectorx's batch with the documented Arrow types (the casts are exact)."""
    arrays = []
    for arr, col in zip(batch.columns, columns):
        if arr.type != col.type:
            if pa.types.is_timestamp(col.type) and col.type.tz and pa.types.is_timestamp(arr.type):
                arr = arr.cast(pa.timestamp("us")).cast(col.type)  # the session's zone is UTC
            else:
                arr = arr.cast(col.type)
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, names=[c.name for c in columns])


class Unmappable(ToolError):
    pass


def column_type(field: pa.Field, key: bool = False) -> str:
    """The column type a created table gets for an Arrow field."""
    t = field.type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_integer(t):
        name = {8: "TINYINT", 16: "SMALLINT", 32: "INT", 64: "BIGINT"}[t.bit_width]
        return name + (" UNSIGNED" if pa.types.is_unsigned_integer(t) else "")
    if pa.types.is_floating(t):
        return "DOUBLE" if t.bit_width == 64 else "FLOAT"
    if pa.types.is_decimal(t):
        if t.precision > 65 or t.scale > 38 or t.scale < 0:
            raise Unmappable(f"column {field.name!r} is {t}, beyond DECIMAL(65,38); cast it to a smaller "
                             f"decimal or to string upstream (tool: cast)")
        return f"DECIMAL({t.precision},{t.scale})"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t) or pa.types.is_null(t):
        return "VARCHAR(768)" if key else "LONGTEXT"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) \
            or pa.types.is_binary_view(t):
        return "VARBINARY(3072)" if key else "LONGBLOB"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_timestamp(t):
        return "DATETIME(6)" if t.tz else f"DATETIME{_fraction(t.unit)}"
    if pa.types.is_time(t):
        return f"TIME{_fraction(t.unit)}"
    raise Unmappable(f"column {field.name!r} has Arrow type {t}, which has no MariaDB/MySQL column type here; "
                     "drop it or turn it into a string upstream (e.g. tool: sql with to_json(column))")


def _fraction(unit: str) -> str:
    return {"s": "", "ms": "(3)"}.get(unit, "(6)")


def text_batch(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[str], list[str]]:
    """The batch as pyarrow.csv can write it for LOAD DATA, with the column list and SET clauses.

    bool -> 0/1, tz-aware -> UTC wall time, NaN -> NULL, binary -> hex (UNHEXed by the server)."""
    arrays, targets, sets = [], [], []
    for i, (f, arr) in enumerate(zip(batch.schema, batch.columns)):
        column_type(f)  # unmappable types fail here, named
        t = arr.type
        if pa.types.is_dictionary(t):
            arr, t = arr.dictionary_decode(), t.value_type
        if pa.types.is_boolean(t):
            arr = arr.cast(pa.int8())
        elif pa.types.is_floating(t):
            if pa.types.is_float16(t):
                arr = arr.cast(pa.float32())
            if pc.any(pc.is_inf(arr)).as_py():
                raise ToolError(f"column {f.name!r} holds an infinite value, which MariaDB/MySQL cannot store; "
                                "replace it upstream (e.g. tool: derive with CASE WHEN isinf(x) THEN NULL ELSE x END)")
            arr = pc.if_else(pc.is_nan(arr), pa.scalar(None, arr.type), arr)
        elif pa.types.is_timestamp(t):
            target = pa.timestamp("us" if t.unit == "ns" else t.unit)
            try:
                arr = arr.cast(target)  # tz-aware: the UTC wall time, as the session's zone is UTC
            except pa.ArrowInvalid:
                raise ToolError(f"column {f.name!r} has nanoseconds, which MariaDB/MySQL cannot store (DATETIME(6)"
                                " keeps microseconds); round it upstream (tool: cast to timestamp[us])") from None
        elif pa.types.is_time(t) and t.unit == "ns":
            arr = arr.cast(pa.time64("us"), safe=False)
        elif pa.types.is_null(t):
            arr = arr.cast(pa.string())
        if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) \
                or pa.types.is_binary_view(t):
            arrays.append(hex_strings(arr))
            targets.append(f"@h{i}")
            sets.append(f"{ident(f.name)} = UNHEX(@h{i})")
        else:
            arrays.append(arr)
            targets.append(ident(f.name))
    return pa.RecordBatch.from_arrays(arrays, names=[f"c{i}" for i in range(len(arrays))]), targets, sets


_HEX = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)


def hex_strings(arr: pa.Array) -> pa.Array:
    """Binary values as upper-case hex strings, vectorised (two characters per byte)."""
    arr = arr.cast(pa.large_binary()) if not pa.types.is_large_binary(arr.type) else arr
    arr = pa.concat_arrays([arr]) if arr.offset else arr  # buffers from offset 0
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[: len(arr) + 1]
    start, end = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[start:end] if end > start else np.empty(0, np.uint8)
    out = np.empty(data.size * 2, dtype=np.uint8)
    out[0::2], out[1::2] = _HEX[data >> 4], _HEX[data & 15]
    new_offsets = (offsets - start) * 2
    return pa.LargeStringArray.from_buffers(len(arr), pa.py_buffer(new_offsets), pa.py_buffer(out),
                                            arr.buffers()[0], arr.null_count)
