"""DuckDB loader: Arrow batches into a table of a DuckDB file, in one transaction per commit unit.

Options (``tools.databases.options.SinkOptions``): ``connection`` (``url: duckdb:///path.duckdb``,
relative to the pipeline file; the file and its directory are created if missing), ``table``
(``name`` or ``schema.name``, double quotes keep dots; a missing schema is created), ``mode``,
``key``, ``schema_policy``.

- ``append`` (default): rows are added; the table is created from the first batch's schema.
- ``replace`` (``replace_strategy: auto | swap | insert``, ``databases.replace``; the run's details
  say which was taken and why) into an existing table: ``swap`` (auto's choice) writes a new table
  made from the old one's CREATE TABLE text and, in the same transaction, drops the old table,
  renames the new one in and builds the old table's indexes on it (``databases.duckdb.swap``); a
  foreign key pointing at the table or a table comment make auto take ``insert``: DELETE and INSERT
  into the table itself, in one transaction. Either way a reader sees the old rows or the new ones,
  never half, and the table keeps its columns (those the input lacks get NULL or their default),
  constraints, defaults and indexes; views answer from the new rows. A missing table is created
  from the stream's schema. A stream with no batch at all empties the table.
- ``merge`` with ``key``: rows go into a temporary staging table, then one ``MERGE INTO`` updates
  the rows whose key matches (the input's columns only) and inserts the others. Within one load the
  last row of a key wins; rows with a NULL key never match and are inserted. No index is needed.
- ``schema_policy: evolve`` (default) adds the input's new columns (nullable); ``freeze`` fails on
  any difference, naming the columns. Columns the input lacks get NULL (or their default).

Each batch is handed to DuckDB as an Arrow table (no copy) and inserted with ``INSERT INTO ... BY
NAME SELECT``; values never pass through SQL text. Types are DuckDB's Arrow mapping: int8..int64
-> TINYINT..BIGINT, uint* -> UTINYINT..UBIGINT, float32/64 -> FLOAT/DOUBLE (NaN and infinity kept),
decimal128(p,s) -> DECIMAL(p,s) (p <= 38), bool -> BOOLEAN, string -> VARCHAR, binary -> BLOB,
date32 -> DATE, timestamp[s/ms/us] -> TIMESTAMP (ns -> TIMESTAMP_NS), with a time zone ->
TIMESTAMPTZ, time -> TIME, duration -> INTERVAL, list -> LIST, struct -> STRUCT, map -> MAP,
dictionary -> its values' type, json extension -> JSON. A type DuckDB cannot take fails the load
naming the column. A failure anywhere (the input stream, a type, a constraint) rolls the unit under
way back, and ``ctx.commit`` is called only after the COMMIT. With each commit, a row (run_id, task,
table_name, rows, position) goes into ``_agent_etl_checkpoints`` in the table's schema, in the same
transaction (``databases.checkpoints``).

Commit units (``tools.base``, ``Loader``): ``append`` and ``merge`` take them. A unit ends after a
batch for which ``ctx.commit_due()`` is true, and when the stream has ended: a merge runs its MERGE
INTO from the stage and empties it, the checkpoint row is written, ``ctx.prepare(final)`` awaited
(the sibling loads), then COMMIT; the next batch begins the next transaction. If ``prepare``
raises, the unit rolls back and earlier units stay. ``replace`` is one unit. ``committed()`` reads
back the checkpoint rows of the run and task. A write-write conflict with another transaction is a
``TransientError``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pyarrow as pa

from agent_etl.exceptions import ToolError, TransientError
from agent_etl.tools.base import ToolContext
from agent_etl.tools.databases import checkpoints, replace
from agent_etl.tools.databases.duckdb import swap
from agent_etl.tools.databases.blocking import Units, write_stream
from agent_etl.tools.databases.duckdb.database import cursor, first_line, open_database, path_of, qualified, quote
from agent_etl.tools.databases.options import SinkOptions, split_table
from agent_etl.tools.databases.sink import DatabaseLoader
from agent_etl.tools.databases.transient import transient

_SEQ = "__agent_etl_seq"  # row order in the merge staging table: the last row of a key wins
_COLUMNS = ("SELECT column_name FROM information_schema.columns WHERE table_schema = coalesce($1, current_schema()) "
            "AND table_name = $2 ORDER BY ordinal_position")


def _fold(name: str) -> str:
    return name.lower()  # DuckDB matches names case-insensitively


def _create_checkpoints(table: str) -> str:
    return (f"CREATE TABLE IF NOT EXISTS {table} (run_id VARCHAR NOT NULL, task VARCHAR NOT NULL, "
            "table_name VARCHAR NOT NULL, rows BIGINT NOT NULL, position JSON NOT NULL DEFAULT '{}', "
            "committed_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp)")


class _Writer(Units):
    """The blocking half: one cursor; one transaction per commit unit, the first begun by the first batch."""

    def __init__(self, ctx: ToolContext, config: DuckDBLoader.Config):
        self.ctx, self.config = ctx, config
        try:
            self.schema, self.name = split_table(config.table)
        except ValueError as e:
            raise ToolError(f"task {ctx.task!r}: {e}") from None
        self.table = qualified(self.schema, self.name)
        self.checkpoints = qualified(self.schema, checkpoints.TABLE)
        self.into = self.table  # where batches go: the table, or a staging table
        self.view = f"__agent_etl_batch_{uuid.uuid4().hex[:8]}"
        self.cur = None
        self.begun = self.committed = False
        self.columns: dict[str, str] = {}  # folded -> name, of ``into``
        self.final = False
        self.open_tx = False  # a transaction of the load is open
        self.path_taken: replace.Path | None = None  # replace: swap or insert, and why
        self.indexes: list[str] = []  # a swap's CREATE INDEX statements, run after the rename

    def open(self) -> None:
        self.cur = cursor(open_database(self.ctx, self.config.connection, create=True))

    def write(self, batch: pa.RecordBatch) -> None:
        if not self.begun:
            self._begin(batch)
        elif not self.open_tx:  # the first batch of the next unit
            self.cur.begin()
            self.open_tx = True
        if self.config.mode == "merge":
            seq = pa.array(np.arange(self.rows, self.rows + batch.num_rows, dtype=np.int64))
            batch = batch.append_column(_SEQ, seq)
        with self._registered(batch) as view:
            self._fit(batch)
            self.cur.execute(f"INSERT INTO {self.into} BY NAME SELECT * FROM {view}")
        self.rows += batch.num_rows

    @contextlib.contextmanager
    def _registered(self, batch: pa.RecordBatch):
        """``batch`` as a view for the statements inside (its quoted name); a type DuckDB cannot
        store is named as the batch's unmappable column."""
        import duckdb

        try:
            self.cur.register(self.view, batch)
            yield quote(self.view)
        except duckdb.NotImplementedException as e:
            raise self._unmappable(batch.schema) or e
        finally:
            with contextlib.suppress(duckdb.Error):  # an aborted transaction refuses even this
                self.cur.unregister(self.view)

    def _begin(self, batch: pa.RecordBatch) -> None:
        names = [_fold(n) for n in batch.schema.names]
        dupes = sorted({n for n in batch.schema.names if names.count(_fold(n)) > 1})
        if dupes or not names:
            raise self._fail(f"the input has columns that differ only in case or repeat: {dupes}; rename them "
                             "upstream" if dupes else "the input has no columns; select some upstream")
        self._checkpoint_table()
        self.cur.begin()
        self.begun = self.open_tx = True
        existing = self._existing()
        mode = self.config.mode
        if mode == "merge":
            missing = [k for k in self.config.key if _fold(k) not in names]
            if missing:
                raise self._fail(f"the input lacks merge key column(s) {missing} (it has {batch.schema.names}); "
                                 "select them upstream or fix `key`")
        if mode == "append" and existing:
            self.columns = existing
            return
        if mode == "replace" and existing and self.config.schema_policy == "freeze":
            new = [n for n in batch.schema.names if _fold(n) not in existing]
            gone = [n for k, n in existing.items() if k not in names]
            if new or gone:
                raise self._fail(f"schema_policy: freeze, but the input's columns differ from the table's: new {new}, "
                                 f"missing {gone}; change the table or set schema_policy: evolve")
        if mode == "append" or (mode == "merge" and not existing):
            self._create(self.table, batch, temp=False)
        if mode == "merge":
            self.target_columns = self._existing()
            self.into = quote(f"__agent_etl_merge_{uuid.uuid4().hex[:8]}")
            self._create(self.into, batch.slice(0, 0).append_column(_SEQ, pa.array([], pa.int64())), temp=True)
        elif mode == "replace":
            staging = qualified(self.schema, f"__agent_etl_staging_{self.name}")
            if not existing:
                self.path_taken, self.into = replace.NEW, staging
                self.cur.execute(f"DROP TABLE IF EXISTS {self.into}")
                self._create(self.into, batch, temp=False)
                return
            self.path_taken = replace.choose(self.config.replace_strategy,
                                             swap.blockers(self.cur, self.schema, self.name), self._fail)
            if self.path_taken.swap:
                self.into = staging
                self.cur.execute(f"DROP TABLE IF EXISTS {self.into}")
                self.indexes = swap.create_like(self.cur, self.schema, self.name, self.into)
            else:
                self.cur.execute(f"DELETE FROM {self.table}")
            self.columns = existing

    def _create(self, table: str, batch: pa.RecordBatch, *, temp: bool) -> None:
        with self._registered(batch.slice(0, 0)) as view:
            self.cur.execute(f"CREATE {'TEMP ' if temp else ''}TABLE {table} AS SELECT * FROM {view}")
        self.columns = {_fold(n): n for n in batch.schema.names}

    def _existing(self) -> dict[str, str]:
        rows = self.cur.execute(_COLUMNS, [self.schema, self.name]).fetchall()
        return {_fold(r[0]): r[0] for r in rows}

    def _fit(self, batch: pa.RecordBatch) -> None:
        """Add the batch's new columns to the table written into, if the policy allows."""
        new = [f for f in batch.schema if _fold(f.name) not in self.columns]
        if not new:
            return
        if self.config.schema_policy == "freeze":
            listed = ", ".join(f"{f.name} ({f.type})" for f in new)
            raise self._fail(f"schema_policy: freeze, but the input has columns the table lacks: {listed}; add them "
                             "to the table, drop them upstream, or set schema_policy: evolve")
        types = dict(self.cur.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {quote(self.view)})")
                     .fetchall())
        for f in new:
            self.cur.execute(f"ALTER TABLE {self.into} ADD COLUMN {quote(f.name)} {types[f.name]}")
            self.columns[_fold(f.name)] = f.name

    def ready(self, final: bool) -> bool:
        """Everything of the unit but its COMMIT (``write_stream``); False if there is no unit."""
        self.final = final
        if not self.pending():
            return False
        mode = self.config.mode
        if not self.begun:  # no batch at all: nothing to append or merge; replace empties the table
            if not self._existing():
                return True  # nothing to write, not even a checkpoint
            self._checkpoint_table()
            self.cur.begin()
            self.begun = self.open_tx = True
            if mode == "replace":
                self.cur.execute(f"DELETE FROM {self.table}")
        elif mode == "replace" and self.into != self.table:
            self.cur.execute(f"DROP TABLE IF EXISTS {self.table}")
            self.cur.execute(f"ALTER TABLE {self.into} RENAME TO {quote(self.name)}")
            for sql in self.indexes:
                self.cur.execute(sql)
        elif mode == "merge":
            self._merge()
        self.cur.execute(checkpoints.insert(self.checkpoints, quote, "?"),
                         list(checkpoints.checkpoint(self.ctx, self.config.table, self.unit_rows).values()))
        return True

    def commit(self) -> None:
        if self.open_tx:
            self.cur.commit()
            self.open_tx = False
        self.committed = True
        self.count_commit()

    def _checkpoint_table(self) -> None:
        """Create the table's schema and the checkpoint table in it (or add ``position`` to one from
        before it), each in a transaction of its own, before the load's: DuckDB fails a transaction that
        creates a schema or a table another one created after it began, so two loads of a first run into
        one new schema would otherwise fail one another (and be retried)."""
        import duckdb

        for attempt in range(3):
            try:
                if self.schema:
                    self.cur.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(self.schema)}")
                have = {r[0] for r in self.cur.execute(_COLUMNS, [self.schema, checkpoints.TABLE]).fetchall()}
                if not have:
                    self.cur.execute(_create_checkpoints(self.checkpoints))
                elif "position" not in have:
                    self.cur.execute(f"ALTER TABLE {self.checkpoints} ADD COLUMN position JSON NOT NULL DEFAULT '{{}}'")
                return
            except duckdb.TransactionException:  # another load created one at the same moment: look again
                if attempt == 2:
                    raise

    def _merge(self) -> None:
        columns = [n for k, n in self.columns.items() if k != _fold(_SEQ)]
        new = [n for n in columns if _fold(n) not in self.target_columns]
        if new:
            if self.config.schema_policy == "freeze":
                raise self._fail(f"schema_policy: freeze, but the input has columns the table lacks: {new}; add them "
                                 "to the table, drop them upstream, or set schema_policy: evolve")
            types = dict(self.cur.execute(f"SELECT column_name, column_type FROM (DESCRIBE {self.into})").fetchall())
            for n in new:
                self.cur.execute(f"ALTER TABLE {self.table} ADD COLUMN {quote(n)} {types[n]}")
                self.target_columns[_fold(n)] = n
        key = {_fold(k) for k in self.config.key}
        keys = [quote(k) for k in self.config.key]
        null_key = " OR ".join(f"{k} IS NULL" for k in keys)
        last = (f"SELECT * EXCLUDE ({quote(_SEQ)}) FROM {self.into} QUALIFY row_number() OVER "
                f"(PARTITION BY {', '.join(keys)} ORDER BY {quote(_SEQ)} DESC) = 1 OR {null_key}")
        on = " AND ".join(f"t.{k} = s.{k}" for k in keys)
        sets = ", ".join(f"{quote(n)} = s.{quote(n)}" for n in columns if _fold(n) not in key)
        cols = ", ".join(quote(n) for n in columns)
        values = ", ".join(f"s.{quote(n)}" for n in columns)
        matched = f" WHEN MATCHED THEN UPDATE SET {sets}" if sets else ""
        self.cur.execute(f"MERGE INTO {self.table} AS t USING ({last}) AS s ON ({on}){matched} "
                         f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({values})")
        # the stage is dropped with the last unit, emptied for the next one otherwise
        self.cur.execute(f"DROP TABLE {self.into}" if self.final else f"DELETE FROM {self.into}")

    def close(self) -> None:
        if self.cur is None:
            return
        if self.open_tx:
            with contextlib.suppress(Exception):  # the transaction is already gone (DuckDB aborted it)
                self.cur.rollback()
        self.cur.close()
        self.cur = None

    def interrupt(self) -> None:
        if self.cur is not None:
            self.cur.interrupt()

    def _unmappable(self, schema: pa.Schema) -> ToolError | None:
        """Which column DuckDB cannot take, if that is what went wrong (asked on a fresh cursor: the
        failed statement aborted this one's transaction)."""
        probe_cur = open_database(self.ctx, self.config.connection, create=True).cursor()
        try:
            for f in schema:
                probe = pa.RecordBatch.from_arrays([pa.array([], f.type)], names=[f.name])
                try:
                    probe_cur.register("probe", probe)
                    probe_cur.execute("DESCRIBE SELECT * FROM probe").fetchall()
                except Exception as e:  # noqa: BLE001 - any failure here names the column
                    return self._fail(f"column {f.name!r} has type {f.type}, which DuckDB cannot store "
                                      f"({first_line(e)}); cast it upstream (e.g. the cast transform) to a supported type")
                finally:
                    probe_cur.unregister("probe")
        finally:
            probe_cur.close()
        return None

    def _fail(self, problem: str) -> ToolError:
        return ToolError(f"task {self.ctx.task!r}: DuckDB table {self.config.table!r} in "
                         f"{path_of(self.ctx, self.config.connection)}: {problem}; " + self.undone())

    def error(self, e: BaseException) -> ToolError:
        import duckdb

        if transient(e):
            return TransientError(f"task {self.ctx.task!r}: DuckDB table {self.config.table!r} in "
                                  f"{path_of(self.ctx, self.config.connection)}: {first_line(e)}; {self.undone()}; "
                                  "another transaction wrote the same rows or tables: it may succeed if tried again")
        if isinstance(e, duckdb.ConstraintException):  # _fail says what was rolled back and what stays
            return self._fail(f"a row violates a constraint ({first_line(e)}): fix the rows upstream (e.g. a "
                              "quality check) or the table's constraint")
        if isinstance(e, duckdb.ConversionException):
            return self._fail(f"a value does not fit the table's column type ({first_line(e)}): cast the column "
                              "upstream or change the table")
        return self._fail(first_line(e))


def _committed(ctx: ToolContext, config: DuckDBLoader.Config) -> dict[str, Any] | None:
    """The checkpoint rows of ``ctx``'s run and task for the table (``Loader.committed``); None when
    the table itself is gone (dropped since), whatever checkpoint rows remain."""
    def read(cur: Any, table: str) -> dict[str, Any] | None:
        return checkpoints.query_committed(_rows(cur), table, quote, "?", [ctx.run_id, ctx.task, config.table],
                                           tiebreak="rowid")

    return _checkpoints(ctx, config, read, loaded=True)


def _mark(ctx: ToolContext, config: DuckDBLoader.Config, source: str) -> dict[str, Any] | None:
    """The newest incremental mark of ``source`` in the checkpoints of the task and table (``Loader.mark``)."""
    def read(cur: Any, table: str) -> dict[str, Any] | None:
        return checkpoints.query_mark(_rows(cur), table, quote, "?", ctx.task, config.table, source,
                                      as_text="CAST({} AS VARCHAR)", tiebreak="rowid")

    return _checkpoints(ctx, config, read, loaded=False)


def _checkpoints(ctx: ToolContext, config: DuckDBLoader.Config, read: Callable[[Any, str], Any], loaded: bool) -> Any:
    """``read(cursor, checkpoint table quoted)`` on a cursor of the run's database, or None if there
    is no database file or checkpoint table, or ``loaded`` and the loaded table is gone."""
    if not path_of(ctx, config.connection).is_file():
        return None  # no database, no checkpoint: and none is created by asking
    schema, name = split_table(config.table)
    cur = cursor(open_database(ctx, config.connection, create=False))
    try:
        for table in (checkpoints.TABLE, name) if loaded else (checkpoints.TABLE,):
            if not cur.execute(_COLUMNS, [schema, table]).fetchall():
                return None
        return read(cur, qualified(schema, checkpoints.TABLE))
    finally:
        cur.close()


def _rows(cur: Any) -> checkpoints.Rows:
    """``cur``'s query call for ``checkpoints``; its rows are fetched one at a time, as far as they are read."""
    return lambda query, params: iter(cur.execute(query, list(params)).fetchone, None)


class DuckDBLoader(DatabaseLoader):
    """Write Arrow batches into a DuckDB table in one transaction (append, atomic replace, merge)."""

    class Config(SinkOptions):
        """Options of the duckdb loader: connection, table, mode (append, replace, merge), key, schema_policy."""

    read_committed = staticmethod(_committed)
    read_mark = staticmethod(_mark)
    writer: _Writer | None = None

    async def load(self, batches: AsyncIterator[pa.RecordBatch]) -> int:
        import duckdb

        writer = self.writer = _Writer(self.ctx, self.config)
        return await write_stream(writer, batches, self.ctx, (duckdb.Error, pa.ArrowException), stop=writer.interrupt,
                                  units=self.takes_units())
