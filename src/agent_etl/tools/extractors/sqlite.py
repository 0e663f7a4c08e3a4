"""SQLite extractor: a table or a query, streamed as Arrow batches of ``batch_size`` rows.

Options: ``connection`` (a ``connections:`` entry whose ``url`` is ``sqlite:///path.db``, relative
to the pipeline file; ``?timeout=`` sets the lock wait in seconds) and exactly one of ``table``
(a plain name, quoted as given: ``a.b`` is one table named "a.b") or ``query``; and the options
every database extractor has (``tools.databases.reads``):

- ``incremental: {cursor, initial, lookback}`` reads only rows whose cursor column is greater than
  the mark of the last successful run. SQLite compares what it stores: integers and reals as
  numbers, dates and timestamps as ISO-8601 text (``2024-05-31T12:00:00``; a space instead of the
  ``T`` is fine, offsets must all be written the same way, as the sqlite loader does in UTC).
- ``partitions: N`` with ``partition_on: <integer, date or timestamp column>`` reads N key ranges,
  one after the other in the same read transaction (one snapshot, so exactly the rows of a single
  read; SQLite gains nothing from parallel readers of one file).

Arrow types come from the declared column types (see ``databases.sqlite.types``): INTEGER -> int64,
REAL/FLOAT/DOUBLE -> float64, TEXT/CHAR/CLOB/JSON/TIME -> string, BLOB -> binary, BOOLEAN -> bool,
DATE -> date32, TIMESTAMP/DATETIME -> timestamp[us] (timestamp[us, UTC] when the text carries
offsets), DECIMAL/NUMERIC(p,s) -> decimal, without precision -> float64; no declared type -> inferred.

SQLite does not enforce declared types, so with ``table:`` one aggregate pass over ``typeof()``
first checks what the column really holds (in the same read transaction as the data): a column
whose values do not fit its declared type (text in an INTEGER column, dates that do not parse)
is read by what it holds, and one that mixes storage classes is read as string (blobs as hex).
A ``query:`` is run once: its columns that are plain table columns keep their declared types
(read from a temporary view of the query), the others are inferred from the first batch, and
later batches must fit those types (else an error says to CAST the column in the query).

Resumable (``resume_from``): a ``table`` read of a table whose primary key is NOT NULL (an INTEGER
PRIMARY KEY, a WITHOUT ROWID table, NOT NULL columns) or that has a unique index on NOT NULL
columns, partitioned or not, incremental or not. Such a read is ``ORDER BY`` the key (the cursor
first when incremental) and the position keeps the stored values of each partition's last row;
a resumed read compares the key with them as SQLite compares stored values. A ``query:`` read,
or one of a table without such a key, is not resumable.
"""

from __future__ import annotations

import datetime as dt
import decimal
import sqlite3
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from agent_etl.exceptions import ToolError, TransientError
from agent_etl.tools.base import ToolContext
from agent_etl.tools.databases.checkpoints import TABLE as CHECKPOINTS
from agent_etl.tools.databases.options import SourceOptions
from agent_etl.tools.databases.reads import Part, ReaderExtractor, after_last, order_by, parts, where
from agent_etl.tools.databases.sqlite.connections import cause, database, engine
from agent_etl.tools.databases.sqlite.types import arrow_type, as_text, from_values, quote, storage_classes

_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError)
_CLASSES = ("integer", "real", "text", "blob")
_ISO_DATE = "'[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*'"


@dataclass
class _Column:
    name: str
    type: pa.DataType | None  # None: not known until the first batch
    expr: str = ""  # what to select (table mode)
    settled: bool = False  # later batches must fit ``type``


class _Reader:
    """The blocking half: one connection, one read transaction, one cursor."""

    def __init__(self, ctx: ToolContext, config: SQLiteExtractor.Config, after: Any = None,
                 ext: SQLiteExtractor | None = None):
        self.ctx, self.config, self._after = ctx, config, after  # after: the incremental bound
        self.ext = ext  # the extractor, for a read in key order (None: any order)
        self.part = -1  # the partition being read
        self.path, self.timeout = database(ctx, config.connection)
        self.what = f"table {config.table!r}" if config.table is not None else f"query {_short(config.query)!r}"
        self.columns: list[_Column] = []
        self.emitted = self.done = False

    def open(self) -> None:
        self._connect()
        self.start(self._after)

    def interrupt(self) -> None:
        dbapi = getattr(self, "dbapi", None)
        if dbapi is not None:  # not connected yet: nothing runs that could be interrupted
            dbapi.interrupt()

    def _connect(self) -> None:
        if not self.path.is_file():
            raise ToolError(f"task {self.ctx.task!r}: SQLite database {self.path} does not exist; "
                            "check the connection url (relative paths start at the pipeline file)")
        self.engine = engine(self.path, self.timeout, read_only=True, begin="BEGIN")
        self.conn = self.engine.connect()
        self.dbapi: sqlite3.Connection = self.conn.connection.driver_connection

    def close(self) -> None:
        if getattr(self, "cursor", None) is not None:
            self.cursor.close()  # a half-read SELECT would keep the database open (and locked) until GC
        if getattr(self, "conn", None) is not None:
            self.conn.close()  # ends the read transaction
            self.engine.dispose()
            self.conn = None

    def start(self, after: Any = None) -> None:
        self.conn.begin()  # one snapshot for the type probe, the partition bounds and the rows
        self.cursor = self.dbapi.cursor()
        config = self.config
        if config.table is not None:
            self.columns = self._table_columns()
            select = ", ".join(c.expr for c in self.columns)
            source = quote(config.table)
            self.select = f"SELECT {select} FROM {source}"
        else:
            sql = config.query.strip().rstrip(";")
            declared = self._declared_types(sql)
            source = f"({sql})"
            # wrapped only when filtered: a bare query may be a PRAGMA, which a subquery cannot hold
            self.select = sql if config.incremental is None and config.partitions == 1 else f"SELECT * FROM {source}"
        self.cursor_sql = self.after = None
        if config.incremental is not None and after is not None:
            self.cursor_sql, self.after = _compared(quote(config.incremental.cursor), after), _param(after)
        self.order = None
        if self.ext is not None:
            key = _table_key(self.cursor, config.table) if self.ext.wants_order() else None
            self.parts = self.ext.keyed(key, after, lambda: self._probe(source), f"SQLite {self.what} in {self.path}")
            self.order = self.ext.progress.order if self.ext.progress is not None else None
            if self.order is not None:  # the stored values of the order's columns come last, for the position
                raw = ", ".join(quote(c) for c in self.order.columns)
                self.select = f"SELECT {', '.join(c.expr for c in self.columns)}, {raw} FROM {source}"
        else:
            self.parts = self._probe(source)
        self.parts = list(self.parts)
        self._run_part()
        if config.table is None:
            names = [d[0] for d in self.cursor.description or ()]
            if len(declared) != len(names):
                declared = [None] * len(names)
            self.columns = [_Column(n, arrow_type(d)) for n, d in zip(names, declared)]

    def _probe(self, source: str) -> list[Part]:
        return self._parts(source) if self.config.partitions > 1 else [Part()]

    def _parts(self, source: str) -> list[Part]:
        """Key ranges from the key's min and max (under the incremental filter)."""
        key = quote(self.config.partition_on)
        clause, params = where(mark=lambda _: "?", cursor=self.cursor_sql, after=self.after)
        lo, hi = self.cursor.execute(f"SELECT min({key}), max({key}) FROM {source}{clause}", params).fetchone()
        lo, hi = _key_value(lo), _key_value(hi)
        numbers = all(isinstance(v, (int, float)) for v in (lo, hi))
        times = all(isinstance(v, dt.datetime) for v in (lo, hi)) and (lo.tzinfo is None) == (hi.tzinfo is None)
        dates = all(type(v) is dt.date for v in (lo, hi))
        if not (lo is None and hi is None or numbers or times or dates):
            raise ToolError(f"task {self.ctx.task!r}: SQLite {self.what} in {self.path}: partition_on column "
                            f"{self.config.partition_on!r} holds {lo!r} .. {hi!r}; partition on an integer, date or "
                            "timestamp column (ISO-8601 text), or drop `partitions`")
        return parts(lo, hi, self.config.partitions)

    def _run_part(self) -> None:
        part = self.parts.pop(0)
        self.part += 1
        key = None
        if part.lo is not None or part.hi is not None:
            key = _compared(quote(self.config.partition_on), part.lo if part.lo is not None else part.hi)
            part = Part(_param(part.lo), _param(part.hi), part.nulls)
        clause, params = where(mark=lambda _: "?", cursor=self.cursor_sql, after=self.after, key=key, part=part)
        if self.order is not None:
            last = self.ext.progress.last[self.part]
            if last is not None:
                def bind(value: Any) -> str:
                    params.append(value)
                    return "?"

                clause += (" AND " if clause else " WHERE ") + after_last(self.order, last, quote, bind)
            clause += order_by(self.order, quote, lambda c: f"{c} NULLS LAST")
        self.cursor.execute(self.select + clause, params)

    def next(self) -> pa.RecordBatch | None:
        rows: list = []
        while not self.done:
            part = self.part  # the rows' partition (the next one may start below)
            rows = self.cursor.fetchmany(self.ctx.batch_size)
            if len(rows) < self.ctx.batch_size:  # fetchmany comes back short only at the end
                if self.parts:
                    self._run_part()
                else:
                    self.done = True
            if rows:
                break
        if not rows and self.emitted:
            return None
        self.emitted = True  # an empty result still gives one 0-row batch, so the schema travels
        values = list(zip(*rows)) if rows else [()] * len(self.columns)
        arrays = [self._array(c, v) for c, v in zip(self.columns, values)]  # leaves the order's columns out
        if rows and self.order is not None:
            self.ext.progress.last[part] = list(rows[-1][len(self.columns):])
        return pa.RecordBatch.from_arrays(arrays, names=[c.name for c in self.columns])

    def _array(self, col: _Column, values: Any) -> pa.Array:
        if col.settled:
            try:
                return from_values(values, col.type)
            except _ARROW_ERRORS:
                try:
                    return pa.array(values).cast(col.type)
                except _ARROW_ERRORS as e:
                    fixed_by = "the first batch" if self.config.table is None else "the declared column type"
                    raise ToolError(
                        f"task {self.ctx.task!r}: SQLite {self.what} in {self.path}: column {col.name!r} holds a value "
                        f"that cannot be read as {col.type}, the type fixed by {fixed_by} ({e}); read it with a "
                        f"query: that converts it, e.g. SELECT CAST({quote(col.name)} AS TEXT) AS {quote(col.name)}"
                    ) from e
        # First batch of a query: the declared type if the values fit it, else what they are.
        candidates = [col.type, None]
        if col.type is not None and pa.types.is_timestamp(col.type):
            candidates.insert(1, pa.timestamp("us", "UTC"))  # the text carries offsets
        for t in candidates:
            try:
                arr = from_values(values, t)
                break
            except _ARROW_ERRORS:
                continue
        else:
            arr = as_text(values)
        if pa.types.is_null(arr.type):
            arr = arr.cast(pa.string())  # all NULL: a type later batches can always be cast to
        col.type, col.settled = arr.type, True
        return arr

    def _declared_types(self, sql: str) -> list[str | None]:
        """Declared types of the query's columns, through a temporary view (no rows are read)."""
        view = f"_agent_etl_probe_{uuid.uuid4().hex}"
        try:
            self.cursor.execute(f"CREATE TEMP VIEW {quote(view)} AS {sql}")
        except sqlite3.Error:
            return []  # not a SELECT a view can hold (a PRAGMA, parameters, an error): infer
        try:
            sql = "SELECT type FROM pragma_table_xinfo(?, 'temp') ORDER BY cid"
            rows = self.cursor.execute(sql, (view,)).fetchall()
            return [r[0] or None for r in rows]
        finally:
            self.cursor.execute(f"DROP VIEW temp.{quote(view)}")

    def _table_columns(self) -> list[_Column]:
        table = self.config.table
        info = self.cursor.execute(
            "SELECT name, type FROM pragma_table_xinfo(?) WHERE hidden IN (0, 2, 3) ORDER BY cid", (table,)).fetchall()
        if not info:
            names = [r[0] for r in self.cursor.execute(
                "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' "
                "ORDER BY name")]
            known = ", ".join([repr(n) for n in names if n != CHECKPOINTS][:20]) or "none"
            raise ToolError(f"task {self.ctx.task!r}: SQLite table {table!r} not found in {self.path} "
                            f"(tables: {known}); check the table name or the connection url")
        probes: list[list[str]] = []
        for name, decl in info:
            q, t = quote(name), arrow_type(decl)
            text = f"typeof({q})='text'"
            p = [f"max(typeof({q})='{k}')" for k in _CLASSES]
            if t is not None and pa.types.is_date(t):
                p.append(f"max({text} AND date({q}) IS NOT {q})")
            elif t is not None and pa.types.is_timestamp(t):
                tz = f"({q} GLOB '*[+-][0-9][0-9]:[0-9][0-9]' OR {q} GLOB '*Z')"
                p += [f"max({text} AND (julianday({q}) IS NULL OR {q} NOT GLOB {_ISO_DATE}))",
                      f"max({text} AND {tz})", f"max({text} AND NOT {tz})"]
            elif t is not None and pa.types.is_decimal(t):
                p.append(f"max({text} AND (trim({q}, '0123456789.+-eE') != '' OR {q} NOT GLOB '*[0-9]*'))")
            probes.append(p)
        row = self.cursor.execute(f"SELECT {', '.join(e for p in probes for e in p)} FROM {quote(table)}").fetchone()
        flags, columns, i = [bool(v) for v in row], [], 0
        for (name, decl), p in zip(info, probes):
            columns.append(_decide(name, arrow_type(decl), flags[i:i + len(p)]))
            i += len(p)
        return columns

    def error(self, e: BaseException) -> ToolError:
        e = cause(e)
        msg = f"task {self.ctx.task!r}: SQLite {self.what} in {self.path}: {e}"
        if isinstance(e, sqlite3.OperationalError) and getattr(e, "sqlite_errorcode", None) in (5, 6):
            return TransientError(f"{msg}; another connection holds a write lock: retry, or raise ?timeout= in the url")
        return ToolError(f"{msg}; check the SQL, the table and column names")


def _decide(name: str, t: pa.DataType | None, flags: list[bool]) -> _Column:
    """The Arrow type and SELECT expression of one table column, from what the probe found."""
    q = quote(name)
    seen = {k for k, f in zip(_CLASSES, flags) if f}
    extra = flags[4:]
    fits = t is not None and seen <= storage_classes(t)
    if fits and pa.types.is_timestamp(t):
        bad, tz, naive = extra
        fits = not bad and not (tz and naive)
        if fits:
            t = pa.timestamp("us", "UTC") if tz else pa.timestamp("us", t.tz) if not naive else pa.timestamp("us")
    elif fits and (pa.types.is_date(t) or pa.types.is_decimal(t)):
        fits = not extra[0]
    if fits or not seen:
        t = t or pa.string()
        expr = f"CAST({q} AS TEXT)" if pa.types.is_decimal(t) else q  # exact digits, whatever the storage class
        return _Column(name, t, expr, settled=True)
    if seen == {"integer"}:
        return _Column(name, pa.int64(), q, settled=True)
    if seen <= {"integer", "real"}:
        return _Column(name, pa.float64(), q, settled=True)
    if seen == {"blob"}:
        return _Column(name, pa.binary(), q, settled=True)
    as_string = f"CASE WHEN typeof({q})='blob' THEN hex({q}) ELSE CAST({q} AS TEXT) END"
    return _Column(name, pa.string(), as_string, settled=True)


def _table_key(cursor: sqlite3.Cursor, table: str) -> list[str] | None:
    """The primary key if no column of it can hold NULL, else the shortest unique index on NOT NULL
    columns (not partial, no expressions); None if there is neither."""
    info = cursor.execute('SELECT name, type, "notnull", pk FROM pragma_table_info(?)', (table,)).fetchall()
    notnull = {name for name, _, nn, _ in info if nn}
    pk = [name for name, _, _, p in sorted(info, key=lambda r: r[3]) if p]
    try:
        (without_rowid,) = cursor.execute("SELECT wr FROM pragma_table_list WHERE name = ?", (table,)).fetchone() \
            or (0,)
    except sqlite3.Error:  # SQLite before 3.37
        without_rowid = 0
    rowid_alias = len(pk) == 1 and next(t for n, t, _, _ in info if n == pk[0]).upper() == "INTEGER"
    if pk and (rowid_alias or without_rowid or all(c in notnull for c in pk)):
        return pk
    found = []
    for _, index, unique, _, partial in cursor.execute("SELECT seq, name, \"unique\", origin, partial "
                                                       "FROM pragma_index_list(?)", (table,)).fetchall():
        if unique and not partial:
            cols = cursor.execute("SELECT cid, name FROM pragma_index_info(?) ORDER BY seqno", (index,)).fetchall()
            if cols and all(cid >= 0 and name in notnull for cid, name in cols):
                found.append([name for _, name in cols])
    return min(found, key=len) if found else None


def _compared(column: str, like: Any) -> str:
    """How a column is compared with a value like ``like``: timestamps as ISO text with a ``T``."""
    return f"replace({column}, ' ', 'T')" if isinstance(like, dt.datetime) else column


def _param(value: Any) -> Any:
    """A bound or cursor value as SQLite stores it (see ``databases.sqlite.types``)."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.isoformat(timespec="microseconds")  # fixed width: text order is time order
    if isinstance(value, (dt.date, decimal.Decimal)):
        return value.isoformat() if isinstance(value, dt.date) else float(value)
    return value


def _key_value(value: Any) -> Any:
    """A partition key's min or max as SQLite returns it: ISO text becomes a date or datetime."""
    if not isinstance(value, str):
        return value
    try:
        if len(value) == 10:
            return dt.date.fromisoformat(value)
        return dt.datetime.fromisoformat(value.replace(" ", "T"))
    except ValueError:
        return value


def _short(sql: str | None) -> str:
    sql = " ".join((sql or "").split())
    return sql if len(sql) <= 80 else sql[:77] + "..."


class SQLiteExtractor(ReaderExtractor):
    """Read a SQLite table or query as Arrow batches (declared column types become Arrow types)."""

    class Config(SourceOptions):
        """Options of the sqlite extractor: connection, table or query, incremental, partitions."""

    def reader(self, after: Any) -> _Reader:
        return _Reader(self.ctx, self.config, after, self)

    def errors(self) -> tuple[type[BaseException], ...]:
        import sqlalchemy.exc

        return (sqlite3.Error, sqlalchemy.exc.SQLAlchemyError)

    def find_key(self) -> list[str] | None:
        path, timeout = database(self.ctx, self.config.connection)
        if not path.is_file():
            return None
        con = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=timeout)
        try:
            return _table_key(con.cursor(), self.config.table)
        except sqlite3.Error:
            return None
        finally:
            con.close()
