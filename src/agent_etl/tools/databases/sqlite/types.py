"""What the SQLite extractor and loader share: type mapping and identifier quoting.

SQLite stores every value as one of five storage classes (NULL, INTEGER, REAL, TEXT, BLOB); a
column's declared type is only a hint (its "affinity"). So the loader writes a declared type that
says what the Arrow type was, and the extractor reads that declared type back::

    Arrow                     declared type       stored as
    int*, uint*               INTEGER             INTEGER
    float*                    REAL                REAL (NaN becomes NULL: SQLite has no NaN)
    bool                      BOOLEAN             INTEGER 0/1
    string                    TEXT                TEXT
    binary                    BLOB                BLOB
    date                      DATE                TEXT 2024-05-31
    timestamp                 TIMESTAMP           TEXT 2024-05-31T12:00:00.123456
    timestamp with tz         TIMESTAMPTZ         TEXT 2024-05-31T10:00:00.123456+00:00 (in UTC)
    decimal(p, s)             DECIMAL_TEXT(p,s)   TEXT 12.30
    time                      TIME                TEXT 12:00:00.5
    list, struct, map         JSON                TEXT (JSON)
    anything else             TEXT                TEXT (Arrow's cast to string)

Decimals are TEXT, not NUMERIC: a NUMERIC column turns ``'12345678901234567.89'`` into the
INTEGER 12345678901234568 (SQLite keeps 15 significant digits), so the exact value would be lost.
``DECIMAL_TEXT`` contains "TEXT", which gives the column TEXT affinity, and "DECIMAL(p,s)", which
gives the reader its precision back. Timestamps are written in UTC so that text order is time
order (SQLite compares TEXT byte-wise).

Identifiers are always quoted (``a"b`` becomes ``"a""b"``): a table named ``x; drop table t`` is a name. SQLite
matches names case-insensitively for ASCII letters only, which ``fold`` reproduces.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def fold(name: str) -> str:
    return name.encode().lower().decode()


# -- Arrow -> SQLite ---------------------------------------------------------------------------


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) \
        or pa.types.is_binary_view(t)


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def declared_type(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return declared_type(t.value_type)
    if isinstance(t, pa.ExtensionType):
        return declared_type(t.storage_type)
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_integer(t):
        return "INTEGER"
    if pa.types.is_floating(t):
        return "REAL"
    if pa.types.is_decimal(t):
        return f"DECIMAL_TEXT({t.precision},{t.scale})"
    if _is_binary(t):
        return "BLOB"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_time(t):
        return "TIME"
    if pa.types.is_nested(t):
        return "JSON"
    return "TEXT"


def _json_default(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    return v.isoformat() if hasattr(v, "isoformat") else str(v)


def to_params(arr: pa.Array) -> list[Any]:
    """Python values to bind for one column (converted column-wise, by Arrow, where it can)."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return to_params(arr.dictionary_decode())
    if isinstance(arr, pa.ExtensionArray):
        return to_params(arr.storage)
    if pa.types.is_boolean(t):
        return pc.cast(arr, pa.int8()).to_pylist()
    if pa.types.is_float16(t):
        return pc.cast(arr, pa.float64()).to_pylist()
    if pa.types.is_timestamp(t):
        if t.tz:  # to the UTC wall clock, then drop the zone: strftime needs no tz database then
            arr = pc.cast(arr, pa.timestamp(t.unit, "UTC")).cast(pa.timestamp(t.unit))
        fmt = "%Y-%m-%dT%H:%M:%S" + ("+00:00" if t.tz else "")
        return pc.strftime(arr, format=fmt).to_pylist()
    if pa.types.is_decimal(t) or pa.types.is_date(t) or pa.types.is_time(t):
        return pc.cast(arr, pa.string()).to_pylist()
    if pa.types.is_nested(t):
        # Arrow has no JSON writer for single values; json.dumps per value is the only way here.
        dump = json.dumps
        return [None if v is None else dump(v, ensure_ascii=False, default=_json_default) for v in arr.to_pylist()]
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t):
        return arr.to_pylist()
    if _is_string(t):
        return arr.to_pylist()
    if _is_binary(t):
        return arr.to_pylist()
    return pc.cast(arr, pa.string()).to_pylist()


# -- SQLite -> Arrow ---------------------------------------------------------------------------

_DECIMAL = re.compile(r"(?:DECIMAL|NUMERIC)\w*\s*\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)")


def arrow_type(declared: str | None) -> pa.DataType | None:
    """The Arrow type a declared SQLite column type stands for; None when it says nothing."""
    d = (declared or "").upper()
    if not d:
        return None
    if "BOOL" in d:
        return pa.bool_()
    if "INT" in d:  # SQLite's own first rule: any type containing INT has INTEGER affinity
        return pa.int64()
    if "DECIMAL" in d or "NUMERIC" in d:
        m = _DECIMAL.search(d)
        if m:
            p, s = int(m.group(1)), int(m.group(2) or 0)
            if 0 < p <= 76 and s <= p:
                return pa.decimal128(p, s) if p <= 38 else pa.decimal256(p, s)
        return pa.float64()
    if "TIMESTAMPTZ" in d or "WITH TIME ZONE" in d:
        return pa.timestamp("us", "UTC")
    if "TIMESTAMP" in d or "DATETIME" in d:
        return pa.timestamp("us")
    if "DATE" in d:
        return pa.date32()
    if any(k in d for k in ("CHAR", "CLOB", "TEXT", "JSON", "TIME")):
        return pa.string()
    if "BLOB" in d:
        return pa.binary()
    if any(k in d for k in ("REAL", "FLOA", "DOUB")):
        return pa.float64()
    return None


def storage_classes(t: pa.DataType) -> set[str]:
    """Storage classes a column may hold for its values to be read as ``t``."""
    if pa.types.is_boolean(t) or pa.types.is_integer(t):
        return {"integer"}
    if pa.types.is_floating(t):
        return {"integer", "real"}
    if pa.types.is_decimal(t):
        return {"integer", "real", "text"}
    if pa.types.is_binary(t):
        return {"blob"}
    return {"text"}


_EXTRA_DIGITS = r"(\.\d{6})\d+"  # sub-microsecond digits, which a timestamp[us] cannot hold


def from_values(values: Any, t: pa.DataType | None) -> pa.Array:
    """An Arrow array of type ``t`` (inferred when None) from one fetched column."""
    if t is None:
        return pa.array(values)
    if pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_decimal(t):
        # infer, then a safe cast: pa.array(values, int64) would silently truncate 6.5 to 6
        return pa.array(values).cast(t)
    if pa.types.is_date(t):
        return pa.array(values, pa.string()).cast(t)
    if pa.types.is_timestamp(t):
        text = pa.array(values, pa.string())
        try:
            return text.cast(t)
        except pa.ArrowInvalid:
            return pc.replace_substring_regex(text, pattern=_EXTRA_DIGITS, replacement=r"\1").cast(t)
    return pa.array(values, t)


def as_text(values: Any) -> pa.Array:
    """Last resort for a column that mixes storage classes: every value as text (blobs as hex)."""
    # pa.array cannot build one array from mixed Python types, so this one goes value by value.
    return pa.array(
        [v if v is None or isinstance(v, str) else v.hex() if isinstance(v, bytes) else str(v) for v in values],
        pa.string(),
    )
