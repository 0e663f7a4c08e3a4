"""Drop repeated rows across the whole stream, keeping the first occurrence of each key.

The keys seen so far live in a DuckDB table (exact values, no hashes that could collide; DuckDB
spills it to the run's temp directory if it outgrows memory). Per batch, three set operations:
first occurrence of each key within the batch (GROUP BY, NULLs equal), minus the keys already
seen (anti join on IS NOT DISTINCT FROM, so a NULL in a composite key matches a NULL), then the
new keys are added to the seen table. The batch rows are taken by index, so types never change.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from agent_etl.tools.base import ToolConfig
from agent_etl.tools.transforms.inputs import missing_columns, tool_error
from agent_etl.tools.databases.duckdb.database import quote
from agent_etl.tools.databases.duckdb.in_memory import reason, sql_errors, to_table
from agent_etl.tools.transforms.duckdb_batch import DuckDBBatchTransform

ROW = "__agent_etl_row"


class Dedupe(DuckDBBatchTransform):
    """Keep the first row of each key (columns, default all) across the whole stream."""

    spills = True  # the seen keys may outgrow memory

    class Config(ToolConfig):
        """Keep the first row of each key (columns, default all) across the whole stream."""

        columns: list[str] | None = Field(None, min_length=1, description="key columns; default: every column")
        keep: Literal["first"] = Field("first", description="which occurrence of a key survives")

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self._keys: list[str] | None = list(self.config.columns) if self.config.columns else None
        self._sql: tuple[str, str, str] | None = None

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        with self.lock:
            if self._keys is None:
                self._keys = batch.schema.names
            missing_columns(self, self._keys, batch.schema, "key column")
            keys = pa.Table.from_batches([batch.select(self._keys)])
            keys = keys.append_column(ROW, pa.array(np.arange(batch.num_rows, dtype=np.int64)))
            try:
                rows = self._fresh(keys)
            except sql_errors() as e:
                raise tool_error(self, f"cannot compare key columns {', '.join(map(repr, self._keys))}: {reason(e)}",
                                 "dedupe on columns of plain types (numbers, text, dates, timestamps)") from e
        if len(rows) == batch.num_rows:
            return batch  # every row is a new key: pass the batch through without a copy
        return batch.take(rows)

    def _fresh(self, keys: pa.Table) -> pa.Array:
        """Indices, ascending, of the batch rows whose key was never seen before."""
        con = self.con
        con.register("batch_keys", keys)
        try:
            if self._sql is None:
                cols = ", ".join(quote(k) for k in self._keys)
                same = " AND ".join(f"f.{quote(k)} IS NOT DISTINCT FROM s.{quote(k)}" for k in self._keys)
                con.execute(f"CREATE TEMP TABLE seen AS SELECT {cols} FROM batch_keys LIMIT 0")
                self._sql = (
                    f"CREATE OR REPLACE TEMP TABLE fresh AS SELECT f.* FROM "
                    f"(SELECT {cols}, min({ROW}) AS {ROW} FROM batch_keys GROUP BY {cols}) f "
                    f"ANTI JOIN seen s ON {same}",
                    f"INSERT INTO seen SELECT {cols} FROM fresh",
                    f"SELECT {ROW} FROM fresh ORDER BY {ROW}",
                )
            new, remember, rows = self._sql
            con.execute(new)
            con.execute(remember)
            return to_table(con.sql(rows)).column(0).combine_chunks()
        finally:
            con.unregister("batch_keys")
