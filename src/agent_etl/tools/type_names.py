"""Arrow types by name, as a spec writes them (``cast``, the schema and castable checks), and their
DuckDB spelling for hints."""

from __future__ import annotations

import difflib
import re

import pyarrow as pa

_PARAM = re.compile(r"^(timestamp)\[\s*(s|ms|us|ns)\s*(?:,\s*tz\s*=\s*([^\]\s]+)\s*)?\]$"
                    r"|^(time32|time64|duration)\[\s*(s|ms|us|ns)\s*\]$"
                    r"|^(decimal|decimal128|decimal256)\(\s*(\d+)\s*,\s*(\d+)\s*\)$", re.IGNORECASE)
# SQL spellings people type without thinking; pyarrow's own aliases cover the rest
_SQL_NAMES = {"int": pa.int64(), "integer": pa.int64(), "bigint": pa.int64(), "smallint": pa.int16(),
              "text": pa.string(), "varchar": pa.string(), "str": pa.string(), "date": pa.date32(),
              "timestamp": pa.timestamp("us")}
EXAMPLE_TYPES = "int64, int32, float64, string, bool, date32, timestamp[us], timestamp[us, tz=UTC], decimal128(12,2)"


def parse_type(name: str) -> pa.DataType:
    """An Arrow type from its name: a pyarrow alias (int64, string) or a parameterised form."""
    text = name.strip()
    m = _PARAM.match(text)
    if m:
        if m.group(1):
            return pa.timestamp(m.group(2).lower(), tz=m.group(3))
        if m.group(4):
            return getattr(pa, m.group(4).lower())(m.group(5).lower())
        precision, scale = int(m.group(7)), int(m.group(8))
        kind = m.group(6).lower()
        if kind == "decimal":
            kind = "decimal128" if precision <= 38 else "decimal256"
        return getattr(pa, kind)(precision, scale)
    if text.lower() in _SQL_NAMES:
        return _SQL_NAMES[text.lower()]
    try:
        return pa.type_for_alias(text.lower())
    except ValueError:
        known = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32", "float64",
                 "string", "large_string", "bool", "date32", "date64", "binary", "timestamp[us]", "decimal128(12,2)",
                 *_SQL_NAMES]
        close = difflib.get_close_matches(text.lower(), known, n=1)
        guess = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown type {name!r}; {guess}types look like {EXAMPLE_TYPES}") from None


def sql_type(t: pa.DataType) -> str:
    """The DuckDB spelling of an Arrow type, for hints that suggest a TRY_CAST."""
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision},{t.scale})"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    names = {"int8": "TINYINT", "int16": "SMALLINT", "int32": "INTEGER", "int64": "BIGINT", "uint8": "UTINYINT",
             "uint16": "USMALLINT", "uint32": "UINTEGER", "uint64": "UBIGINT", "float": "FLOAT", "double": "DOUBLE",
             "string": "VARCHAR", "large_string": "VARCHAR", "bool": "BOOLEAN", "date32[day]": "DATE"}
    return names.get(str(t), str(t).upper())
