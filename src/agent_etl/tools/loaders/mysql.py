"""MariaDB / MySQL loader: ``LOAD DATA LOCAL INFILE`` of each batch, committed atomically per commit unit.

Options (DESIGN.md §2): ``connection`` (``url: mysql://user@host:3306/db``), ``table`` (``name`` or
``database.name``; double quotes keep dots), ``mode``, ``key`` and ``schema_policy``.

- ``mode: append`` (default) loads every batch into the table in one transaction, committed when the
  input stream has ended cleanly; if the stream or a row fails, the transaction rolls back (and a
  table this load created is dropped). A missing table is created from the first batch's schema.
- ``mode: replace`` (``replace_strategy: auto | swap | insert``, ``databases.replace``; the run's
  details say which was taken and why) into an existing table: ``swap`` (auto's choice) loads into
  a new table ``CREATE TABLE ... LIKE`` the old one, then swaps it in with one ``RENAME TABLE``
  (atomic: readers see the old table or the new one) and drops the old one; grants and views name
  the table, so they follow (``databases.mysql.swap``). Triggers on the table, foreign keys to or
  from it and system versioning make auto take ``insert``: DELETE and LOAD DATA into the table
  itself in one transaction (readers see the old rows until the COMMIT). Either way the table
  keeps its columns (those the input lacks get NULL or their default). A missing table is made from
  the stream's schema. A stream without any batch empties the table the same way.
- ``mode: merge`` (needs ``key``) loads into a staging table, then in one transaction runs
  ``INSERT ... SELECT ... ON DUPLICATE KEY UPDATE`` in input order, so the last row of a key wins.
  A missing table is created with a UNIQUE key on ``key``; an existing one must have a unique key (or
  primary key) on exactly those columns.
- ``schema_policy: evolve`` (default) adds the input's new columns as nullable columns before the
  data moves (ALTER TABLE commits at once, so a load that then fails drops them again); ``freeze``
  fails, listing them (and, with replace, the table's missing columns). In append mode the columns
  are settled by the first batch: a later batch with new columns fails.

Batches are written by ``pyarrow.csv`` (every value quoted, NULL as the bare word NULL, which LOAD
DATA reads as NULL, so '' and 'NULL' stay strings) to a temporary file that is deleted right after
its LOAD DATA. A batch's LOAD DATA runs in the writer's own thread while the next batch's file is
written (the server loads while the client converts: about a fifth of the time on 1M rows); the
connection does nothing else until it has ended. The session runs in STRICT_ALL_TABLES; as LOAD DATA LOCAL turns bad values into
warnings, any warning (a truncated string, an integer out of range, a duplicate key) fails the
load with the server's message, the input row, and a rollback. The client enables ``local_infile``;
the server must allow it too (``SHOW VARIABLES LIKE 'local_infile'`` is ON; MariaDB's default).
Created tables follow the mapping in ``databases.mysql.types``.

With each commit, a row (run_id, task, table_name, rows, position) goes into ``_agent_etl_checkpoints``
in the table's database (``databases.checkpoints``), inside the commit's transaction for append and
merge; DDL commits implicitly, so that table is created (or given ``position``) before the load's
transaction begins. For replace the checkpoint follows the swap (RENAME TABLE commits on its own):
it is written right after it, not atomically with it.

Commit units (``tools.base``, ``Loader``): ``append`` and ``merge`` take them. When one ends
(``ctx.commit_due()`` after a batch, or the end of the stream), the LOAD DATA under way is waited
for, a merge runs its upsert from the stage, the checkpoint row is written, ``ctx.prepare(final)``
awaited (the sibling loads), then COMMIT; the next unit begins a new transaction (append) or loads
into the emptied stage (merge). If ``prepare`` raises, the unit rolls back (with the columns it
added) and earlier units stay. ``replace`` is one unit, prepared before its RENAME. ``committed()``
reads back the checkpoint rows of the run and task.

With sibling loads (``ctx.prepare_hook``), each unit of append and merge is an XA transaction
(``databases.mysql.xa``): XA START instead of BEGIN (the DDL before it, as above), and at the end of
the unit XA END and XA PREPARE before ``ctx.prepare``, then XA COMMIT (XA ROLLBACK if it raises).
Every load, and ``committed()``, first settles the prepared XA transactions of the task that a crash
left (commit if the run store decided it, else roll back). Without siblings: plain transactions.

Errors 1040, 1053, 1205 (lock wait timeout), 1213 (deadlock), 2002-2013 (connection refused, gone
away, lost) are ``TransientError``.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.csv as pv

from agent_etl.exceptions import ToolError, TransientError
from agent_etl.tempfiles import make_file
from agent_etl.tools.base import ToolContext
from agent_etl.tools.capabilities import DATABASE
from agent_etl.tools.databases import checkpoints, replace as strategies
from agent_etl.tools.databases.blocking import Units, write_stream
from agent_etl.tools.databases.mysql import connections, swap, xa
from agent_etl.tools.databases.mysql.connections import ident
from agent_etl.tools.databases.mysql.types import column_type, text_batch
from agent_etl.tools.databases.options import SinkOptions
from agent_etl.tools.databases.sink import DatabaseLoader
from agent_etl.tools.databases.transient import transient

_CSV = pv.WriteOptions(include_header=False, quoting_style="all_valid", null_string="NULL", batch_size=8192)
# hex literals, so no sql_mode (NO_BACKSLASH_ESCAPES) changes what the terminators are
_FORMAT = "CHARACTER SET utf8mb4 FIELDS TERMINATED BY X'2C' OPTIONALLY ENCLOSED BY X'22' ESCAPED BY '' " \
          "LINES TERMINATED BY X'0A'"
_ROW = "_agent_etl_row"
_POSITION = f"{ident('position')} LONGTEXT NOT NULL DEFAULT ('{{}}')"  # JSON text; '{}' in rows from before it


class _Writer(Units):
    """The blocking half: one pooled connection for the whole load."""

    def __init__(self, ctx: ToolContext, config: SinkOptions):
        self.ctx, self.config = ctx, config
        self.final = False
        self.pool = connections.pool(ctx, config.connection)
        self.database, self.name = connections.table_name(config.table)
        self.conn: Any = None
        self.target = connections.qualified(self.database, self.name)
        self.into = self.target  # append writes the table itself, replace and merge a staging table
        self.staging: str | None = None
        self.existing: dict[str, str] = {}  # folded name -> name, of the table
        self.columns: dict[str, str] = {}  # of the table written into
        self.fields: dict[str, pa.Field] = {}  # every input column seen, folded name -> field
        self.drops: list[str] = []  # tables close() drops: staging, or the table replaced
        self.created = False  # this load created the table (dropped again if it fails)
        self.added: list[str] = []  # columns this load added to the table (dropped again if it fails)
        self.tx = False
        self.committed = False  # the last unit committed, and nothing was written since
        self.path_taken: strategies.Path | None = None  # replace: swap or insert, and why
        self._loads: ThreadPoolExecutor | None = None  # runs one LOAD DATA at a time
        self._pending: tuple[Future, int] | None = None  # the LOAD DATA under way and its rows
        # siblings to commit with: each unit of append and merge is an XA transaction (databases.mysql.xa)
        self.xa = xa.XA(ctx) if ctx.prepare_hook is not None and config.mode != "replace" else None

    def open(self) -> None:
        self.conn = self.pool.acquire()
        xa.settle(self.conn, self.ctx)  # what a crash left prepared holds locks: end it first
        if self.database is None:
            self.database = self._query("SELECT DATABASE()")[0][0]
            if self.database is None:
                raise ToolError(f"task {self.ctx.task!r}: MariaDB/MySQL table {self.config.table!r}: no database; "
                                "write table: database.name or put the database in the url (mysql://host/db)")
        self.target = connections.qualified(self.database, self.name)
        self.into = self.target
        self.existing = self._columns(self.name)

    def close(self) -> None:
        if self._pending is not None:  # a failed or cancelled load: let the LOAD DATA end first
            with contextlib.suppress(Exception):
                self._pending[0].result()
            self._pending = None
        if self._loads is not None:
            self._loads.shutdown()
        if self.conn is None:
            return
        conn, self.conn = self.conn, None
        try:
            if self.xa is not None:
                self.xa.rollback(conn)
            conn.rollback()
            drops = self.drops + ([self.target] if self.created and not self.committed else [])
            with conn.cursor() as cur:
                for table in drops:
                    cur.execute(f"DROP TABLE IF EXISTS {table}")
                if self.added and not self.committed:
                    cur.execute(f"ALTER TABLE {self.target} " + ", ".join(f"DROP COLUMN {ident(n)}" for n in self.added))
        except Exception:
            self.pool.release(conn, broken=True)
            if self.committed:
                return  # the data is in; a staging table left behind is named _agent_etl_...
            raise
        self.pool.release(conn)

    # -- writing

    def write(self, batch: pa.RecordBatch) -> None:
        self.committed = False
        if not self.columns:
            self._begin(batch.schema)
        for f in batch.schema:
            self.fields.setdefault(f.name.lower(), f)
        new = [f for f in batch.schema if f.name.lower() not in self.columns]
        if new:
            self._settle()  # ALTER TABLE waits for the LOAD DATA under way
            self._add(new)
        if batch.num_rows == 0:
            return
        data, targets, sets = text_batch(batch)
        fd, path = make_file("mysql", ".csv")  # named for this process: a killed one's are swept
        try:
            with os.fdopen(fd, "wb") as f:
                pv.write_csv(data, f, _CSV)
            sql = f"LOAD DATA LOCAL INFILE %s INTO TABLE {self.into} {_FORMAT} ({', '.join(targets)})"
            if sets:
                sql += " SET " + ", ".join(sets)
            self._settle()
        except BaseException:
            os.unlink(path)
            raise
        if self._loads is None:
            self._loads = ThreadPoolExecutor(1, thread_name_prefix="agent-etl-mysql-load")
        self._pending = (self._loads.submit(self._load, sql, path), batch.num_rows)

    def _load(self, sql: str, path: str) -> tuple:
        """LOAD DATA of one batch's file, then its first warnings (in the writer's load thread)."""
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql, (path,))
                cur.execute("SHOW WARNINGS LIMIT 3")
                return cur.fetchall()
        finally:
            os.unlink(path)

    def _settle(self) -> None:
        """Wait for the LOAD DATA under way; its error, or a warning, fails the load."""
        if self._pending is None:
            return
        future, rows = self._pending
        self._pending = None
        warnings = future.result()
        if warnings:
            listed = "; ".join(_at_row(w[2], self.rows) for w in warnings)
            raise self._fail(f"rows do not fit the table: {listed}; fix the rows upstream (a quality check) or the "
                             "table's column types")
        self.rows += rows

    def _begin(self, schema: pa.Schema) -> None:
        names = [n.lower() for n in schema.names]
        dupes = sorted({n for n in schema.names if names.count(n.lower()) > 1})
        if dupes or not names:
            raise self._fail(f"the input has columns that repeat (names ignore case): {dupes}; rename them upstream"
                             if dupes else "the input has no columns; select some columns upstream")
        for f in schema:
            column_type(f)  # an unmappable type fails before anything is created
        key = self.config.key or []
        missing = [k for k in key if k.lower() not in names]
        if missing:
            raise self._fail(f"key column(s) {missing} are not in the input; columns: {schema.names}")
        if self.config.mode == "replace" and self.existing:
            self._choose()
        if self.config.mode == "append" or self._inserting:
            if not self.existing:
                self._execute(self._create(self.target, schema))
                self.created = True
                self.columns = self._columns(self.name)
            else:
                self.columns = dict(self.existing)
                self._check_frozen(schema, exact=self._inserting)
                new = [f for f in schema if f.name.lower() not in self.columns]
                if new:  # before BEGIN: DDL would commit the transaction
                    self._add_to_target(new)
                    self.columns.update({f.name.lower(): f.name for f in new})
            self._checkpoint_table()
            self._start()
            self.tx = True
            if self._inserting:
                self._execute(f"DELETE FROM {self.target}")
            return
        if self.existing:
            self._check_frozen(schema, exact=self.config.mode == "replace")
        self._stage()
        if self.config.mode == "replace" and self.existing:
            swap.create_like(self._execute, self._query, self.database, self.name, self.into, self.target)
        else:
            if self.config.mode == "replace":
                self.path_taken = strategies.NEW
            row = f"{ident(_ROW)} BIGINT AUTO_INCREMENT PRIMARY KEY" if self.config.mode == "merge" else None
            self._execute(self._create(self.into, schema, extra=row, keyed=False))
        self.columns = self._columns(self.staging)

    def _choose(self) -> None:
        """A replace into the existing table: swap or insert (``databases.replace``)."""
        if self.path_taken is None:
            self.path_taken = strategies.choose(self.config.replace_strategy,
                                                swap.blockers(self._query, self.database, self.name), self._fail)

    @property
    def _inserting(self) -> bool:
        return self.path_taken is not None and not self.path_taken.swap

    def _stage(self) -> None:
        self.staging = f"_agent_etl_{uuid.uuid4().hex[:12]}_{self.name}"[:64]
        self.into = connections.qualified(self.database, self.staging)
        self.drops.append(self.into)

    def _create(self, table: str, schema: pa.Schema, extra: str | None = None, keyed: bool = True) -> str:
        key = [k.lower() for k in self.config.key or []] if keyed else []
        cols = [f"{ident(f.name)} {column_type(f, key=f.name.lower() in key)}" for f in schema]
        if extra:
            cols.append(extra)
        if key and self.config.mode == "merge":
            cols.append(f"UNIQUE KEY {ident('_agent_etl_key')} ({', '.join(ident(k) for k in self.config.key)})")
        return f"CREATE TABLE {table} ({', '.join(cols)}) DEFAULT CHARSET=utf8mb4"

    def _check_frozen(self, schema: pa.Schema, exact: bool = False) -> None:
        if self.config.schema_policy != "freeze":
            return
        new = [n for n in schema.names if n.lower() not in self.existing]
        gone = [n for k, n in self.existing.items() if k not in {x.lower() for x in schema.names}] if exact else []
        if new or gone:
            raise self._fail(f"schema_policy: freeze, but the input's columns differ from the table's: new {new}"
                             + (f", missing {gone}" if exact else "") + "; change the table or set schema_policy: evolve")

    def _add(self, fields: list[pa.Field]) -> None:
        listed = ", ".join(f"{f.name} ({f.type})" for f in fields)
        if self.config.schema_policy == "freeze":
            raise self._fail(f"schema_policy: freeze, but the input has columns the table lacks: {listed}; add them "
                             "to the table, drop them upstream, or set schema_policy: evolve")
        if self.staging is None:  # DDL would commit the open transaction of an append
            raise self._fail(f"a batch brought new columns after rows were loaded: {listed}; give the stream one "
                             "schema from its first batch, or load with mode: replace or merge")
        adds = ", ".join(f"ADD COLUMN {ident(f.name)} {column_type(f)}" for f in fields)
        self._execute(f"ALTER TABLE {self.into} {adds}")
        self.columns.update({f.name.lower(): f.name for f in fields})

    # -- committing

    def _start(self) -> None:
        """Begin the transaction of a unit: XA with siblings, else a plain one."""
        if self.xa is not None:
            self.xa.start(self.conn)
        else:
            self.conn.begin()

    def ready(self, final: bool) -> bool:
        """Everything of the unit but its commit (``write_stream``); False if there is no unit. With
        XA, the unit's transaction is prepared (durable) before the siblings are waited for."""
        there = self._ready(final)
        if self.xa is None:
            return there
        self.xa.rounds += 1  # ctx.prepare follows: the barrier's round for this load
        if there and self.tx:
            self.xa.prepare(self.conn)
        elif not there and self.xa.state == "active":  # an empty unit: its XA id names the next round
            self.xa.rollback(self.conn)
            self.tx = False
            if not final:
                self._start()
                self.tx = True
        return there

    def _ready(self, final: bool) -> bool:
        self._settle()
        self.final = final
        if not self.pending():
            return False
        mode = self.config.mode
        if not self.existing and not self.columns:  # no batch, no table: nothing happened, not even the schema
            return True
        if mode == "replace" and self.existing:
            self._choose()
        if (mode == "append" or self._inserting) and self.tx:
            self._checkpoint()
        elif self._inserting:  # no batch at all: empty the table in a transaction
            self._checkpoint_table()
            self._start()
            self.tx = True
            self._execute(f"DELETE FROM {self.target}")
            self._checkpoint()
        elif mode == "replace":
            if self.staging is None:  # no batch at all: empty the table, keeping its definition
                self._stage()
                swap.create_like(self._execute, self._query, self.database, self.name, self.into, self.target)
            self._checkpoint_table()
        elif self.staging is not None:
            self._merge()
        else:  # no batch into an existing table: a commit of no rows
            self._checkpoint_table()
            self._start()
            self.tx = True
            self._checkpoint()
        return True

    def commit(self) -> None:
        if self.config.mode == "replace" and (self.existing or self.columns) and not self._inserting:
            self._replace()
            return
        if self.tx:
            if self.xa is not None:
                self.xa.commit(self.conn)
            else:
                self.conn.commit()
            self.tx = False
        self.committed = True
        self.count_commit()
        # what this unit made (a table, columns) is committed now: a later failure keeps it
        self.created, self.added = False, []
        if self.final or not self.columns:
            return
        if self.staging is not None:  # merge: the stage starts empty for the next unit
            self.existing = self._columns(self.name)
            self._execute(f"TRUNCATE TABLE {self.into}")
        else:
            self._start()
            self.tx = True

    def _replace(self) -> None:
        rows = self.unit_rows
        self.drops.remove(self.into)
        if self.existing:
            old = connections.qualified(self.database, f"_agent_etl_old_{uuid.uuid4().hex[:12]}")
            self.drops.append(old)  # close() drops the replaced table
            self._execute(f"RENAME TABLE {self.target} TO {old}, {self.into} TO {self.target}")
        else:
            self._execute(f"RENAME TABLE {self.into} TO {self.target}")
        self.committed = True  # the new rows are in: the checkpoint follows, it cannot share the swap's commit
        self.count_commit()
        self._checkpoint(rows)

    def _merge(self) -> None:
        """Apply the stage to the table in a transaction, with the checkpoint row; the commit follows."""
        cols = [n for k, n in self.columns.items() if k != _ROW.lower()]
        if not self.existing:
            self._execute(self._create(self.target, pa.schema(list(self.fields.values()))))
            self.created = True
        else:
            self._check_unique_key()
            new = [self.fields[k] for k in self.fields if k not in self.existing]
            if new:
                self._add_to_target(new)
        key = {k.lower() for k in self.config.key}
        names = ", ".join(ident(n) for n in cols)
        updates = ", ".join(f"{ident(n)} = VALUES({ident(n)})" for n in cols if n.lower() not in key)
        updates = updates or f"{ident(self.config.key[0])} = {ident(self.config.key[0])}"
        self._checkpoint_table()
        self._start()
        self.tx = True
        with self.conn.cursor() as cur:
            cur.execute(f"INSERT INTO {self.target} ({names}) SELECT {names} FROM {self.into} ORDER BY {ident(_ROW)} "
                        f"ON DUPLICATE KEY UPDATE {updates}")
        self._checkpoint()

    def _add_to_target(self, fields: list[pa.Field]) -> None:
        adds = ", ".join(f"ADD COLUMN {ident(f.name)} {column_type(f)}" for f in fields)
        self._execute(f"ALTER TABLE {self.target} {adds}")  # commits at once: close() drops them if the load fails
        self.added += [f.name for f in fields]

    def _check_unique_key(self) -> None:
        rows = self._query(
            "SELECT INDEX_NAME, LOWER(COLUMN_NAME) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s "
            "AND TABLE_NAME = %s AND NON_UNIQUE = 0", (self.database, self.name))
        indexes: dict[str, set[str]] = {}
        for index, col in rows:
            indexes.setdefault(index, set()).add(col)
        if {k.lower() for k in self.config.key} not in indexes.values():
            cols = ", ".join(ident(k) for k in self.config.key)
            raise self._fail(f"mode: merge needs a unique key on {self.config.key}, and the table has none; add one "
                             f"(ALTER TABLE {self.target} ADD UNIQUE ({cols})) or change `key`")

    def _checkpoint_table(self) -> None:
        """Create the checkpoint table, or add ``position`` to one from before it. DDL commits any open
        transaction, so this runs before the load's transaction begins, never inside it."""
        table = connections.qualified(self.database, checkpoints.TABLE)
        have = self._columns(checkpoints.TABLE)  # looked up first: no DDL (and no DDL right) once it is there
        if not have:
            self._execute(f"CREATE TABLE IF NOT EXISTS {table} ({ident('run_id')} VARCHAR(255) NOT NULL, "
                          f"{ident('task')} VARCHAR(255) NOT NULL, {ident('table_name')} VARCHAR(255) NOT NULL, "
                          f"{ident('rows')} BIGINT NOT NULL, {_POSITION}, "
                          f"{ident('committed_at')} TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) "
                          "DEFAULT CHARSET=utf8mb4")
        elif "position" not in have:  # MySQL has no ADD COLUMN IF NOT EXISTS
            self._execute(f"ALTER TABLE {table} ADD COLUMN {_POSITION}")

    def _checkpoint(self, rows: int | None = None) -> None:
        """The checkpoint row of this unit (in the open transaction, if there is one)."""
        rows = self.unit_rows if rows is None else rows
        with self.conn.cursor() as cur:
            cur.execute(checkpoints.insert(connections.qualified(self.database, checkpoints.TABLE), ident, "%s"),
                        checkpoints.checkpoint(self.ctx, f"{self.database}.{self.name}", rows).values())

    # -- plumbing

    def _columns(self, table: str) -> dict[str, str]:
        rows = self._query("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND "
                           "TABLE_NAME = %s ORDER BY ORDINAL_POSITION", (self.database, table))
        return {r[0].lower(): r[0] for r in rows}

    def _query(self, sql: str, params: Any = None) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def _execute(self, sql: str) -> None:
        with self.conn.cursor() as cur:
            cur.execute(sql)

    def _fail(self, problem: str) -> ToolError:
        return ToolError(f"task {self.ctx.task!r}: MariaDB/MySQL table {self.config.table!r} at {self.pool.where()}: "
                         f"{problem}; {self.undone('nothing was written')}")

    def error(self, e: BaseException) -> ToolError:
        code, text = connections.error_code(e), connections.error_text(e)
        where = f"task {self.ctx.task!r}: MariaDB/MySQL table {self.config.table!r} at {self.pool.where()}"
        if self.committed and self.config.mode == "replace":  # the swap is in, only the checkpoint row failed
            return ToolError(f"{where}: {text}; the table was replaced, but its checkpoint row could not be written")
        if transient(e):
            return TransientError(f"{where}: {text}; {self.undone('the load was rolled back')}; it may succeed if "
                                  "tried again")
        if code == 1300 and "character string" in text:
            return ToolError(f"{where}: {text}; MariaDB/MySQL table and column names cannot hold characters beyond "
                             "U+FFFF (emoji): rename the column upstream (tool: rename)")
        if code == 1148 or (code == 2068) or "local" in text.lower() and "infile" in text.lower():
            return ToolError(f"{where}: {text}; the server must allow LOAD DATA LOCAL: SET GLOBAL local_infile = 1")
        return ToolError(f"{where}: {text}; {self.undone()}")


def _at_row(message: str, offset: int) -> str:
    """A LOAD DATA warning with its row counted in the whole input, not in the batch's file."""
    return re.sub(r"at row (\d+)", lambda m: f"at input row {offset + int(m.group(1))}", message)


def _committed(ctx: ToolContext, config: SinkOptions) -> dict[str, Any] | None:
    """The checkpoint rows of ``ctx``'s run and task for the table (``Loader.committed``); None when
    the table itself is gone (dropped since), whatever checkpoint rows remain."""
    def read(cur: Any, table: str, table_name: str) -> dict[str, Any] | None:
        return checkpoints.query_committed(_rows(cur), table, ident, "%s", (ctx.run_id, ctx.task, table_name))

    return _checkpoints(ctx, config, read, loaded=True)


def _mark(ctx: ToolContext, config: SinkOptions, source: str) -> dict[str, Any] | None:
    """The newest incremental mark of ``source`` in the checkpoints of the task and table (``Loader.mark``)."""
    def read(cur: Any, table: str, table_name: str) -> dict[str, Any] | None:
        # position is LONGTEXT where this loader made the table, JSON where the sql loader did
        return checkpoints.query_mark(_rows(cur), table, ident, "%s", ctx.task, table_name, source,
                                      as_text="CAST({} AS CHAR)")

    return _checkpoints(ctx, config, read, loaded=False)


def _checkpoints(ctx: ToolContext, config: SinkOptions, read: Callable[[Any, str, str], Any], loaded: bool) -> Any:
    """``read(cursor, checkpoint table quoted, table_name of the rows)`` on a pooled connection, or
    None if there is no checkpoint table (no database), or ``loaded`` and the loaded table is gone."""
    database, name = connections.table_name(config.table)
    with connections.pool(ctx, config.connection).connection() as conn, conn.cursor() as cur:
        if database is None:
            cur.execute("SELECT DATABASE()")
            database = cur.fetchone()[0]
            if database is None:
                return None
        exists = "EXISTS (SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s)"
        cur.execute(f"SELECT {exists}, {exists}", (database, checkpoints.TABLE, database, name))
        have_checkpoints, have_table = cur.fetchone()
        if loaded:  # a resume asks: what a crash left prepared is settled first, then reported
            xa.settle(conn, ctx)
        if not have_checkpoints or (loaded and not have_table):
            return None
        return read(cur, connections.qualified(database, checkpoints.TABLE), f"{database}.{name}")


def _rows(cur: Any) -> checkpoints.Rows:
    """``cur``'s query call for ``checkpoints`` (the driver's ``execute`` returns a row count, not the rows)."""
    def rows(query: str, params: Any) -> list[tuple]:
        cur.execute(query, params)
        return cur.fetchall()

    return rows


class MySQLLoader(DatabaseLoader):
    """Write Arrow batches into a MariaDB/MySQL table with LOAD DATA (append, atomic replace or merge)."""

    capabilities = replace(DATABASE, two_phase=True)
    extra = "mysql"

    Config = SinkOptions

    read_committed = staticmethod(_committed)
    read_mark = staticmethod(_mark)

    writer: _Writer | None = None

    async def load(self, batches: AsyncIterator[pa.RecordBatch]) -> int:
        import pymysql

        self.writer = _Writer(self.ctx, self.config)
        return await write_stream(self.writer, batches, self.ctx, (pymysql.Error,),
                                  units=self.takes_units())
