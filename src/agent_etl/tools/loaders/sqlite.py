"""SQLite loader: one transaction per commit unit, so a reader sees the table before or after a unit, never half.

Options: ``connection`` (``url: sqlite:///path.db``, relative to the pipeline file; the file and
its directory are created if missing; ``?timeout=`` sets the lock wait in seconds), ``table``
(a plain name, always quoted: ``a.b`` is one table named "a.b"), ``mode``, ``key`` and
``schema_policy`` (the options of every database loader, ``tools.databases.options.SinkOptions``).

- ``mode: append`` (default) inserts into the table, creating it from the first batch's schema if
  it does not exist. Nothing of a commit unit is committed until it ends (``commit_every``), or the
  input stream has ended cleanly.
- ``mode: replace`` (``replace_strategy: auto | swap | insert``, ``databases.replace``; the run's
  details say which was taken and why) into an existing table: ``insert`` (auto's choice: a swap
  measured no faster on SQLite, where a DELETE of all rows is a truncate) DELETEs and INSERTs into
  the table itself, in one transaction; ``swap`` writes a new table made from the old one's CREATE
  TABLE text and, in the same transaction, drops the old table and renames the new one in, creating
  the old table's indexes (after the rows) and triggers and the file's views again
  (``databases.sqlite.swap``); a foreign key of another table pointing at the table makes swap fail.
  Either way the table keeps its columns (those the input lacks get NULL or their default), its
  constraints, indexes, triggers and the views on it. A missing table is created from the stream's
  schema. A stream without any batch (so without a schema) empties the existing table.
- ``mode: merge`` with ``key: [columns]`` upserts: ``INSERT ... ON CONFLICT(key) DO UPDATE`` sets
  the input's other columns on rows whose key exists and inserts the rest; columns the input lacks
  keep their values. Rows are applied in order, so within one load the last row of a key wins.
  The upsert needs a unique index on exactly the key columns: it is created with a new table, and
  on an existing table that has none it is created in the load's transaction (if the table already
  holds duplicate keys the load fails, naming them, and changes nothing). Rows whose key is NULL
  never match (SQLite's UNIQUE allows many NULLs), so they are always inserted.
- ``schema_policy: evolve`` (default) adds a batch's new columns as nullable columns (ALTER TABLE
  ADD COLUMN); ``freeze`` fails, listing them, and leaves the table as it was (with replace, the
  stream must have exactly the old table's columns). Columns of the table that a batch lacks get
  NULL (or their default). SQLite columns are dynamically typed, so types are not compared.

Created tables get these declared types (stored values in brackets)::

    ints -> INTEGER, floats -> REAL (NaN is stored as NULL), bool -> BOOLEAN [INTEGER 0/1],
    string -> TEXT, binary -> BLOB, date -> DATE [TEXT 2024-05-31],
    timestamp -> TIMESTAMP [TEXT 2024-05-31T12:00:00.123456],
    tz-aware timestamp -> TIMESTAMPTZ [TEXT in UTC, 2024-05-31T10:00:00.123456+00:00],
    decimal(p,s) -> DECIMAL_TEXT(p,s) [TEXT 12.30], time -> TIME [TEXT], lists/structs/maps -> JSON [TEXT]

Decimals are stored as TEXT rather than NUMERIC because NUMERIC affinity keeps only 15 significant
digits; the declared type still carries (p,s), so the sqlite extractor reads them back as decimals.

Rows go in with the DB-API cursor's ``executemany`` over column-wise converted values; values are
always bound parameters. A constraint violation (NOT NULL, UNIQUE, CHECK, ...) rolls the whole
load back. The database is switched to WAL journaling (persistent, for the file) so readers are
not blocked while a load runs. With each commit, a row (run_id, task, table_name, rows, position)
goes into ``_agent_etl_checkpoints`` in the same file and transaction (``databases.checkpoints``).

Commit units (``tools.base``, ``Loader``): ``append`` and ``merge`` take them; each is one ``BEGIN
IMMEDIATE`` transaction (begun by its first batch), its checkpoint row written, ``ctx.prepare``
awaited, then COMMIT. If ``prepare`` raises, the unit rolls back and earlier units stay.
``replace`` is one unit. ``committed()`` reads the checkpoint rows of the run and task without
creating the file. "database is locked" (another writer's lock outlasted ``?timeout=``) is a
``TransientError``.

SQLite has one writer at a time, so a load that waited at ``prepare`` for its sibling loads while
holding the write lock would keep a sibling that writes into the same file from ever getting
there. With siblings (``defaults.commit: together``), each unit's batches are therefore spooled to
Arrow files on local disk and written into the database right after ``prepare`` (the write lock is
held only then; ``databases.spool``): what SQLite refuses then (a constraint, a lock wait)
fails this load after its siblings may have committed.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pyarrow as pa

from agent_etl.exceptions import ToolError, TransientError
from agent_etl.stream import slices
from agent_etl.tools.base import ToolContext
from agent_etl.tools.databases import checkpoints, replace
from agent_etl.tools.databases.blocking import Units, write_stream
from agent_etl.tools.databases.options import SinkOptions, key_index_name
from agent_etl.tools.databases.sink import DatabaseLoader
from agent_etl.tools.databases.sqlite import swap
from agent_etl.tools.databases.sqlite.connections import cause, database, engine
from agent_etl.tools.databases.sqlite.types import declared_type, fold, quote, to_params
from agent_etl.tools.databases.transient import transient
from agent_etl.tools.folders import make_folder_for

_CHUNK_ROWS = 10_000
# benchmarks/replace_paths.py, 1M rows into a table with a primary key and an index: swap 4.90 s,
# DELETE + INSERT 4.88 s (DELETE of a whole table is a truncate in SQLite): nothing to gain by swapping
_AUTO_INSERTS = "SQLite: a swap is no faster here; replace_strategy: swap to swap"
_CHECKPOINTS = quote(checkpoints.TABLE)
# committed_at is UTC text like a tz-aware timestamp the loader writes (millisecond precision)
_CHECKPOINTS_DDL = (f"CREATE TABLE IF NOT EXISTS {_CHECKPOINTS} (run_id TEXT NOT NULL, task TEXT NOT NULL, "
                    "table_name TEXT NOT NULL, rows INTEGER NOT NULL, position JSON NOT NULL DEFAULT '{}', "
                    "committed_at TIMESTAMPTZ NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')))")


class _Writer(Units):
    """The blocking half: one connection; one write transaction per commit unit, begun by its first batch."""

    def __init__(self, ctx: ToolContext, config: SQLiteLoader.Config):
        self.ctx, self.config = ctx, config
        self.path, self.timeout = database(ctx, config.connection)
        self.table = config.table
        self.into = self.table  # replace writes to a staging table first
        self.tx = None
        self.conn = None
        self.columns: dict[str, str] = {}  # folded name -> name, of the table written into
        self.schema: pa.Schema | None = None  # of the last batch, whose INSERT is prepared
        self.insert = ""
        self.stopped = threading.Event()
        self.committed = False
        self.final = False
        self.path_taken: replace.Path | None = None  # replace: swap or insert, and why

    def open(self) -> None:
        make_folder_for(self.path, self.ctx.task)
        self.engine = engine(self.path, self.timeout, read_only=False, begin="BEGIN IMMEDIATE")
        self.conn = self.engine.connect()
        self.dbapi: sqlite3.Connection = self.conn.connection.driver_connection
        cur = self.dbapi.cursor()
        if cur.execute("PRAGMA journal_mode").fetchone()[0] == "delete":
            try:
                cur.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError:
                pass  # another connection is busy with the file; rollback journaling works too

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()  # rolls back whatever was not committed, staging table included
            self.engine.dispose()
            self.conn = None

    def write(self, batch: pa.RecordBatch) -> None:
        if self.tx is None:
            self._begin(batch.schema)
        elif not self.tx.is_active:  # the first batch of the next unit
            self.tx = self.conn.begin()
        if batch.schema != self.schema:
            self._fit(batch.schema)
        cursor = self.dbapi.cursor()
        # In chunks: bounds the Python objects alive at once, and lets a cancelled load stop
        # between chunks (sqlite3_interrupt cannot stop executemany, which resets per row).
        for chunk in slices(batch, _CHUNK_ROWS) if batch.num_rows else ():
            if self.stopped.is_set():
                raise sqlite3.OperationalError("interrupted")
            params = []
            for name, column in zip(chunk.schema.names, chunk.columns):
                try:
                    params.append(to_params(column))
                except (pa.ArrowException, TypeError, ValueError) as e:
                    raise self._fail(f"column {name!r} ({column.type}) cannot be converted: {e}") from e
            cursor.executemany(self.insert, zip(*params))
        self.rows += batch.num_rows

    def stop(self) -> None:
        self.stopped.set()
        self.dbapi.interrupt()

    def ready(self, final: bool) -> bool:
        """Everything of the unit but its COMMIT (``write_stream``); False if there is no unit."""
        self.final = final
        if not self.pending():
            return False
        if self.tx is None:  # no batch at all: nothing to append or merge; replace empties the table
            if not self._existing(self.table):
                return True  # nothing to write, not even a checkpoint; the load is still complete
            self.tx = self.conn.begin()
            if self.config.mode == "replace":
                self.dbapi.execute(f"DELETE FROM {quote(self.table)}")
        elif self.config.mode == "replace" and self.into != self.table:
            # Legacy rename: the new SQLite rename re-checks every view and trigger, and fails on
            # those that referred to the table just dropped; the legacy one only renames.
            self.dbapi.execute("PRAGMA legacy_alter_table=ON")
            try:
                if self.path_taken is replace.NEW:
                    self.dbapi.execute(f"DROP TABLE IF EXISTS {quote(self.table)}")
                    self.dbapi.execute(f"ALTER TABLE {quote(self.into)} RENAME TO {quote(self.table)}")
                else:
                    swap.swap_in(self.dbapi, self.table, self.into)
            finally:
                self.dbapi.execute("PRAGMA legacy_alter_table=OFF")
        self._checkpoint()
        return True

    def commit(self) -> None:
        if self.tx is not None and self.tx.is_active:
            self.tx.commit()
        self.committed = True
        self.count_commit()

    def _checkpoint(self) -> None:
        """This load's checkpoint row, in its transaction (the table is created, or given ``position``, if need be)."""
        self.dbapi.execute(_CHECKPOINTS_DDL)
        if not self.dbapi.execute("SELECT 1 FROM pragma_table_info(?) WHERE name = 'position'",
                                  (checkpoints.TABLE,)).fetchone():
            self.dbapi.execute(f"ALTER TABLE {_CHECKPOINTS} ADD COLUMN position JSON NOT NULL DEFAULT '{{}}'")
        self.dbapi.execute(checkpoints.insert(_CHECKPOINTS, quote, "?"),
                           checkpoints.checkpoint(self.ctx, self.table, self.unit_rows).values())

    def _begin(self, schema: pa.Schema) -> None:
        self.tx = self.conn.begin()  # BEGIN IMMEDIATE: take the write lock now, not halfway
        names = [fold(n) for n in schema.names]
        dupes = sorted({n for n in schema.names if names.count(fold(n)) > 1})
        if dupes:
            raise self._fail(f"the input has columns that differ only in case or repeat: {dupes}; "
                             "rename them upstream (SQLite column names ignore case)")
        if not schema.names:
            raise self._fail("the input has no columns; select some columns upstream")
        existing = self._existing(self.table)
        if self.config.mode in ("append", "merge"):
            if existing:
                self.columns = existing
            else:
                self._create(self.table, schema)
            if self.config.mode == "merge":
                self._key_index(fresh=not existing)
            return
        if existing and self.config.schema_policy == "freeze":
            new = [n for n in schema.names if fold(n) not in existing]
            gone = [n for k, n in existing.items() if k not in set(names)]
            if new or gone:
                raise self._fail(f"schema_policy: freeze, but the input's columns differ from the table's: "
                                 f"new {new}, missing {gone}; change the table or set schema_policy: evolve")
        staging = f"_agent_etl_staging_{self.table}"
        if not existing:
            self.path_taken = replace.NEW
            self.into = staging
            self.dbapi.execute(f"DROP TABLE IF EXISTS {quote(self.into)}")
            self._create(self.into, schema)
            return
        self.path_taken = replace.choose(self.config.replace_strategy, swap.blockers(self.dbapi, self.table), self._fail,
                                         auto_inserts=_AUTO_INSERTS)
        if self.path_taken.swap:
            self.into = staging
            self.dbapi.execute(f"DROP TABLE IF EXISTS {quote(self.into)}")
            swap.create_like(self.dbapi, self.table, self.into)
        else:
            self.dbapi.execute(f"DELETE FROM {quote(self.table)}")
        self.columns = existing

    def _create(self, table: str, schema: pa.Schema) -> None:
        cols = ", ".join(f"{quote(f.name)} {declared_type(f.type)}" for f in schema)
        self.dbapi.execute(f"CREATE TABLE {quote(table)} ({cols})")
        self.columns = {fold(n): n for n in schema.names}

    def _key_index(self, fresh: bool) -> None:
        """Make sure a unique index on exactly the key columns exists (the upsert's conflict target)."""
        key = self.config.key
        missing = [k for k in key if fold(k) not in self.columns]
        if missing:
            raise self._fail(f"merge key {missing} is not a column of the table (columns: {list(self.columns.values())}); "
                             "fix `key`")
        want = {fold(k) for k in key}
        if not fresh:
            pk = [fold(r[0]) for r in self.dbapi.execute(
                "SELECT name FROM pragma_table_info(?) WHERE pk > 0", (self.table,))]
            if set(pk) == want and len(pk) == len(want):
                return  # the primary key (a rowid alias or an index of its own)
            for (name,) in self.dbapi.execute(
                    'SELECT name FROM pragma_index_list(?) WHERE "unique" AND NOT partial', (self.table,)).fetchall():
                cols = [fold(r[0] or "") for r in self.dbapi.execute("SELECT name FROM pragma_index_info(?)", (name,))]
                if set(cols) == want and len(cols) == len(want):
                    return
        cols = ", ".join(quote(k) for k in key)
        try:
            self.dbapi.execute(f"CREATE UNIQUE INDEX {quote(key_index_name(self.table, key))} ON {quote(self.table)} ({cols})")
        except sqlite3.IntegrityError:
            raise self._fail(f"merge needs a unique index on key {key}, and the table already holds rows that share "
                             "a key, so none can be created; remove the duplicates, or create the index yourself") from None

    def _existing(self, table: str) -> dict[str, str]:
        rows = self.dbapi.execute(
            "SELECT name FROM pragma_table_xinfo(?) WHERE hidden IN (0, 2, 3) ORDER BY cid", (table,)).fetchall()
        return {fold(r[0]): r[0] for r in rows}

    def _fit(self, schema: pa.Schema) -> None:
        """Prepare the INSERT for a batch schema, adding its new columns if the policy allows."""
        new = [f for f in schema if fold(f.name) not in self.columns]
        if new and self.config.schema_policy == "freeze":
            listed = ", ".join(f"{f.name} ({f.type})" for f in new)
            raise self._fail(f"schema_policy: freeze, but the input has columns the table lacks: {listed}; "
                             "add them to the table, drop them upstream, or set schema_policy: evolve")
        for f in new:
            self.dbapi.execute(f"ALTER TABLE {quote(self.into)} ADD COLUMN {quote(f.name)} {declared_type(f.type)}")
            self.columns[fold(f.name)] = f.name
        names = ", ".join(quote(n) for n in schema.names)
        marks = ", ".join("?" * len(schema.names))
        self.insert = f"INSERT INTO {quote(self.into)} ({names}) VALUES ({marks})"
        if self.config.mode == "merge":
            self.insert += self._upsert(schema)
        self.schema = schema

    def _upsert(self, schema: pa.Schema) -> str:
        key = {fold(k) for k in self.config.key}
        lacking = [k for k in self.config.key if fold(k) not in {fold(n) for n in schema.names}]
        if lacking:
            raise self._fail(f"the input lacks merge key column(s) {lacking} (it has {schema.names}); "
                             "select them upstream or fix `key`")
        target = ", ".join(quote(k) for k in self.config.key)
        sets = ", ".join(f"{quote(n)} = excluded.{quote(n)}" for n in schema.names if fold(n) not in key)
        return f" ON CONFLICT ({target}) DO " + (f"UPDATE SET {sets}" if sets else "NOTHING")

    def _fail(self, problem: str) -> ToolError:
        return ToolError(f"task {self.ctx.task!r}: SQLite table {self.table!r} in {self.path}: {problem}; "
                         + self.undone("nothing was written"))

    def error(self, e: BaseException) -> ToolError:
        e = cause(e)
        where = f"task {self.ctx.task!r}: SQLite table {self.table!r} in {self.path}"
        if isinstance(e, sqlite3.IntegrityError):
            return ToolError(f"{where}: a row violates a constraint ({e}); the load was rolled back and nothing "
                             "was written; fix the rows upstream (e.g. a quality check) or the table's constraint")
        if transient(e):
            return TransientError(f"{where}: {e}; another connection holds the write lock: retry, "
                                  "or raise ?timeout= in the url; " + self.undone())
        return ToolError(f"{where}: {e}; {self.undone()}")


def _committed(ctx: ToolContext, config: SQLiteLoader.Config) -> dict[str, Any] | None:
    """The checkpoint rows of ``ctx``'s run and task for the table (``Loader.committed``), read
    without creating the file or taking a write lock; None when the table itself is gone (dropped
    since), whatever checkpoint rows remain."""
    def read(conn: sqlite3.Connection) -> dict[str, Any] | None:
        return checkpoints.query_committed(conn.execute, _CHECKPOINTS, quote, "?", (ctx.run_id, ctx.task, config.table),
                                           tiebreak="rowid")

    return _checkpoints(ctx, config, read, loaded=True)


def _mark(ctx: ToolContext, config: SQLiteLoader.Config, source: str) -> dict[str, Any] | None:
    """The newest incremental mark of ``source`` in the checkpoints of the task and table (``Loader.mark``)."""
    def read(conn: sqlite3.Connection) -> dict[str, Any] | None:
        return checkpoints.query_mark(conn.execute, _CHECKPOINTS, quote, "?", ctx.task, config.table, source,
                                      tiebreak="rowid")

    return _checkpoints(ctx, config, read, loaded=False)


def _checkpoints(ctx: ToolContext, config: SQLiteLoader.Config, read: Callable[[sqlite3.Connection], Any],
                 loaded: bool) -> Any:
    """``read(connection)`` on the file opened read-only, or None if there is no file or checkpoint
    table, or ``loaded`` and the loaded table is gone."""
    path, timeout = database(ctx, config.connection)
    if not path.is_file():
        return None
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=timeout)
    try:
        for table in (checkpoints.TABLE, config.table) if loaded else (checkpoints.TABLE,):
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
                                (table,)).fetchone():
                return None
        return read(conn)
    finally:
        conn.close()


class SQLiteLoader(DatabaseLoader):
    """Write Arrow batches into a SQLite table in one transaction (append, atomic replace, or merge)."""

    class Config(SinkOptions):
        """Options of the sqlite loader: connection, table, mode (append, replace, merge), key, schema_policy."""

    read_committed = staticmethod(_committed)
    read_mark = staticmethod(_mark)
    writer: _Writer | None = None

    async def load(self, batches: AsyncIterator[pa.RecordBatch]) -> int:
        import sqlalchemy.exc

        writer = self.writer = _Writer(self.ctx, self.config)
        errors = (sqlite3.Error, sqlalchemy.exc.SQLAlchemyError, OverflowError)
        # siblings into the same file would wait for this load's write lock while it waits for them
        return await write_stream(writer, batches, self.ctx, errors, stop=writer.stop, units=self.takes_units(),
                                  spool=self.ctx.prepare_hook is not None)
