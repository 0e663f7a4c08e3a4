"""``nested: json``: nested objects and lists as their JSON text (one string column each), for
destinations without struct types or records whose nested shapes vary. DuckDB's ``to_json``
turns whole columns at once, no Python per value."""

from __future__ import annotations

import duckdb
import pyarrow as pa


def _nested(t: pa.DataType) -> bool:
    return pa.types.is_struct(t) or pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_map(t)


def as_json(batch: pa.RecordBatch) -> pa.RecordBatch:
    names = [f.name for f in batch.schema if _nested(f.type)]
    if not names:
        return batch
    sub = pa.Table.from_batches([batch.select(names)])  # noqa: F841 - read by DuckDB by name
    con = duckdb.connect()
    try:
        cols = ", ".join('to_json("{0}")::VARCHAR AS "{0}"'.format(n.replace('"', '""')) for n in names)
        out = con.sql(f"SELECT {cols} FROM sub").to_arrow_table()
    finally:
        con.close()
    arrays = [out.column(n).combine_chunks().cast(pa.string()) if n in names else batch.column(n)
              for n in batch.schema.names]
    fields = [pa.field(f.name, pa.string()) if f.name in names else f for f in batch.schema]
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
