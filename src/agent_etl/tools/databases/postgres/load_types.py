"""Arrow types and PostgreSQL column types, for the postgres loader (the extractor's are in postgres.columns).

A table the loader creates gets, for each Arrow type::

    int8, int16, uint8           smallint            float16, float32    real
    int32, uint16                integer             float64             double precision
    int64, uint32                bigint              bool                boolean
    uint64                       numeric(20,0)       decimal128(p,s)     numeric(p,s)
    string, large_string         text                binary (any kind)   bytea
    date32, date64               date                time32, time64      time
    timestamp (no tz)            timestamp           timestamp with tz   timestamptz
    uuid (extension)             uuid                json (extension)    jsonb
    list of ints, floats, bools or strings          smallint[] ... text[] (1-D arrays)
    struct, map, other lists     jsonb               null (no values)    text
    dictionary                   the type of its values

Not mapped (the load fails naming the column; cast it upstream with the cast transform): duration,
interval, union, decimal256 and negative-scale decimals.

Writing into an existing column, an Arrow type is accepted when PostgreSQL would hold every value
of it: any integer into smallint/integer/bigint (a value out of range fails naming the column),
integers and floats into real/double precision, integers and decimals into numeric (PostgreSQL
applies the column's precision and scale), strings into text/varchar/char/enum/json/jsonb, structs,
maps and lists into json/jsonb, binaries into bytea, 16-byte binaries into uuid, and lists into
arrays of an accepted element type. Anything else is a type change: an error naming the column with
both types.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

# PostgreSQL type name (pg_type.typname) -> SQL spelling, for the types this module creates
_DDL = {"int2": "smallint", "int4": "integer", "int8": "bigint", "float4": "real", "float8": "double precision",
        "bool": "boolean", "text": "text", "bytea": "bytea", "date": "date", "time": "time",
        "timestamp": "timestamp", "timestamptz": "timestamptz", "uuid": "uuid", "jsonb": "jsonb", "json": "json"}
ARRAY_ELEMENTS = {"_int2": "int2", "_int4": "int4", "_int8": "int8", "_float4": "float4", "_float8": "float8",
                  "_bool": "bool", "_text": "text", "_varchar": "varchar"}
TEXT_LIKE = {"text", "varchar", "bpchar", "name"}  # sent as UTF-8 bytes; enums are resolved to "text"
_INTS = {"int2": 2, "int4": 4, "int8": 8}


@dataclass(frozen=True)
class Column:
    """A column of an existing table: ``kind`` is the type name the encoder writes (pg_type.typname;
    an enum is "text", a domain its base type), ``shown`` the type as PostgreSQL spells it."""

    name: str
    kind: str
    shown: str
    not_null: bool = False


class Unmapped(TypeError):
    """An Arrow type with no PostgreSQL column type."""


def natural(t: pa.DataType) -> tuple[str, str]:
    """(kind, SQL type) of the column created for Arrow type ``t``; raises ``Unmapped``."""
    t = _plain(t)
    if pa.types.is_boolean(t):
        return "bool", "boolean"
    if pa.types.is_integer(t):
        if t == pa.uint64():
            return "numeric", "numeric(20,0)"
        width = t.bit_width * (2 if pa.types.is_unsigned_integer(t) else 1)
        kind = "int2" if width <= 16 else "int4" if width <= 32 else "int8"
        return kind, _DDL[kind]
    if pa.types.is_floating(t):
        kind = "float8" if t == pa.float64() else "float4"
        return kind, _DDL[kind]
    if pa.types.is_decimal128(t) and t.scale >= 0:
        return "numeric", f"numeric({t.precision},{t.scale})"
    if _is_string(t) or pa.types.is_null(t):
        return "text", "text"
    if _is_binary(t):
        return "bytea", "bytea"
    if pa.types.is_date(t):
        return "date", "date"
    if pa.types.is_time(t):
        return "time", "time"
    if pa.types.is_timestamp(t):
        kind = "timestamptz" if t.tz else "timestamp"
        return kind, _DDL[kind]
    if _is_uuid(t):
        return "uuid", "uuid"
    if _is_json(t) or pa.types.is_struct(t) or pa.types.is_map(t):
        return "jsonb", "jsonb"
    if _is_list(t):
        try:
            kind, ddl = natural(t.value_type)
        except Unmapped:
            kind = ""
        if "_" + kind in ARRAY_ELEMENTS:
            return "_" + kind, ddl + "[]"
        return "jsonb", "jsonb"
    raise Unmapped(str(t))


def accepts(kind: str, t: pa.DataType) -> bool:
    """Whether values of Arrow type ``t`` can be written into a column of ``kind``."""
    t = _plain(t)
    if pa.types.is_null(t):
        return True
    if kind in _INTS:
        return pa.types.is_integer(t)
    if kind in ("float4", "float8"):
        return pa.types.is_integer(t) or pa.types.is_floating(t)
    if kind == "numeric":
        return pa.types.is_integer(t) or (pa.types.is_decimal128(t) and t.scale >= 0)
    if kind in TEXT_LIKE:
        return _is_string(t)
    if kind in ("json", "jsonb"):
        return _is_string(t) or _is_json(t) or pa.types.is_struct(t) or pa.types.is_map(t) or _is_list(t)
    if kind == "bytea":
        return _is_binary(t)
    if kind == "uuid":
        return _is_uuid(t)
    if kind in ("bool", "date", "time"):
        return {"bool": pa.types.is_boolean, "date": pa.types.is_date, "time": pa.types.is_time}[kind](t)
    if kind in ("timestamp", "timestamptz"):
        return pa.types.is_timestamp(t) and bool(t.tz) == (kind == "timestamptz")
    if kind in ARRAY_ELEMENTS:
        return _is_list(t) and accepts(ARRAY_ELEMENTS[kind], t.value_type)
    return False


def writable(kind: str) -> bool:
    """Whether the encoder can write a column of ``kind`` at all."""
    return kind in _DDL or kind in TEXT_LIKE or kind == "numeric" or kind in ARRAY_ELEMENTS


def _plain(t: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(t):
        return _plain(t.value_type)
    if isinstance(t, pa.ExtensionType) and not (_is_uuid(t) or _is_json(t)):
        return _plain(t.storage_type)
    return t


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_binary(t: pa.DataType) -> bool:
    return (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)
            or (pa.types.is_fixed_size_binary(t) and not _is_uuid(t)))


def _is_uuid(t: pa.DataType) -> bool:
    return getattr(t, "extension_name", None) == "arrow.uuid"


def _is_json(t: pa.DataType) -> bool:
    return getattr(t, "extension_name", None) == "arrow.json"


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) \
        or pa.types.is_list_view(t) or pa.types.is_large_list_view(t)
