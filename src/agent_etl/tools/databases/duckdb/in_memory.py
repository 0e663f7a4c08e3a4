"""An in-memory DuckDB that runs SQL over Arrow batches (the SQL transforms and the validators that
evaluate expressions): the connection, its errors in the user's words, and results back to Arrow."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pyarrow as pa


def connect(temp_dir: Path | None = None) -> Any:
    import duckdb

    con = duckdb.connect(":memory:")
    # timestamptz results and comparisons must not depend on the machine's zone
    con.execute("SET TimeZone = 'UTC'")
    if temp_dir is not None:
        con.execute(f"SET temp_directory = '{str(temp_dir).replace(chr(39), chr(39) * 2)}'")
    return con


def sql_errors() -> tuple[type[BaseException], ...]:
    import duckdb

    # DuckDB errors met while pyarrow reads a DuckDB stream surface as pyarrow's (OSError included)
    return (duckdb.Error, pa.ArrowException, OSError)


def reason(e: BaseException) -> str:
    """DuckDB's message without the excerpt of the generated statement (it is not what the user wrote)."""
    head = str(e).split("\n\n")[0].strip()
    return "; ".join(line.strip() for line in head.splitlines() if line.strip())


def to_table(rel: Any) -> pa.Table:
    return rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()


class BatchQuery:
    """One SQL statement run over one batch at a time (registered as ``name``) on a DuckDB
    connection made at first use and never used by two threads at once; ``column`` returns the
    first column of the result."""

    def __init__(self, name: str, sql: str):
        self.name, self.sql = name, sql
        self._con: Any = None
        self._lock = threading.Lock()

    def column(self, batch: pa.RecordBatch, suffix: str = "") -> pa.Array:
        with self._lock:
            if self._con is None:
                self._con = connect()
            self._con.register(self.name, batch)
            try:
                result = to_table(self._con.sql(self.sql + suffix))
            finally:
                self._con.unregister(self.name)
        return result.column(0).combine_chunks()


def to_reader(rel: Any, batch_size: int) -> pa.RecordBatchReader:
    return rel.to_arrow_reader(batch_size) if hasattr(rel, "to_arrow_reader") else rel.fetch_record_batch(batch_size)
