"""DuckDB extractor: a table or a query of a DuckDB file, streamed as Arrow record batches.

Options (``tools.databases.options.SourceOptions``): ``connection`` (a ``connections:`` entry with
``url: duckdb:///path.duckdb``, relative to the pipeline file), exactly one of ``table``
(``name`` or ``schema.name``; double quotes keep dots: ``'"odd.name"'``) or ``query``, and

- ``incremental: {cursor, initial, lookback}``: only rows with ``cursor > mark`` (see
  ``tools.databases.reads``); the comparison is DuckDB's own, typed (integers, decimals, dates,
  timestamps with or without time zone, text).
- ``partitions: N`` with ``partition_on``: N key ranges, read one after the other in one
  transaction, so together they are exactly the rows of a single read. DuckDB already runs one
  scan on every core, so parallel partitions would not be faster.

Resumable (``resume_from``): a ``table`` read of a table with a PRIMARY KEY or a UNIQUE constraint
on NOT NULL columns, partitioned or not, incremental or not: it is read ``ORDER BY`` the key (the
cursor first when incremental) and resumed with ``WHERE (key) > (last key)`` per partition, the
values compared in their DuckDB types. A ``query:`` read, or one of a table without such a key,
is not resumable.

Rows come straight from DuckDB's Arrow result stream in batches of ``batch_size`` rows, so memory
stays bounded whatever the table size. Types are DuckDB's Arrow mapping (BIGINT -> int64,
DECIMAL(p,s) -> decimal128(p,s), VARCHAR -> string, TIMESTAMP -> timestamp[us], TIMESTAMPTZ ->
timestamp[us, UTC], DATE -> date32, BLOB -> binary, LIST/STRUCT/MAP -> list/struct/map ...).
"""

from __future__ import annotations

import contextlib
from typing import Any

import pyarrow as pa

from agent_etl.exceptions import ToolError
from agent_etl.tools.base import ToolContext
from agent_etl.tools.databases.duckdb.database import cursor, first_line, open_database, path_of, qualified, quote
from agent_etl.tools.databases.options import SourceOptions, split_table
from agent_etl.tools.databases.reads import Part, ReaderExtractor, after_last, order_by, parts, where


def _mark(i: int) -> str:
    return f"${i}"


class _Reader:
    """The blocking half: one cursor, one read transaction, one Arrow stream per partition."""

    def __init__(self, ctx: ToolContext, config: DuckDBExtractor.Config, after: Any, ext: DuckDBExtractor):
        self.ctx, self.config, self.after, self.ext = ctx, config, after, ext
        self.cur = None
        self.part = -1  # the partition being read
        self.table: tuple[str | None, str] | None = None
        self.stream: pa.RecordBatchReader | None = None
        self.schema: pa.Schema | None = None
        self.emitted = False
        if config.table is not None:
            try:
                schema, table = split_table(config.table)
            except ValueError as e:
                raise ToolError(f"task {ctx.task!r}: {e}") from None
            self.source, self.what = qualified(schema, table), f"table {config.table!r}"
            self.table = (schema, table)
        else:
            self.source = "(" + config.query.strip().rstrip(";") + ") AS src"
            self.what = "query " + repr(" ".join(config.query.split())[:80])

    def open(self) -> None:
        self.cur = cursor(open_database(self.ctx, self.config.connection, create=False))
        self.cur.begin()  # one snapshot for the partition bounds and every partition
        inc = self.config.incremental
        self.cursor_sql = quote(inc.cursor) if inc is not None else None
        key = table_key(self.cur, *self.table) if self.ext.wants_order() else None
        self.parts = list(self.ext.keyed(key, self.after, self._probe, f"DuckDB {self.what}"))
        self.order = self.ext.progress.order if self.ext.progress is not None else None

    def _probe(self) -> list[Part]:
        return self._parts() if self.config.partitions > 1 else [Part()]

    def _parts(self) -> list[Part]:
        key = quote(self.config.partition_on)
        clause, params = where(mark=_mark, cursor=self.cursor_sql, after=self.after)
        lo, hi = self.cur.execute(f"SELECT min({key}), max({key}) FROM {self.source}{clause}", params).fetchall()[0]
        if not (lo is None or isinstance(lo, (int, float)) and not isinstance(lo, bool) or hasattr(lo, "isoformat")):
            raise ToolError(f"task {self.ctx.task!r}: DuckDB {self.what}: partition_on column "
                            f"{self.config.partition_on!r} holds {type(lo).__name__} values; partition on an integer, "
                            "date or timestamp column, or drop `partitions`")
        return parts(lo, hi, self.config.partitions)

    def next(self) -> pa.RecordBatch | None:
        while True:
            if self.stream is None:
                if not self.parts:
                    return None if self.emitted else self._empty()
                part = self.parts.pop(0)
                self.part += 1
                key = quote(self.config.partition_on) if self.config.partition_on else None
                clause, params = where(mark=_mark, cursor=self.cursor_sql, after=self.after, key=key, part=part)
                if self.order is not None:
                    last = self.ext.progress.last[self.part]
                    if last is not None:
                        def bind(value: Any) -> str:
                            params.append(value)
                            return _mark(len(params))

                        clause += (" AND " if clause else " WHERE ") + after_last(self.order, last, quote, bind)
                    clause += order_by(self.order, quote, lambda c: f"{c} ASC NULLS LAST")
                rel = self.cur.sql(f"SELECT * FROM {self.source}{clause}", params=params or None)
                self.stream = rel.to_arrow_reader(self.ctx.batch_size)
                self.schema = self.stream.schema
            try:
                batch = self.stream.read_next_batch()
            except StopIteration:
                self.stream = None
                continue
            if batch.num_rows:
                self.emitted = True
                if self.order is not None:
                    self.ext.progress.observe(batch, self.part)
                return batch

    def _empty(self) -> pa.RecordBatch | None:
        self.emitted = True  # no row at all: one 0-row batch, so the schema travels
        return pa.RecordBatch.from_pylist([], schema=self.schema) if self.schema is not None else None

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()  # an open result would block the cursor (stopped early)
            self.stream = None
        if self.cur is not None:
            with contextlib.suppress(Exception):  # no transaction open (open() failed early)
                self.cur.rollback()  # read only: nothing to keep
            self.cur.close()
            self.cur = None

    def interrupt(self) -> None:
        if self.cur is not None:
            self.cur.interrupt()

    def error(self, e: BaseException) -> ToolError:
        import duckdb

        where_ = f"task {self.ctx.task!r}: DuckDB {self.what} in {path_of(self.ctx, self.config.connection)}"
        if isinstance(e, duckdb.CatalogException):
            return ToolError(f"{where_}: {first_line(e)}; check the table and column names")
        return ToolError(f"{where_}: {first_line(e)}; check the SQL")


def table_key(cur: Any, schema: str | None, table: str) -> list[str] | None:
    """The primary key, else the shortest UNIQUE constraint on NOT NULL columns (None: neither)."""
    rows = cur.execute("SELECT constraint_type, constraint_column_names FROM duckdb_constraints() WHERE table_name = $1 "
                       "AND schema_name = coalesce($2, current_schema()) AND constraint_type IN ('PRIMARY KEY', "
                       "'UNIQUE')", [table, schema]).fetchall()
    nullable = {name for name, null in cur.execute(
        "SELECT column_name, is_nullable FROM duckdb_columns() WHERE table_name = $1 AND schema_name = "
        "coalesce($2, current_schema())", [table, schema]).fetchall() if null}
    keys = sorted((kind != "PRIMARY KEY", len(cols), list(cols)) for kind, cols in rows
                  if kind == "PRIMARY KEY" or not set(cols) & nullable)
    return keys[0][2] if keys else None


class DuckDBExtractor(ReaderExtractor):
    """Stream a DuckDB table or query as Arrow batches (incremental, partitioned)."""

    class Config(SourceOptions):
        """Options of the duckdb extractor: connection, table or query, incremental, partitions."""

    def reader(self, after: Any) -> _Reader:
        return _Reader(self.ctx, self.config, after, self)

    def find_key(self) -> list[str] | None:
        import duckdb

        try:
            schema, table = split_table(self.config.table)
            cur = cursor(open_database(self.ctx, self.config.connection, create=False))
        except (ValueError, ToolError, duckdb.Error):
            return None
        try:
            return table_key(cur, schema, table)
        except duckdb.Error:
            return None
        finally:
            cur.close()

    def errors(self) -> tuple[type[BaseException], ...]:
        import duckdb

        return (duckdb.Error, pa.ArrowException)
