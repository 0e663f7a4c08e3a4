"""Arrow rows to message payloads: one JSON object per row, made by DuckDB's ``to_json`` (C++, no
Python dict per row). Nested types become JSON objects and arrays; timestamps and dates ISO-8601 text;
decimals numbers; binary columns are refused (JSON has no bytes: cast them to string or base64 first)."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from agent_etl.exceptions import ToolError


class Encoder:
    def __init__(self, what: str):
        self.what = what  # "load 'out' (redis stream 'x')", for messages
        self._db = duckdb.connect()

    def payloads(self, batch: pa.RecordBatch) -> list[bytes]:
        for f in batch.schema:
            if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type) or pa.types.is_fixed_size_binary(f.type):
                raise ToolError(f"{self.what}: column {f.name!r} is binary, which JSON cannot hold; cast it to "
                                "string first (a cast or derive step)")
        self._db.register("_batch", batch)
        try:
            out = self._db.sql("SELECT CAST(to_json(t) AS BLOB) FROM _batch t").to_arrow_table()
        finally:
            self._db.unregister("_batch")
        return out.column(0).to_pylist()

    def close(self) -> None:
        self._db.close()
