"""PostgreSQL extractor: a table or a query, streamed as Arrow batches through binary COPY.

Options (DESIGN.md §2): ``connection`` (a ``connections:`` entry whose ``url`` is
``postgresql://user@host:port/db``), exactly one of ``table`` (``name`` or ``schema.name``; double
quotes keep case, dots and anything else: ``'"Odd.Name"'``) or ``query`` (any SELECT), and:

- ``partitions: N`` with ``partition_on: <integer, date or timestamp column>``: the key's range is
  split into N ranges read by N pooled connections in parallel, all in one snapshot (exported by
  the first connection), so together they return exactly the rows of a single read; the first
  range also reads NULL keys. Without ``partition_on`` a ``table`` is split by its storage blocks
  instead (ranges of ``ctid``, a TID range scan since PostgreSQL 14): each connection's backend
  reads only its share of the pages, so the server's work is spread over N cores as well.
- ``incremental: {cursor, initial, lookback}``: only rows with ``cursor > mark - lookback``, where
  the mark is the largest cursor value of the last successful run (``initial`` the first time).

Resumable (``resume_from``): a ``table`` read of a table with a primary key (or a unique index on
NOT NULL columns, not partial), incremental or not, and partitioned on ``partition_on`` or not. It
is read ``ORDER BY`` the key (the cursor first when incremental: ``ORDER BY cursor, key``), each
partition on its own; the position keeps the partition bounds and each partition's last values,
and a resumed read asks per partition for ``(key) > (last key)`` (a row-value comparison, which
the key's index serves), values as typed literals. Block partitions (``partitions`` without
``partition_on``) and ``query:`` reads are not resumable: a row's ``ctid`` changes when it is
updated, and a free query has no key.

Rows travel as ``COPY (...) TO STDOUT (FORMAT binary)`` and are decoded with numpy in a worker
thread (``databases.postgres.copy``, ``decode``); column types map as documented in
``databases.postgres.columns`` (and docs/databases.md). An empty result gives one 0-row batch with the
columns' types. COPY takes no bind parameters, so the cursor and partition values are rendered
by psycopg's own literal quoting; names are always quoted with ``psycopg.sql.Identifier``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from dataclasses import replace
from typing import Any

import pyarrow as pa
from pydantic import field_validator

from agent_etl.exceptions import ToolError, TransientError
from agent_etl.tools.base import ToolContext
from agent_etl.tools.databases.blocking import in_thread
from agent_etl.tools.databases.checkpoints import TABLE as CHECKPOINTS
from agent_etl.tools.databases.connection import describe
from agent_etl.tools.databases.incremental import encode
from agent_etl.tools.databases.options import SourceOptions, split_table
from agent_etl.tools.databases.postgres.columns import PgColumn, resolve
from agent_etl.tools.databases.postgres.connections import Pool, pool
from agent_etl.tools.databases.postgres.copy import CopyRead
from agent_etl.tools.databases.postgres.decode import WIDTH, DecodeError, FramingError
from agent_etl.tools.databases.reads import CursorRead, KeyedExtractor, Part, after_last, order_by, parts, where

SNAPSHOT_WAIT = 60  # seconds the first read waits for the others to import its snapshot


class PostgresOptions(SourceOptions):
    """Options of the postgres extractor (see the module docstring)."""

    block_partitions = True

    @field_validator("table")
    @classmethod
    def _table_name(cls, value: str | None) -> str | None:
        if value is not None:
            split_table(value)  # a malformed name is a spec error, with its YAML line
        return value

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | None) -> str | None:
        if value is not None and not value.strip().rstrip(";").strip():
            raise ValueError("`query` is empty; write a SELECT")
        return value


class _Plan:
    """What one read runs: the columns, one COPY statement per partition, the snapshot."""

    def __init__(self, columns: list[PgColumn], statements: list[bytes], snapshot: str | None):
        self.columns, self.statements, self.snapshot = columns, statements, snapshot
        self.schema = pa.schema([pa.field(c.name, c.type) for c in columns])


class PostgresExtractor(KeyedExtractor):
    """Read a PostgreSQL table or query as Arrow batches (binary COPY, decoded with numpy)."""

    extra = "postgres"

    Config = PostgresOptions

    def __init__(self, config: PostgresOptions, ctx: ToolContext):
        super().__init__(config, ctx)
        self.cursor = self.inc = CursorRead(config.incremental, ctx) if config.incremental else None
        self._read: CopyRead | None = None
        self._lead: Any = None  # the connection that plans the read and reads its first range
        self._where = f"table {config.table!r}" if config.table is not None else "query"
        self._before = 0  # rows yielded before a resume

    def keyed_read(self) -> bool:
        """A table read, but not by storage blocks (a row's ctid changes when it is updated)."""
        return self.config.table is not None and not (self.config.partitions > 1 and not self.config.partition_on)

    def find_key(self) -> list[str] | None:
        import psycopg

        try:
            pg = pool(self.ctx, self.config.connection)
            with pg.connection() as conn:
                schema, name = split_table(self.config.table)
                row = conn.execute("SELECT to_regclass(%s)::oid", (_ident(schema, name).as_string(conn),)).fetchone()
                return _key(conn, row[0]) if row and row[0] is not None else None
        except (psycopg.Error, ToolError, ValueError):
            return None

    def position(self) -> dict[str, Any]:
        pos: dict[str, Any] = {"rows": self._before + (self._read.rows if self._read else 0)}
        if self.cursor is not None:
            # rows come in no particular order: resume by reading again after the same bound
            after = self.cursor.after
            pos["cursor"] = self.cursor.inc.cursor
            pos["after"] = after.isoformat() if hasattr(after, "isoformat") else (
                after if after is None or isinstance(after, (int, float, str)) else str(after))
            if self.cursor.tracker.max is not None:
                pos["max"] = encode(self.cursor.inc.cursor, self.cursor.tracker.max)["value"]
        if self.progress is not None:
            pos.update(self.keyed_position())
        return pos

    async def batches(self):
        import psycopg

        pg = pool(self.ctx, self.config.connection)
        if self._resume is not None:
            self.cursor = self.resumed_cursor()
            self._before = self._resume["rows"]
        lead = contextlib.ExitStack()
        failed: BaseException | None = None
        try:
            try:
                plan = await in_thread(self._plan, pg, lead)
            except psycopg.Error as e:
                raise self._error(e, pg) from None
            cfg = self.config
            barrier = threading.Barrier(len(plan.statements), timeout=SNAPSHOT_WAIT) if plan.snapshot else None
            self._read = CopyRead(self._opener(pg, plan, barrier), plan.statements, plan.columns, plan.schema,
                                  self.ctx.batch_size, self._decode_error, on_stop=barrier.abort if barrier else None)
            try:
                progress, split = self.progress, cfg.partition_on if len(plan.statements) > 1 else None
                async for batch in self._read.batches():
                    if self.cursor is not None:
                        self.cursor.observe(batch)
                    if progress is not None and batch.num_rows:  # a batch holds rows of one partition
                        progress.observe(batch, progress.part_of(batch.column(split)[0].as_py()) if split else 0)
                    yield batch
            except psycopg.Error as e:
                raise self._error(e, pg) from None
            if self.cursor is not None:
                self.cursor.finish()
        except BaseException as e:
            failed = e
            raise
        finally:
            # the lead connection may be mid-COPY or mid-transaction: a failure discards it
            await in_thread(_close, lead, failed)

    # -- planning (a worker thread) --------------------------------------------------------------

    def _plan(self, pg: Pool, lead: contextlib.ExitStack) -> _Plan:
        from psycopg import sql

        conn = self._lead = lead.enter_context(pg.connection())
        lead.enter_context(_autocommit(conn))
        if conn.info.encoding != "utf-8":
            conn.execute("SET client_encoding TO 'UTF8'")
        cfg = self.config
        relation, plain_table, not_null, oid = self._table(conn, pg) if cfg.table is not None else (None, False, set(),
                                                                                                     None)
        source = sql.SQL("SELECT * FROM {}").format(relation) if relation else sql.SQL(cfg.query.strip().rstrip(";"))
        cur = conn.execute(sql.SQL("SELECT * FROM ({}) AS _q LIMIT 0").format(source))
        described = [(d.name, d.type_code, cur.pgresult.fmod(i)) for i, d in enumerate(cur.description or ())]
        # NOT NULL fixed-width columns of a table have no NULL to look for: the decoder skips a step
        columns = [replace(c, not_null=c.kind in WIDTH and c.name in not_null) for c in resolve(conn, described)]
        names = [c.name for c in columns]
        cursor_col = self._column(names, self.cursor.inc.cursor, "incremental cursor") if self.cursor else None
        key_col = self._column(names, cfg.partition_on, "partition_on") if cfg.partition_on else None
        # inside the COPY the result's columns are renamed by position: duplicate names cannot clash
        aliases = [sql.Identifier(f"_c{i}") for i in range(len(columns))]
        refs = [sql.SQL("_q.{}").format(a) for a in aliases]
        subquery = sql.SQL("({}) AS _q({})").format(source, sql.SQL(", ").join(aliases))
        after = self.cursor.after if self.cursor else None
        snapshot, ranges = None, [Part()]
        blocks = cfg.partitions > 1 and key_col is None  # split the table's pages, not a key's range
        if blocks and not plain_table:
            raise ToolError(f"task {self.ctx.task!r}: partitions without partition_on split a table by its storage "
                            f"blocks, but {cfg.table!r} is a view or a partitioned table; give partition_on (an "
                            "integer, date or timestamp column)")
        if blocks:
            subquery = sql.SQL("{} AS _q({})").format(relation, sql.SQL(", ").join(aliases))
        if cfg.partitions > 1:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        key = _key(conn, oid) if oid is not None and self.wants_order() else None
        if key is not None and not set(key) <= set(names):
            key = None  # a column the read cannot see (dropped since?): read in no particular order

        def key_ranges() -> list[Part]:
            if cfg.partitions <= 1:
                return [Part()]
            lo, hi = conn.execute(sql.SQL("SELECT min({}), max({}) FROM {}{}").format(
                refs[key_col], refs[key_col], subquery, self._filter(refs, cursor_col, after))).fetchone()
            if lo is not None and (isinstance(lo, bool) or not isinstance(lo, (int, dt.date))):
                raise ToolError(f"task {self.ctx.task!r}: partition_on column {cfg.partition_on!r} is "
                                f"{columns[key_col].pg_type}; split on an integer, date or timestamp column")
            return parts(lo, hi, cfg.partitions)

        if blocks:
            # rows visible to the snapshot are in the pages counted now; the last range is open anyway
            pages = conn.execute(sql.SQL("SELECT pg_relation_size({}) / current_setting('block_size')::bigint")
                                 .format(sql.Literal(relation.as_string(conn)))).fetchone()[0]
            ranges = self.keyed(None, after, lambda: parts(0, pages - 1, cfg.partitions) if pages > 1 else [Part()],
                                f"PostgreSQL {self._where}")
        else:
            ranges = self.keyed(key, after, key_ranges, f"PostgreSQL {self._where}")
        if snapshot is not None and len(ranges) == 1:
            conn.execute("COMMIT")  # one range after all: a single statement needs no shared snapshot
            snapshot = None
        order = self.progress.order if self.progress is not None else None
        position = {n: i for i, n in enumerate(names)}
        ref_of = {n: refs[i].as_string(conn) for n, i in position.items()}
        casts = any(c.as_text for c in columns)
        selects = sql.SQL(", ").join(sql.SQL("{}::text").format(r) if c.as_text else r for r, c in zip(refs, columns))
        statements = []
        for i, part in enumerate(ranges):
            filt = self._filter(refs, cursor_col, after, key_col if part != Part() else None, part)
            if blocks and part != Part():
                joiner = " AND " if filt.as_string(conn) else " WHERE "
                filt = sql.Composed([filt, sql.SQL(joiner), _block_range(part)])
            if order is not None:
                last = self.progress.last[i]
                if last is not None:
                    joiner = " AND " if filt.as_string(conn) else " WHERE "
                    filt = sql.Composed([filt, sql.SQL(joiner + after_last(
                        order, last, ref_of.__getitem__, lambda v: sql.Literal(v).as_string(conn)))])
                # the key's btree index serves the order; NULL cursors (no bound) sort last, as ASC does
                filt = sql.Composed([filt, sql.SQL(order_by(order, ref_of.__getitem__, lambda c: f"{c} NULLS LAST"))])
            if filt.as_string(conn) or casts:
                body = sql.SQL("(SELECT {} FROM {}{})").format(selects, subquery, filt)
            elif plain_table:
                body = relation  # COPY table TO: the server's cheapest path, no executor
            else:
                body = sql.SQL("({})").format(source)
            statements.append(sql.SQL("COPY {} TO STDOUT (FORMAT binary)").format(body).as_bytes(conn))
        return _Plan(columns, statements, snapshot)

    def _filter(self, refs: list[Any], cursor_col: int | None, after: Any, key_col: int | None = None,
                part: Part | None = None) -> Any:
        """`` WHERE ...`` of the incremental bound and a partition's range, values as SQL literals."""
        from psycopg import sql

        text, values = where(mark=lambda i: f"{{p{i}}}", cursor="{cursor}" if cursor_col is not None else None,
                             after=after, key="{key}" if key_col is not None else None, part=part)
        if not text:
            return sql.SQL("")
        args: dict[str, Any] = {f"p{i + 1}": sql.Literal(v) for i, v in enumerate(values)}
        if cursor_col is not None:
            args["cursor"] = refs[cursor_col]
        if key_col is not None:
            args["key"] = refs[key_col]
        return sql.SQL(text).format(**args)

    def _column(self, names: list[str], name: str, what: str) -> int:
        found = [i for i, n in enumerate(names) if n == name]
        if len(found) != 1:
            problem = "is not a column of" if not found else "names more than one column of"
            raise ToolError(f"task {self.ctx.task!r}: {what} {name!r} {problem} the {self._where} "
                            f"(columns: {', '.join(names)}); name one of them, or alias it in the query")
        return found[0]

    def _table(self, conn: Any, pg: Pool) -> tuple[Any, bool, set[str], int]:
        schema, name = split_table(self.config.table)
        ident = _ident(schema, name)
        row = conn.execute("SELECT c.oid, c.relkind FROM pg_catalog.pg_class c WHERE c.oid = to_regclass(%s)",
                           (ident.as_string(conn),)).fetchone()
        if row is None:
            raise ToolError(self._missing(conn, pg, schema, name))
        oid, relkind = row
        not_null = {r[0] for r in conn.execute(
            "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped "
            "AND attnotnull", (oid,)).fetchall()}
        return ident, relkind == "r", not_null, oid  # views and partitioned tables need COPY (SELECT ...)

    def _missing(self, conn: Any, pg: Pool, schema: str | None, name: str) -> str:
        schemas = [schema] if schema is not None else [
            r[0] for r in conn.execute("SELECT unnest(current_schemas(false))").fetchall()]
        tables = [r[0] for r in conn.execute(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables "
            "WHERE table_schema = ANY(%s) AND table_name <> %s ORDER BY 1 LIMIT 20", (schemas, CHECKPOINTS)).fetchall()]
        where_ = f"schema {schema!r}" if schema is not None else f"the search path ({', '.join(schemas) or 'empty'})"
        known = ", ".join(tables) or "none"
        return (f"task {self.ctx.task!r}: PostgreSQL table {name!r} not found in {where_} at {describe(pg.url)} "
                f"(tables there: {known}); check `table:` (write schema.table, and double-quote mixed-case "
                "names: '\"MyTable\"')")

    # -- reading ------------------------------------------------------------------------------------

    def _opener(self, pg: Pool, plan: _Plan, barrier: threading.Barrier | None):
        lead_conn = self._lead

        @contextlib.contextmanager
        def open_read(i: int):
            if i == 0:
                try:
                    yield lead_conn
                except BaseException:
                    if barrier is not None:
                        barrier.abort()
                    raise
                if barrier is not None:
                    with contextlib.suppress(threading.BrokenBarrierError):
                        barrier.wait()  # every other read has imported the snapshot: it may end now
                    lead_conn.execute("COMMIT")
                return
            try:
                with pg.connection() as conn, _autocommit(conn):
                    if conn.info.encoding != "utf-8":
                        conn.execute("SET client_encoding TO 'UTF8'")
                    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    conn.execute(f"SET TRANSACTION SNAPSHOT {_quote(plan.snapshot)}")
                    barrier.wait()
                    yield conn
                    conn.execute("COMMIT")
            except BaseException:
                barrier.abort()
                raise

        return open_read

    # -- errors -------------------------------------------------------------------------------------

    def _error(self, e: Exception, pg: Pool) -> ToolError:
        import psycopg

        diag = getattr(e, "diag", None)
        text = diag.message_primary if diag is not None and diag.message_primary else str(e).strip()
        text = text or type(e).__name__
        hint = f" ({diag.message_hint})" if diag is not None and diag.message_hint else ""
        head = f"task {self.ctx.task!r}: PostgreSQL at {describe(pg.url)}"
        if isinstance(e, psycopg.OperationalError) and not isinstance(e, psycopg.errors.QueryCanceled):
            return TransientError(f"{head}: lost the connection while reading: {text}; the run retries it; "
                                  "check the server if it keeps failing")
        if self.config.query is not None:
            return ToolError(f"{head} rejected the query: {text}{hint}; fix the SQL in `query:`")
        return ToolError(f"{head} rejected the read of table {self.config.table!r}: {text}{hint}")

    def _decode_error(self, e: BaseException) -> BaseException:
        if isinstance(e, DecodeError):
            return ToolError(f"task {self.ctx.task!r}: PostgreSQL {self._where}: {e}")
        if isinstance(e, FramingError):
            return ToolError(f"task {self.ctx.task!r}: PostgreSQL {self._where}: unexpected binary COPY data ({e}); "
                             "please report this with the PostgreSQL version")
        return e


def _ident(schema: str | None, name: str) -> Any:
    from psycopg import sql

    return sql.Identifier(schema, name) if schema is not None else sql.Identifier(name)


_KEY = """
SELECT array_agg(a.attname ORDER BY k.ord)
FROM pg_catalog.pg_index i
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
  AND k.ord <= i.indnkeyatts
GROUP BY i.indexrelid, i.indisprimary
HAVING bool_and(a.attnotnull)
ORDER BY i.indisprimary DESC, count(*), i.indexrelid
LIMIT 1
"""


def _key(conn: Any, oid: int) -> list[str] | None:
    """The primary key, else the unique index on the fewest NOT NULL columns (not partial, no
    expressions); None if the relation has neither (a view, a table without one)."""
    row = conn.execute(_KEY, (oid,)).fetchone()
    return list(row[0]) if row else None


@contextlib.contextmanager
def _autocommit(conn: Any):
    """Statements run as written (explicit BEGIN/COMMIT); the pooled connection gets its mode back."""
    before = conn.autocommit
    conn.autocommit = True
    yield conn
    conn.autocommit = before  # after a failure the pool discards the connection anyway


def _block_range(part: Part) -> Any:
    """``lo <= ctid < hi`` of a partition of page numbers (None: unbounded)."""
    from psycopg import sql

    bounds = [sql.SQL("_q.ctid {} {}::tid").format(sql.SQL(op), sql.Literal(f"({page},0)"))
              for op, page in ((">=", part.lo), ("<", part.hi)) if page is not None]
    return sql.SQL(" AND ").join(bounds)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _close(lead: contextlib.ExitStack, error: BaseException | None) -> None:
    if error is None:
        lead.close()
    else:
        lead.__exit__(type(error), error, error.__traceback__)
