"""Generic SQL extractor (``tool: sql``): a table or query of any database SQLAlchemy can reach.

Slower than the dedicated postgres/mysql/sqlite/duckdb tools, but it works wherever there is a
SQLAlchemy dialect. Options (``tools.databases.options.SourceOptions``): ``connection`` (its ``url``
is a SQLAlchemy URL, see ``tools.databases.engines``), exactly one of ``table`` (``name`` or
``schema.name``; double quotes keep dots) or ``query``, ``incremental`` and ``partitions`` with
``partition_on`` (see ``tools.databases.reads``).

Rows are streamed through a server-side cursor where the driver has one (``stream_results``:
psycopg, PyMySQL's SSCursor ...) and turned into Arrow column by column, ``batch_size`` rows at a
time. Types: with ``table:``, from SQLAlchemy's reflection of the table (integers -> int64, numeric
(p,s) -> decimal, float -> float64, timestamps with/without time zone, date, time, interval ->
duration, text/varchar/enum/uuid/json -> string, bytes -> binary; other types are inferred); with
``query:``, from the first batch's values, and later batches must fit them (else an error says to
CAST the column in the query). Partitions are read one after the other in one transaction
(REPEATABLE READ where the database has it), so they are exactly the rows of a single read; the
dedicated postgres and mysql tools read partitions in parallel.

Resumable (``resume_from``): a ``table`` read of a table with a primary key (or a unique constraint
or index on NOT NULL columns, as SQLAlchemy reflects them), partitioned or not, incremental or not.
It is read ``ORDER BY`` the key (the cursor first when incremental, its NULLs last), and the
position keeps the values the driver gave for each partition's last row, which a resumed read
binds again (``WHERE k1 > ? OR (k1 = ? AND k2 > ?) ...``, so the database compares them as it
ordered them). A ``query:`` read, or one of a table without such a key, is not resumable.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa

from agent_etl.exceptions import ToolError
from agent_etl.tools.base import ToolContext
from agent_etl.tools.databases.checkpoints import TABLE as CHECKPOINTS
from agent_etl.tools.databases.engines import (bind, connect_error, engine, identifier, location, placeholder, qualified,
                                               sqlite_file)
from agent_etl.tools.databases.options import SourceOptions, split_table
from agent_etl.tools.databases.reads import Part, ReaderExtractor, after_last, order_by, parts, where
from agent_etl.tools.databases.sql.types import arrow_type, text_values

_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError)


class _Reader:
    """The blocking half: one connection, one transaction, one streaming result per partition."""

    def __init__(self, ctx: ToolContext, config: SQLExtractor.Config, after: Any, ext: SQLExtractor):
        self.ctx, self.config, self.after, self.ext = ctx, config, after, ext
        self.conn = self.result = None
        self.part, self.order, self.key = -1, None, None
        self.types: list[pa.DataType | None] = []
        self.names: list[str] = []
        self.emitted = False
        self.what = f"table {config.table!r}" if config.table is not None else \
            "query " + repr(" ".join(config.query.split())[:80])

    def open(self) -> None:
        import sqlalchemy.exc

        self.engine = engine(self.ctx, self.config.connection)
        file = sqlite_file(self.engine)
        if file is not None and not file.is_file():  # connecting would create an empty database there
            raise ToolError(f"task {self.ctx.task!r}: SQLite database {file} does not exist; check the connection "
                            "url (relative paths start at the pipeline file)")
        try:
            conn = self.engine.connect()
        except sqlalchemy.exc.DBAPIError as e:
            raise connect_error(e, self.engine.url, self.config.connection) from None
        level = {"postgresql": "REPEATABLE READ", "mysql": "REPEATABLE READ", "mariadb": "REPEATABLE READ"}
        options: dict[str, Any] = {"stream_results": True}
        if self.engine.dialect.name in level:
            options["isolation_level"] = level[self.engine.dialect.name]
        self.conn = conn.execution_options(**options)
        self.conn.begin()
        if self.engine.dialect.name == "sqlite":  # Python's sqlite3 opens no transaction for reads by itself
            self.conn.exec_driver_sql("BEGIN")
        self.mark, self.escape = placeholder(self.engine)
        config, q = self.config, lambda n: identifier(self.engine, n)
        if config.table is not None:
            try:
                schema, table = split_table(config.table)
            except ValueError as e:
                raise ToolError(f"task {self.ctx.task!r}: {e}") from None
            self.source = qualified(self.engine, schema, table)
            self._reflect(schema, table)
        else:
            query = config.query.strip().rstrip(";")
            self.source = f"({query}) src"
        self.cursor_sql = q(config.incremental.cursor) if config.incremental is not None else None
        self.key_sql = q(config.partition_on) if config.partition_on else None
        self.parts = list(self.ext.keyed(self.key, self.after, self._probe, f"{self.what} at {self._where()}"))
        if self.ext.progress is not None:
            self.order = self.ext.progress.order
            self.order_at = [self.names.index(c) for c in self.order.columns]

    def _probe(self) -> list[Part]:
        return self._parts() if self.config.partitions > 1 else [Part()]

    def _reflect(self, schema: str | None, table: str) -> None:
        import sqlalchemy as sa

        inspector = sa.inspect(self.conn)
        if not inspector.has_table(table, schema=schema):
            names = inspector.get_table_names(schema=schema) + inspector.get_view_names(schema=schema)
            known = ", ".join([repr(n) for n in sorted(names) if n != CHECKPOINTS][:20]) or "none"
            raise ToolError(f"task {self.ctx.task!r}: table {self.config.table!r} not found at {self._where()} "
                            f"(tables: {known}); check the table name, its schema, or the connection url")
        columns = inspector.get_columns(table, schema=schema)
        self.names = [c["name"] for c in columns]
        self.types = [arrow_type(c["type"]) for c in columns]
        self.select = ", ".join(identifier(self.engine, n) for n in self.names)
        self.key = table_key(inspector, schema, table, columns) if self.ext.wants_order() else None

    def _sql(self, text: str) -> str:
        return text.replace("%", "%%") if self.escape else text

    def _parts(self) -> list[Part]:
        clause, params = where(mark=self.mark, cursor=self.cursor_sql, after=self.after)
        sql = self._sql(f"SELECT min({self.key_sql}), max({self.key_sql}) FROM {self.source}") + clause
        lo, hi = self.conn.exec_driver_sql(sql, bind(self.engine, params)).one()
        text = isinstance(lo, str)  # SQLite hands dates and timestamps over as ISO text
        lo, hi = _iso(lo), _iso(hi)
        if not (lo is None or isinstance(lo, (int, float)) and not isinstance(lo, bool) or hasattr(lo, "isoformat")):
            raise ToolError(f"task {self.ctx.task!r}: {self.what} at {self._where()}: partition_on column "
                            f"{self.config.partition_on!r} holds {type(lo).__name__} values; partition on an integer, "
                            "date or timestamp column, or drop `partitions`")
        found = parts(lo, hi, self.config.partitions)
        if text:  # compare as the database stores them
            found = [Part(*(v.isoformat(sep=" ") if isinstance(v, dt.datetime) else v.isoformat() if v is not None
                            else None for v in (p.lo, p.hi)), p.nulls) for p in found]
        return found

    def _run_part(self) -> None:
        part = self.parts.pop(0)
        self.part += 1
        clause, params = where(mark=self.mark, cursor=self.cursor_sql, after=self.after, key=self.key_sql, part=part)
        if self.config.table is not None:
            sql = f"SELECT {self.select} FROM {self.source}"
        elif clause:
            sql = f"SELECT * FROM {self.source}"
        else:  # the query as written (it may be anything the database returns rows for)
            sql, params = self.config.query.strip().rstrip(";"), []
        if self.order is not None:
            last = self.ext.progress.last[self.part]
            if last is not None:
                def bind_value(value: Any) -> str:
                    params.append(value)
                    return self.mark(len(params))

                clause += (" AND " if clause else " WHERE ") + after_last(
                    self.order, last, lambda c: identifier(self.engine, c), bind_value, row_values=False)
            clause += order_by(self.order, lambda c: identifier(self.engine, c),
                               lambda c: f"CASE WHEN {c} IS NULL THEN 1 ELSE 0 END, {c}")
        if params:
            sql = self._sql(sql) + clause
        else:
            sql += clause
        self.result = self.conn.exec_driver_sql(sql, bind(self.engine, params) if params else None)
        if not self.names:
            self.names = list(self.result.keys())
            self.types = [None] * len(self.names)

    def next(self) -> pa.RecordBatch | None:
        rows: list = []
        while True:
            if self.result is None:
                if not self.parts:
                    break
                self._run_part()
            rows = self.result.fetchmany(self.ctx.batch_size)
            if len(rows) < self.ctx.batch_size:
                self.result.close()
                self.result = None
            if rows:
                break
        if not rows and self.emitted:
            return None
        self.emitted = True  # an empty result still gives one 0-row batch, so the schema travels
        if rows and self.order is not None:  # the driver's own values: bound again, they compare as stored
            self.ext.progress.last[self.part] = [rows[-1][i] for i in self.order_at]
        values = list(zip(*rows)) if rows else [()] * len(self.names)
        arrays = [self._array(i, v) for i, v in enumerate(values)]
        return pa.RecordBatch.from_arrays(arrays, names=self.names)

    def _array(self, i: int, values: Any) -> pa.Array:
        t = self.types[i]
        if t is not None:
            try:
                return pa.array(values, t)
            except _ARROW_ERRORS:
                try:
                    source = text_values(values) if pa.types.is_string(t) else values
                    return pa.array(source).cast(t) if not pa.types.is_string(t) else pa.array(source, t)
                except _ARROW_ERRORS as e:
                    raise ToolError(f"task {self.ctx.task!r}: {self.what} at {self._where()}: column "
                                    f"{self.names[i]!r} holds a value that cannot be read as {t} ({e}); CAST it in "
                                    "a query: to a type that holds every value") from e
        try:  # the first batch of an untyped column: what its values are
            arr = pa.array(values)
        except _ARROW_ERRORS:
            arr = pa.array(text_values(values), pa.string())
        if pa.types.is_null(arr.type):
            if not values:
                return arr.cast(pa.string())  # no rows at all: leave the type open for no one
            arr = arr.cast(pa.string())
        self.types[i] = arr.type
        return arr

    def close(self) -> None:
        if self.result is not None:
            self.result.close()
            self.result = None
        if self.conn is not None:
            self.conn.close()  # rolls back the read transaction
            self.conn = None

    def _where(self) -> str:
        return location(self.engine)

    def error(self, e: BaseException) -> ToolError:
        text = " ".join(str(getattr(e, "orig", None) or e).split())[:400]
        return ToolError(f"task {self.ctx.task!r}: {self.what} at {self._where()}: {text}; check the SQL, the table "
                         "and column names")


def table_key(inspector: Any, schema: str | None, table: str, columns: list[dict[str, Any]]) -> list[str] | None:
    """The primary key, else the shortest unique constraint or index on NOT NULL columns."""
    pk = (inspector.get_pk_constraint(table, schema=schema) or {}).get("constrained_columns") or []
    if pk:
        return list(pk)
    nullable = {c["name"] for c in columns if c.get("nullable", True)}
    found: list[list[str]] = []
    for get in (inspector.get_unique_constraints, inspector.get_indexes):
        try:
            found += [list(u["column_names"]) for u in get(table, schema=schema)
                      if u.get("unique", True) and u.get("column_names") and None not in u["column_names"]
                      and not set(u["column_names"]) & nullable and not (u.get("dialect_options") or {}).get(
                          "postgresql_where") and not (u.get("dialect_options") or {}).get("sqlite_where")]
        except NotImplementedError:
            continue
    return min(found, key=len) if found else None


def _iso(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value) if len(value) == 10 else dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


class SQLExtractor(ReaderExtractor):
    """Read a table or query of any SQLAlchemy database as Arrow batches (slower, but anywhere)."""

    class Config(SourceOptions):
        """Options of the sql extractor: connection (a SQLAlchemy url), table or query, incremental, partitions."""

    def reader(self, after: Any) -> _Reader:
        return _Reader(self.ctx, self.config, after, self)

    def find_key(self) -> list[str] | None:
        import sqlalchemy as sa
        import sqlalchemy.exc

        try:
            schema, table = split_table(self.config.table)
            eng = engine(self.ctx, self.config.connection)
            file = sqlite_file(eng)
            if file is not None and not file.is_file():
                return None
            with eng.connect() as conn:
                inspector = sa.inspect(conn)
                if not inspector.has_table(table, schema=schema):
                    return None
                return table_key(inspector, schema, table, inspector.get_columns(table, schema=schema))
        except (ValueError, sqlalchemy.exc.SQLAlchemyError, ToolError):
            return None

    def errors(self) -> tuple[type[BaseException], ...]:
        import sqlalchemy.exc

        return (sqlalchemy.exc.SQLAlchemyError,)
