"""The columns of a PostgreSQL result, for the postgres extractor: Arrow type and how each is read.

| PostgreSQL | Arrow | read as |
|---|---|---|
| smallint, integer, bigint | int16, int32, int64 | binary |
| oid | int64 | binary |
| real, double precision | float32, float64 (NaN, +-Infinity kept) | binary |
| numeric(p, s), p <= 18 | decimal128(p, s) | binary (base-10000 digits) |
| numeric(p, s), 18 < p <= 38 | decimal128(p, s) | text, parsed by Arrow |
| numeric without precision, p > 38, negative scale | string (exact digits) | text |
| boolean | bool | binary |
| text, varchar, char(n) (padded), name, "char", xml | string | binary |
| json, jsonb | string (the JSON text) | binary |
| bytea | binary | binary |
| uuid | string (8-4-4-4-12 hex) | binary |
| date | date32 | binary |
| timestamp | timestamp[us] | binary |
| timestamptz | timestamp[us, tz=UTC] | binary |
| time | time64[us] | binary |
| one-dimensional arrays of the types above (not numeric with p > 18 or unconstrained) | list of the element's type | binary |
| other arrays, enums, intervals, ranges, timetz, inet, money, user types | string (text form: ``{1,2,3}``) | ``::text`` |

A domain is read as its base type. 'infinity' and '-infinity' dates and timestamps become the
largest and smallest values Python can hold (9999-12-31 23:59:59.999999 and 0001-01-01); a NaN
in a numeric(p, s) column is an error that names the column (read it with ``NULLIF(col, 'NaN')``
or cast it to float8 in the query). So is a multi-dimensional value in an array column (read it
as ``col::text``); an empty array is an empty list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

# type oid -> (decoder kind, Arrow type); numeric is planned separately (it depends on the typmod)
BINARY: dict[int, tuple[str, pa.DataType]] = {
    16: ("bool", pa.bool_()),
    17: ("bytea", pa.binary()),
    18: ("text", pa.string()),  # "char"
    19: ("text", pa.string()),  # name
    20: ("int8", pa.int64()),
    21: ("int2", pa.int16()),
    23: ("int4", pa.int32()),
    25: ("text", pa.string()),
    26: ("oid", pa.int64()),
    114: ("text", pa.string()),  # json
    142: ("text", pa.string()),  # xml
    700: ("float4", pa.float32()),
    701: ("float8", pa.float64()),
    1042: ("text", pa.string()),  # char(n)
    1043: ("text", pa.string()),  # varchar
    1082: ("date", pa.date32()),
    1083: ("time", pa.time64("us")),
    1114: ("timestamp", pa.timestamp("us")),
    1184: ("timestamp", pa.timestamp("us", tz="UTC")),
    2950: ("uuid", pa.string()),
    3802: ("jsonb", pa.string()),
}
NUMERIC = 1700
MAX_BINARY_NUMERIC = 18  # unscaled values fit an int64
MAX_DECIMAL = 38  # decimal128


@dataclass(frozen=True)
class PgColumn:
    """One result column: its name, PostgreSQL type, Arrow type and how it is read."""

    name: str
    pg_type: str  # for messages, e.g. "numeric(12,2)"
    kind: str  # decoder in postgres.decode ("text" for anything the server casts to text)
    type: pa.DataType
    as_text: bool = False  # select it as ``col::text``
    not_null: bool = False  # a NOT NULL column of a fixed width: its values need no NULL check
    element: PgColumn | None = None  # the elements of an array column (kind "array")


def numeric_typmod(typmod: int) -> tuple[int, int] | None:
    """(precision, scale) of a numeric typmod, or None when the column has no declared precision."""
    if typmod < 4:
        return None
    tm = typmod - 4
    scale = ((tm & 0x7FF) ^ 1024) - 1024  # an 11-bit signed field since PostgreSQL 15
    return (tm >> 16) & 0xFFFF, scale


def plan(name: str, oid: int, typmod: int, type_name: str, element: int = 0) -> PgColumn:
    """How to read a column of type ``oid`` (a domain's base type already resolved); ``element`` is
    the element type of an array type."""
    if element:
        item = plan(name, element, typmod, type_name)
        if item.as_text:
            return PgColumn(name, type_name, "text", pa.string(), as_text=True)
        return PgColumn(name, type_name, "array", pa.list_(item.type), element=item)
    if oid == NUMERIC:
        ps = numeric_typmod(typmod)
        if ps is None:
            return PgColumn(name, "numeric", "text", pa.string(), as_text=True)
        p, s = ps
        label = f"numeric({p},{s})"
        if s < 0 or p > MAX_DECIMAL:
            return PgColumn(name, label, "text", pa.string(), as_text=True)
        if p > MAX_BINARY_NUMERIC:
            return PgColumn(name, label, "decimal_text", pa.decimal128(p, s), as_text=True)
        return PgColumn(name, label, "numeric", pa.decimal128(p, s))
    if oid in BINARY:
        kind, t = BINARY[oid]
        return PgColumn(name, type_name, kind, t)
    return PgColumn(name, type_name, "text", pa.string(), as_text=True)


TYPE_INFO_SQL = """
SELECT t.oid, format_type(t.oid, NULL), b.oid,
       CASE WHEN t.typtype = 'd' THEN t.typtypmod WHEN e.typtype = 'd' THEN e.typtypmod ELSE -1 END,
       COALESCE(CASE WHEN e.typtype = 'd' THEN e.typbasetype ELSE e.oid END, 0)
FROM pg_catalog.pg_type t
JOIN pg_catalog.pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_catalog.pg_type e ON e.oid = b.typelem AND b.typcategory = 'A' AND b.typlen = -1
WHERE t.oid = ANY(%s)
"""


def resolve(conn: Any, description: list[tuple[str, int, int]]) -> list[PgColumn]:
    """The plan of every column of a result described as (name, type oid, typmod)."""
    oids = sorted({oid for _, oid, _ in description})
    info = {row[0]: row[1:] for row in conn.execute(TYPE_INFO_SQL, (oids,)).fetchall()}
    columns = []
    for name, oid, typmod in description:
        type_name, base, base_typmod, element = info.get(oid, (str(oid), oid, -1, 0))
        typmod = typmod if typmod >= 0 else base_typmod  # a domain over numeric(p, s) keeps its typmod here
        # (and so does an array of such a domain)
        if NUMERIC in (base, element) and (ps := numeric_typmod(typmod)):
            type_name = f"numeric({ps[0]},{ps[1]})" + ("[]" if element else "")
        columns.append(plan(name, base, typmod, type_name, element))
    return columns
