"""Arrow <-> SQLAlchemy types for the generic ``sql`` extractor and loader.

Tables the loader creates get these column types (SQLAlchemy renders them in the dialect)::

    Arrow                         SQLAlchemy                     PostgreSQL / MySQL, MariaDB / SQLite
    bool                          Boolean                        boolean / BOOL / BOOLEAN
    int8, int16, uint8            SmallInteger                   smallint / SMALLINT / SMALLINT
    int32, uint16                 Integer                        integer / INTEGER / INTEGER
    int64, uint32                 BigInteger                     bigint / BIGINT / BIGINT
    uint64                        Numeric(20, 0)                 numeric(20,0) / DECIMAL(20,0) / NUMERIC
    float16, float32              Float(24)                      real / FLOAT / FLOAT
    float64                       Double                         double precision / DOUBLE / DOUBLE
    decimal(p, s)                 Numeric(p, s)                  numeric(p,s) / DECIMAL(p,s) / NUMERIC(p,s)
    string                        Text                           text / LONGTEXT (VARCHAR(255) for a merge key) / TEXT
    binary                        LargeBinary                    bytea / LONGBLOB (VARBINARY(255) for a key) / BLOB
    date                          Date                           date / DATE / DATE
    timestamp                     DateTime                       timestamp / DATETIME(6) / DATETIME
    timestamp with time zone      DateTime(timezone=True)        timestamptz / DATETIME(6) in UTC / DATETIME in UTC
    time                          Time                           time / TIME(6) / TIME
    duration                      Interval                       interval (PostgreSQL only)
    list                          ARRAY (PostgreSQL), else JSON  item[] / JSON / JSON
    struct, map                   JSON                           jsonb / JSON / JSON
    all-NULL column (null type)   Text

Other Arrow types (unions, a duration outside PostgreSQL ...) cannot be mapped: the load fails
naming the column, with the fix (cast it upstream). MySQL/MariaDB cannot store NaN or infinity;
a load holding them fails naming the column. Read back, reflected column types become Arrow types
(``arrow_type``); a type without a clear Arrow counterpart is inferred from the values.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa


class Unmappable(Exception):
    def __init__(self, column: str, type_: pa.DataType, dialect: str):
        super().__init__(f"column {column!r} has Arrow type {type_}, which has no {dialect} column type here; "
                         "cast it upstream (e.g. the cast transform) to a string, number or timestamp")


def _mysql(dialect: str) -> bool:
    return dialect in ("mysql", "mariadb")


def column_type(name: str, t: pa.DataType, dialect: str, *, key: bool = False) -> sa.types.TypeEngine:
    """The SQLAlchemy type of a new column for Arrow type ``t``."""
    if pa.types.is_dictionary(t):
        return column_type(name, t.value_type, dialect, key=key)
    if isinstance(t, pa.ExtensionType):
        return column_type(name, t.storage_type, dialect, key=key)
    if pa.types.is_boolean(t):
        return sa.Boolean()
    if pa.types.is_integer(t):
        if t.bit_width <= 8 or (t.bit_width == 16 and pa.types.is_signed_integer(t)):
            return sa.SmallInteger()
        if t.bit_width == 16 or (t.bit_width == 32 and pa.types.is_signed_integer(t)):
            return sa.Integer()
        return sa.BigInteger() if t.bit_width == 32 or pa.types.is_signed_integer(t) else sa.Numeric(20, 0)
    if pa.types.is_floating(t):
        return sa.Double() if t.bit_width == 64 else sa.Float(24)
    if pa.types.is_decimal(t):
        return sa.Numeric(t.precision, t.scale)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t) or pa.types.is_null(t):
        if _mysql(dialect):
            from sqlalchemy.dialects import mysql

            return sa.String(255) if key else mysql.LONGTEXT()
        return sa.Text()
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) \
            or pa.types.is_binary_view(t):
        if _mysql(dialect):
            from sqlalchemy.dialects import mysql

            return mysql.VARBINARY(255) if key else mysql.LONGBLOB()
        return sa.LargeBinary()
    if pa.types.is_date(t):
        return sa.Date()
    if pa.types.is_timestamp(t):
        if _mysql(dialect):
            from sqlalchemy.dialects import mysql

            return mysql.DATETIME(fsp=6)
        return sa.DateTime(timezone=bool(t.tz))
    if pa.types.is_time(t):
        if _mysql(dialect):
            from sqlalchemy.dialects import mysql

            return mysql.TIME(fsp=6)
        return sa.Time()
    if pa.types.is_duration(t) and dialect == "postgresql":
        return sa.Interval()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        if dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            try:
                item = column_type(name, t.value_type, dialect)
            except Unmappable:
                item = None
            if item is not None and not isinstance(item, (sa.ARRAY, sa.JSON)):
                return postgresql.ARRAY(item)
        return _json(dialect)
    if pa.types.is_struct(t) or pa.types.is_map(t):
        return _json(dialect)
    raise Unmappable(name, t, dialect)


def _json(dialect: str) -> sa.types.TypeEngine:
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.JSONB()
    return sa.JSON()


def params(batch: pa.RecordBatch, dialect: str) -> list[dict[str, Any]]:
    """The rows of a batch as DB-API parameters, converted column by column by Arrow."""
    arrays = []
    for name, arr in zip(batch.schema.names, batch.columns):
        t = arr.type
        if pa.types.is_dictionary(t):
            arr, t = arr.dictionary_decode(), t.value_type
        if isinstance(arr, pa.ExtensionArray):
            arr, t = arr.storage, arr.storage.type
        if pa.types.is_timestamp(t):
            if t.unit == "ns":
                arr = pc.cast(arr, pa.timestamp("us", t.tz))  # Python datetimes hold microseconds
            if t.tz and dialect != "postgresql":  # these keep no zone: store the UTC wall clock
                arr = pc.cast(arr, pa.timestamp("us", "UTC")).cast(pa.timestamp("us"))
        elif pa.types.is_floating(t) and _mysql(dialect):
            bad = pc.sum(pc.or_(pc.is_nan(arr), pc.is_inf(arr))).as_py() if len(arr) else 0
            if bad:
                raise ValueError(f"column {name!r} holds {bad} NaN or infinite value(s), which MySQL/MariaDB cannot "
                                 "store; replace them upstream (e.g. derive: CASE WHEN isnan(x) THEN NULL ELSE x END)")
        elif pa.types.is_float16(t):
            arr = pc.cast(arr, pa.float32())
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names).to_pylist()


def arrow_type(t: sa.types.TypeEngine) -> pa.DataType | None:
    """The Arrow type of a reflected column; None: infer it from the values."""
    if isinstance(t, sa.Boolean):
        return pa.bool_()
    if isinstance(t, sa.Integer):
        return pa.int64()
    if isinstance(t, sa.Float):
        return pa.float64()
    if isinstance(t, sa.Numeric):
        p, s = t.precision, t.scale
        if p and s is not None and 0 < p <= 76 and 0 <= s <= p:
            return pa.decimal128(p, s) if p <= 38 else pa.decimal256(p, s)
        return None  # unconstrained numeric: the first batch's values decide
    if isinstance(t, sa.DateTime):
        return pa.timestamp("us", "UTC" if t.timezone else None)
    if isinstance(t, sa.Date):
        return pa.date32()
    if isinstance(t, sa.Time):
        return pa.time64("us")
    if isinstance(t, sa.Interval):
        return pa.duration("us")
    if isinstance(t, sa.JSON):
        return pa.string()
    if isinstance(t, sa.LargeBinary | sa.types._Binary):
        return pa.binary()
    if isinstance(t, sa.Uuid | sa.String | sa.Enum):
        return pa.string()
    return None


def text_values(values: Any) -> list[Any]:
    """JSON documents, UUIDs and the like as text (the driver hands them over as Python objects)."""
    return [v if v is None or isinstance(v, str) else json.dumps(v) if isinstance(v, (dict, list))
            else v.hex() if isinstance(v, bytes) else str(v) for v in values]
