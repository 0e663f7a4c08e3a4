"""MariaDB / MySQL extractor: a table or a query, streamed as Arrow batches of ``batch_size`` rows.

Options (DESIGN.md §2): ``connection`` (a ``connections:`` entry, ``url: mysql://user@host:3306/db``),
exactly one of ``table`` (``name`` or ``database.name``; double quotes keep dots) or ``query``,
``partitions: N`` with ``partition_on: <integer, date or datetime column>``, and
``incremental: {cursor, initial, lookback}`` (see ``tools.databases.reads``).

Rows come through connectorx's Arrow stream (Rust, binary protocol; measured 10-20x faster than
PyMySQL and faster than the ``mariadb`` client printing to /dev/null), in batches of ``batch_size``
rows, so memory stays flat whatever the table's size. The column types come from the result's
metadata, read first with PyMySQL (``SELECT ... LIMIT 0``), and follow ``databases.mysql.types``;
DECIMAL is selected as text and cast in Arrow, as connectorx would round it to a fixed scale.
A ``query:`` runs as written, unless it is read incrementally or in partitions, or its result has
columns connectorx cannot read exactly (DECIMAL beyond 28 digits or 10 decimals, BIT, GEOMETRY): then
it runs as a derived table (``SELECT ... FROM (query) AS q WHERE ...``), which needs distinct column
names and does not keep the query's ORDER BY. ``partitions`` reads the key ranges on that many
connections in parallel (the first range also reads NULL keys). TIMESTAMP values are read in UTC.

Resumable (``resume_from``): a ``table`` read of a table with a PRIMARY KEY (or a UNIQUE index on
NOT NULL columns), incremental or not, partitioned or not: it is read ``ORDER BY`` the key (InnoDB
reads its primary key in that order anyway), by (cursor, key) when incremental, and a resumed read
asks each partition for the rows after its last key (``k1 > x OR (k1 = x AND k2 > y)``, values
as typed literals, so strings compare in the column's collation as the ORDER BY did). The batches
of parallel partitions interleave: each batch's partition is found from its ``partition_on``
value. A ``query:`` read, or one of a table without such a key, is not resumable.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from agent_etl.exceptions import ToolError, TransientError
from agent_etl.redaction import redact
from agent_etl.tools.base import ToolContext
from agent_etl.tools.databases.blocking import in_thread
from agent_etl.tools.databases.mysql import connections
from agent_etl.tools.databases.mysql.types import Column, conform, result_columns
from agent_etl.tools.databases.options import SourceOptions
from agent_etl.tools.databases.reads import KeyedExtractor, Part, after_last, order_by, parts, where

_DERIVED = "_agent_etl_q"


class _Plan:
    """The blocking half: metadata, bounds and the SQL of each partition."""

    def __init__(self, ctx: ToolContext, config: SourceOptions, ext: MySQLExtractor):
        self.ctx, self.config, self.ext, self.cursor = ctx, config, ext, ext.inc
        self.pool = connections.pool(ctx, config.connection)
        if config.table is not None:
            self.what = f"table {config.table!r}"
            self.source = connections.qualified(*connections.table_name(config.table))
        else:
            self.what = f"query {_short(config.query)!r}"
            self.source = f"({config.query.strip().rstrip(';')}) AS {_DERIVED}"
        self.columns: list[Column] = []
        self.queries: list[str] = []

    def build(self) -> None:
        import pymysql

        with self.pool.connection() as conn:
            try:
                with conn.cursor() as cur:
                    cur.execute(f"SELECT * FROM {self.source} LIMIT 0")
                    self.columns = result_columns(cur._result.fields)  # PyMySQL keeps flags and charset here
                    names = [c.name for c in self.columns]
                    for opt, col in (("incremental.cursor", self.cursor and self.cursor.inc.cursor),
                                     ("partition_on", self.config.partitions > 1 and self.config.partition_on)):
                        if col and col not in names:
                            raise ToolError(f"task {self.ctx.task!r}: {opt} {col!r} is not a column of the MariaDB/"
                                            f"MySQL {self.what}; columns: {', '.join(names)}")
                    key = table_key(cur, *connections.table_name(self.config.table)) if self.ext.wants_order() else None
                    after = self.cursor.after if self.cursor else None
                    splits = list(self.ext.keyed(key, after, lambda: self._parts(cur), f"MariaDB/MySQL {self.what}"))
            except pymysql.Error as e:
                raise self.error(e) from e
        self.order = self.ext.progress.order if self.ext.progress is not None else None
        if self.config.query is not None and splits == [Part()] and self.cursor is None \
                and all(c.plain for c in self.columns):
            self.queries = [self.config.query.strip().rstrip(";")]  # as written: a derived table drops ORDER BY
            return
        select = ", ".join(f"{c.expr} AS {connections.ident(c.name)}" for c in self.columns)
        self.queries = [f"SELECT {select} FROM {self.source}{self._where(p, i)}" for i, p in enumerate(splits)]

    def _parts(self, cur: Any) -> list[Part]:
        if self.config.partitions <= 1:
            return [Part()]
        key = connections.ident(self.config.partition_on)
        cur.execute(f"SELECT MIN({key}), MAX({key}) FROM {self.source}{self._where(None)}")
        lo, hi = cur.fetchone()
        return parts(lo, hi, self.config.partitions)

    def _where(self, part: Part | None, index: int | None = None) -> str:
        inc = self.cursor
        # connectorx takes no parameters: bounds become literals of typed values (connections.literal)
        sql, params = where(mark=lambda i: f"\x00{i}\x00",
                            cursor=connections.ident(inc.inc.cursor) if inc else None, after=inc.after if inc else None,
                            key=connections.ident(self.config.partition_on) if part is not None and part != Part() else None,
                            part=part)
        for i, value in enumerate(params, 1):
            sql = sql.replace(f"\x00{i}\x00", connections.literal(value))
        if index is not None and self.order is not None:
            last = self.ext.progress.last[index]
            if last is not None:
                sql += (" AND " if sql else " WHERE ") + after_last(self.order, last, connections.ident, _literal,
                                                                    row_values=False)
            sql += order_by(self.order, connections.ident, lambda c: f"{c} IS NULL, {c}")
        return sql

    def error(self, e: BaseException) -> ToolError:
        code, text = connections.error_code(e), connections.error_text(e)
        where = f"task {self.ctx.task!r}: MariaDB/MySQL {self.what} at {self.pool.where()}"
        if code == 1146:
            return ToolError(f"{where}: {text}; check the table name (database.table) and the connection's database")
        if code in connections.TRANSIENT_CODES:
            return TransientError(f"{where}: {text}; the server went away, the read will be retried")
        if code == 1060:
            return ToolError(f"{where}: {text}; give the query's columns distinct names (AS ...)")
        return ToolError(f"{where}: {text}; check the SQL, the table and column names")


def _short(sql: str | None) -> str:
    sql = " ".join((sql or "").split())
    return sql if len(sql) <= 80 else sql[:77] + "..."


def _literal(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return f"X'{bytes(value).hex()}'" if value else "''"
    return connections.literal(value)


def table_key(cur: Any, database: str | None, table: str) -> list[str] | None:
    """The primary key, else the unique index on the fewest columns, all NOT NULL (None: neither)."""
    cur.execute("SELECT s.INDEX_NAME, s.COLUMN_NAME, c.IS_NULLABLE FROM information_schema.STATISTICS s "
                "JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = s.TABLE_SCHEMA AND c.TABLE_NAME = s.TABLE_NAME "
                "AND c.COLUMN_NAME = s.COLUMN_NAME WHERE s.TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND "
                "s.TABLE_NAME = %s AND s.NON_UNIQUE = 0 ORDER BY s.INDEX_NAME, s.SEQ_IN_INDEX", (database, table))
    indexes: dict[str, list[tuple[str, str]]] = {}
    for index, column, nullable in cur.fetchall():
        indexes.setdefault(index, []).append((column, nullable))
    keys = sorted((name != "PRIMARY", len(cols), name, [c for c, _ in cols]) for name, cols in indexes.items()
                  if all(n == "NO" for _, n in cols))
    return keys[0][3] if keys else None


class MySQLExtractor(KeyedExtractor):
    """Read a MariaDB/MySQL table or query as Arrow batches (incremental, partitioned)."""

    extra = "mysql"

    Config = SourceOptions

    def __init__(self, config: SourceOptions, ctx: ToolContext):
        super().__init__(config, ctx)
        self._rows = 0

    def position(self) -> dict[str, Any]:
        return {"rows": self._rows, **self.keyed_position()}

    def find_key(self) -> list[str] | None:
        import pymysql

        try:
            with connections.pool(self.ctx, self.config.connection).connection() as conn, conn.cursor() as cur:
                return table_key(cur, *connections.table_name(self.config.table))
        except (pymysql.Error, ToolError):
            return None

    async def batches(self):
        cursor = self.resumed_cursor()
        if self._resume is not None:
            self._rows = self._resume["rows"]
        plan = _Plan(self.ctx, self.config, self)
        await in_thread(plan.build)
        progress = self.progress
        split = self.config.partition_on if len(plan.queries) > 1 else None
        reader = await in_thread(self._open, plan)
        try:
            sent = False
            while True:
                batch = await in_thread(self._next, plan, reader)
                if batch is None:
                    break
                if batch.num_rows == 0 and sent:
                    continue
                sent = True
                if cursor is not None:
                    cursor.observe(batch)
                if progress is not None and batch.num_rows:  # a batch holds rows of one partition
                    progress.observe(batch, progress.part_of(batch.column(split)[0].as_py()) if split else 0)
                self._rows += batch.num_rows
                yield batch
            if not sent:  # an empty result still gives one 0-row batch, so the schema travels
                yield pa.RecordBatch.from_arrays([pa.array([], c.type) for c in plan.columns],
                                                 names=[c.name for c in plan.columns])
        finally:
            reader.close()
        if cursor is not None:
            cursor.finish()

    def _open(self, plan: _Plan) -> pa.RecordBatchReader:
        import connectorx as cx

        url = plan.pool.address.connectorx_url()
        queries = plan.queries if len(plan.queries) > 1 else plan.queries[0]
        try:
            return cx.read_sql(url, queries, return_type="arrow_stream", batch_size=self.ctx.batch_size,
                               pre_execution_query=[connections.SESSION])
        except BaseException as e:  # connectorx raises RuntimeError, or a PanicException (a BaseException)
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            raise self._error(plan, e) from None

    def _next(self, plan: _Plan, reader: pa.RecordBatchReader) -> pa.RecordBatch | None:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return None
        except BaseException as e:
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            raise self._error(plan, e) from None
        try:
            return conform(batch, plan.columns)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise ToolError(f"task {self.ctx.task!r}: MariaDB/MySQL {plan.what}: a value does not fit its column's "
                            f"Arrow type ({e}); CAST the column in a query:") from None

    def _error(self, plan: _Plan, e: BaseException) -> ToolError:
        text = str(e).split("Stack backtrace:")[0].strip().splitlines()
        msg = " ".join(line.strip() for line in text if line.strip())[:500] or type(e).__name__
        msg = redact(msg, [plan.pool.address.password or ""])
        where = f"task {self.ctx.task!r}: MariaDB/MySQL {plan.what} at {plan.pool.where()}"
        low = msg.lower()
        if any(s in low for s in ("connection refused", "timed out", "broken pipe", "connection reset", "gone away")):
            return TransientError(f"{where}: the read failed: {msg}; it will be retried")
        return ToolError(f"{where}: the read failed: {msg}; if a value does not fit its Arrow type (a TIME beyond "
                         "24 hours, a zero date), read it with a query: that CASTs the column AS CHAR")
