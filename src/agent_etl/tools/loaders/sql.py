"""Generic SQL loader (``tool: sql``): Arrow batches into a table of any SQLAlchemy database.

Slower than the dedicated loaders (rows go in through the driver's ``executemany`` in chunks of
10,000, with SQLAlchemy's batched "insertmanyvalues" where the dialect has it), but correct on any
dialect. Options (``tools.databases.options.SinkOptions``): ``connection`` (a SQLAlchemy URL, see
``tools.databases.engines``), ``table`` (``name`` or ``schema.name``), ``mode``, ``key``,
``schema_policy``. Missing tables are created from the Arrow schema with the mapping in
``tools.databases.sql.types``; names are always quoted by the dialect, values are always
bound parameters.

- ``append`` inserts in one transaction, committed after the input stream ended cleanly.
- ``replace`` (``replace_strategy``, ``databases.replace``; the run's details say which path was
  taken): into an existing table, ``insert`` (``auto``'s choice but on MySQL/MariaDB) DELETEs the
  table's rows and inserts the new ones in one transaction (this loader cannot see, on any dialect,
  what hangs on a table: its views, grants, indexes and triggers stay as they are); on MySQL/MariaDB,
  where an ALTER TABLE commits at once, a column new to the table cannot arrive after the first
  batch then. ``swap`` (``auto``'s choice on MySQL/MariaDB) fills a staging table made from the stream's schema and swaps it in: on
  PostgreSQL and SQLite the drop and rename happen in the same transaction as the inserts (readers
  see the old table or the new one); on MySQL/MariaDB with one atomic ``RENAME TABLE``. The swapped
  table has the stream's columns and nothing else of the old one. A missing table is made by swap.
- ``merge`` (PostgreSQL, SQLite, MySQL/MariaDB) fills a staging table, then upserts from it with
  ``INSERT ... ON CONFLICT (key) DO UPDATE`` (``ON DUPLICATE KEY UPDATE`` on MySQL), updating the
  input's columns; the last row of a key in a load wins; rows with a NULL key are inserted. The
  upsert needs a unique index on the key: created with a new table, or on an existing one that
  lacks it (the load fails, naming the fix, when the table already holds duplicate keys). Other
  dialects have no upsert here: merge fails with a message saying so.
- Input columns match the table's ignoring case where the database does (MySQL/MariaDB, SQLite):
  rows go into the table's own spelling, and so does ``key``.
- ``schema_policy: evolve`` adds new input columns (nullable); ``freeze`` fails naming them. On
  MySQL/MariaDB, where ALTER TABLE commits at once, a merge adds them to the table just before its
  upsert, and an append fails (naming them) when they arrive after rows were loaded.

If anything fails (the input stream, a constraint, a type), the transaction rolls back; MySQL and
MariaDB commit DDL at once (and SQLite, through Python's sqlite3, before the first row), so tables
this load created, and columns and the unique index it added, are dropped again. ``ctx.commit`` is
called after the COMMIT. With it, a row (run_id, task, table_name, rows, position) goes into
``_agent_etl_checkpoints`` in the table's schema, in the same transaction (``databases.checkpoints``;
on MySQL/MariaDB that table is made before the load, and a replace's RENAME commits ahead of the row).

Commit units (``tools.base``, ``Loader``): ``append`` and ``merge`` take them. A unit ends after a
batch for which ``ctx.commit_due()`` is true, and when the stream has ended: a merge upserts its
stage and empties it (the stage is dropped after the last unit), the checkpoint row is written,
``ctx.prepare(final)`` awaited (the sibling loads), then COMMIT. If ``prepare`` raises, the unit
rolls back, with what its DDL added, and earlier units stay (so do their tables and columns).
``replace`` is one unit, prepared before its swap (on MySQL/MariaDB, before the RENAME). On SQLite
with sibling loads, units are spooled and written after ``prepare``, as the sqlite loader does.
``committed()`` reads back the checkpoint rows of the run and task. Deadlocks, serialization
failures, lock timeouts, lost connections and a locked SQLite file are ``TransientError``
(``databases.transient``).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pyarrow as pa

from agent_etl.exceptions import ToolError, TransientError
from agent_etl.stream import slices
from agent_etl.tools.base import ToolContext
from agent_etl.tools.databases import checkpoints, replace
from agent_etl.tools.databases.blocking import Units, write_stream
from agent_etl.tools.databases.engines import (connect_error, engine, identifier, location, qualified,
                                               sqlite_file)
from agent_etl.tools.databases.options import SinkOptions, key_index_name, split_table
from agent_etl.tools.databases.sink import DatabaseLoader
from agent_etl.tools.databases.sql.types import Unmappable, column_type, params
from agent_etl.tools.databases.transient import transient
from agent_etl.tools.folders import make_folder_for

_CHUNK_ROWS = 10_000
_SEQ = "agent_etl_seq"  # row order in the merge staging table
_UPSERT = ("postgresql", "sqlite", "mysql", "mariadb")


class _Writer(Units):
    def __init__(self, ctx: ToolContext, config: SQLLoader.Config):
        self.ctx, self.config = ctx, config
        try:
            self.schema, self.name = split_table(config.table)
        except ValueError as e:
            raise ToolError(f"task {ctx.task!r}: {e}") from None
        self.conn = self.tx = None
        self.target = self.into = None  # sa.Table objects
        self.checkpoints = None  # sa.Table, once it is known to exist
        self.created: list[Any] = []  # tables to drop if the load fails (DDL that committed at once)
        self.later: dict[str, pa.Field] = {}  # new merge target columns, added at the end on MySQL
        self.added: list[str] = []  # columns added to the table by DDL that committed at once (see _ddl_commits)
        self.index: Any = None  # the unique index this load made on the table, the same way
        self.spelling: dict[str, str] = {}  # folded name -> the table's, where names ignore case (_folds)
        self.key: list[str] = list(config.key or [])  # as the table (or else the input) spells them
        self.committed = False
        self.final = False
        self.path_taken: replace.Path | None = None  # replace: swap or insert, and why

    def open(self) -> None:
        import sqlalchemy.exc

        self.engine = engine(self.ctx, self.config.connection)
        self.dialect = self.engine.dialect.name
        if self.config.mode == "merge" and self.dialect not in _UPSERT:
            raise self._fail(f"mode: merge needs an upsert, which tool: sql has for PostgreSQL, SQLite and MySQL/"
                             f"MariaDB, not {self.dialect}; use mode: append or replace")
        file = sqlite_file(self.engine)
        if file is not None:  # a new SQLite database: its folder too, as the file loaders make theirs
            make_folder_for(file, self.ctx.task)
        try:
            self.conn = self.engine.connect()
        except sqlalchemy.exc.DBAPIError as e:
            raise connect_error(e, self.engine.url, self.config.connection) from None

    # -- the first batch decides the tables ------------------------------------------------------

    def _begin(self, schema: pa.Schema) -> None:
        import sqlalchemy as sa

        folded = [n.lower() for n in schema.names]
        dupes = sorted({n for n in schema.names if folded.count(n.lower()) > 1})
        if dupes or not schema.names:
            raise self._fail(f"the input has columns that repeat or differ only in case: {dupes}; rename them "
                             "upstream" if dupes else "the input has no columns; select some upstream")
        self._early_checkpoint_table()
        self.tx = self.conn.begin()
        if self._mysql and self.checkpoints is None:  # DDL commits at once there: before the first row
            self._checkpoint_table()
        insp = sa.inspect(self.conn)
        exists = insp.has_table(self.name, schema=self.schema)
        existing = sa.Table(self.name, sa.MetaData(), schema=self.schema, autoload_with=self.conn) if exists else None
        if self._folds:
            self.spelling = {c.name.lower(): c.name for c in existing.c} if existing is not None else {}
            schema = pa.schema([f.with_name(n) for f, n in zip(schema, self._spelled(schema.names))],
                               metadata=schema.metadata)
            spelled = {n.lower(): n for n in schema.names}
            self.key = [self.spelling.get(k.lower()) or spelled.get(k.lower(), k) for k in self.key]
        mode, key = self.config.mode, self.key
        if mode == "merge":
            missing = [k for k in key if k not in schema.names]
            if missing:
                raise self._fail(f"the input lacks merge key column(s) {missing} (it has {schema.names}); select "
                                 "them upstream or fix `key`")
        if existing is not None and mode == "replace" and self.config.schema_policy == "freeze":
            new = [n for n in schema.names if n not in existing.c]
            gone = [c.name for c in existing.c if c.name not in schema.names]
            if new or gone:
                raise self._fail(f"schema_policy: freeze, but the input's columns differ from the table's: new {new}, "
                                 f"missing {gone}; change the table or set schema_policy: evolve")
        strategy = self.config.replace_strategy
        if strategy == "auto" and self._mysql:  # a DELETE + INSERT there could not take a column mid-stream
            strategy = "swap"  # (ALTER TABLE commits at once); views and grants name the table, so they follow
        if mode == "replace" and existing is not None and strategy != "swap":
            why = "replace_strategy: insert" if self.config.replace_strategy == "insert" else \
                "tool: sql does not know what depends on a table; replace_strategy: swap to swap it"
            self.path_taken = replace.Path(False, why)
            self.target = self.into = existing
            if self._mysql:  # new columns first: an ALTER TABLE there would commit the DELETE
                self._fit(schema)
            self.conn.execute(existing.delete())
            return
        if mode == "replace":
            self.path_taken = replace.NEW if existing is None else replace.Path(True, (
                "replace_strategy: swap" if self.config.replace_strategy == "swap" else
                "MariaDB/MySQL: new columns may arrive mid-stream; the table gets the stream's columns"))
            self.target = existing
            self.into = self._create(f"{self.name[:40]}_stg_{uuid.uuid4().hex[:8]}", schema)
            return
        self.target = existing if existing is not None else self._create(self.name, schema, key=key)
        if mode == "append":
            self.into = self.target
            return
        self._unique_key(insp, exists)
        self.into = self._create(f"{self.name[:40]}_mrg_{uuid.uuid4().hex[:8]}", schema, seq=True)

    def _create(self, name: str, schema: pa.Schema, *, key: list[str] = (), seq: bool = False) -> Any:
        import sqlalchemy as sa

        try:
            cols = [sa.Column(f.name, column_type(f.name, f.type, self.dialect, key=f.name in key)) for f in schema]
        except Unmappable as e:
            raise self._fail(str(e)) from None
        if seq:
            cols.append(sa.Column(_SEQ, sa.BigInteger()))
        table = sa.Table(name, sa.MetaData(), *cols, schema=self.schema)
        if key:
            sa.Index(key_index_name(name, list(key)), *[table.c[k] for k in key], unique=True)
        table.create(self.conn)
        self.created.append(table)
        return table

    def _unique_key(self, insp: Any, existed: bool) -> None:
        """Make sure a unique index on exactly the key exists (the upsert's conflict target)."""
        import sqlalchemy as sa

        key = set(self.key)
        if existed:
            candidates = [insp.get_pk_constraint(self.name, schema=self.schema).get("constrained_columns") or []]
            candidates += [u["column_names"] for u in insp.get_unique_constraints(self.name, schema=self.schema)]
            candidates += [i["column_names"] for i in insp.get_indexes(self.name, schema=self.schema) if i["unique"]]
            if any(set(c) == key and len(c) == len(key) for c in candidates):
                return
            absent = [k for k in self.key if k not in self.target.c]
            if absent:
                raise self._fail(f"merge key {absent} is not a column of the table; fix `key`")
        else:
            return  # created with its unique index
        index = sa.Index(key_index_name(self.name, self.key), *[self.target.c[k] for k in self.key],
                         unique=True)
        try:
            index.create(self.conn)
            if self._ddl_commits:
                self.index = index
        except sa.exc.IntegrityError:
            raise self._fail(f"merge needs a unique index on key {self.key}, and the table already holds rows "
                             "that share a key, so none can be created; remove the duplicates, or create the index "
                             "yourself") from None

    # -- rows --------------------------------------------------------------------------------------

    def write(self, batch: pa.RecordBatch) -> None:
        if self.tx is None:
            self._begin(batch.schema)
        elif not self.tx.is_active:  # the first batch of the next unit
            self.tx = self.conn.begin()
        self.committed = False
        if self.spelling:
            batch = batch.rename_columns(self._spelled(batch.schema.names))
        self._fit(batch.schema)
        for chunk in slices(batch, _CHUNK_ROWS) if batch.num_rows else ():
            if self.config.mode == "merge":
                seq = np.arange(self.rows, self.rows + chunk.num_rows, dtype=np.int64)
                chunk = chunk.append_column(_SEQ, pa.array(seq))
            try:
                rows = params(chunk, self.dialect)
            except (ValueError, pa.ArrowException) as e:
                raise self._fail(str(e)) from None
            self.conn.execute(self.into.insert(), rows)
            self.rows += chunk.num_rows

    def _fit(self, schema: pa.Schema) -> None:
        """Add the batch's new columns (to the staging table and the merge target) if the policy allows.

        On MySQL/MariaDB an ALTER TABLE commits the open transaction: the merge target gets its new
        columns only at the end, and an append cannot take new columns once rows are in."""
        merge = self.config.mode == "merge"
        for table in [self.into, self.target] if merge else [self.into]:
            later = self.later if table is self.target else {}
            new = [f for f in schema if f.name not in table.c and f.name not in later]
            if not new:
                continue
            listed = ", ".join(f"{f.name} ({f.type})" for f in new)
            if self.config.schema_policy == "freeze":
                raise self._fail(f"schema_policy: freeze, but the input has columns the table lacks: {listed}; add "
                                 "them to the table, drop them upstream, or set schema_policy: evolve")
            if self._mysql and merge and table is self.target:
                self.later.update((f.name, f) for f in new)
                continue
            if self._mysql and self.rows and self.config.mode != "merge" and not self._swapping:
                raise self._fail(f"a batch brought new columns after rows were loaded: {listed}; give the stream "
                                 "one schema from its first batch, or load with mode: replace or merge")
            for f in new:
                self._add_column(table, f)

    def _add_column(self, table: Any, f: pa.Field) -> None:
        import sqlalchemy as sa

        try:
            t = column_type(f.name, f.type, self.dialect)
        except Unmappable as e:
            raise self._fail(str(e)) from None
        ddl = t.compile(dialect=self.engine.dialect)
        where = qualified(self.engine, table.schema, table.name)
        self.conn.exec_driver_sql(f"ALTER TABLE {where} ADD COLUMN {identifier(self.engine, f.name)} {ddl}")
        table.append_column(sa.Column(f.name, t))
        if self._folds and table is self.target:
            self.spelling[f.name.lower()] = f.name
        if self._ddl_commits and table is self.target and table not in self.created:
            self.added.append(f.name)

    # -- the end -------------------------------------------------------------------------------

    def ready(self, final: bool) -> bool:
        """Everything of the unit but its COMMIT (``write_stream``); False if there is no unit. On
        MySQL/MariaDB, where RENAME TABLE and DROP TABLE commit at once, a replace's swap and the
        merge stage's DROP wait for ``commit``."""
        import sqlalchemy as sa

        self.final = final
        if not self.pending():
            return False
        if self.tx is None:  # no batch: nothing to append or merge; replace empties the table
            self.tx = self.conn.begin()
            if sa.inspect(self.conn).has_table(self.name, schema=self.schema):  # else no checkpoint either
                if self._mysql:  # its DDL before the DELETE, as in _begin
                    self._checkpoint_table()
                if self.config.mode == "replace":
                    self.conn.exec_driver_sql(f"DELETE FROM {qualified(self.engine, self.schema, self.name)}")
                self._checkpoint()
            return True
        if self._swapping:
            if not self._mysql:
                self._swap()
                self._checkpoint()
            return True
        if self.config.mode == "merge":
            for f in self.later.values():
                self._add_column(self.target, f)
            self.later = {}
            self._upsert()
            if final and not self._mysql:
                self.into.drop(self.conn)
            else:  # the stage starts empty for the next unit
                self.conn.execute(self.into.delete())
        self._checkpoint()
        return True

    @property
    def _swapping(self) -> bool:
        return self.config.mode == "replace" and self.path_taken is not None and self.path_taken.swap

    def commit(self) -> None:
        if self._mysql and self._swapping and self.into is not None:
            self._swap()  # commits at once: the checkpoint row follows in a transaction of its own
            self._checkpoint()
        self.tx.commit()
        self.committed = True
        self.count_commit()
        # what this unit made (tables, columns, an index) is committed now: a later failure keeps it,
        # but for the merge stage, still to drop
        stage = self.config.mode == "merge" and any(t is self.into for t in self.created)
        self.created = [self.into] if stage and not (self.final and not self._mysql) else []
        self.added, self.index = [], None
        if stage and self.final and self._mysql:
            with self.conn.begin():
                self.into.drop(self.conn)
            self.created = []

    @property
    def _mysql(self) -> bool:
        return self.dialect in ("mysql", "mariadb")

    @property
    def _folds(self) -> bool:
        """Column names ignore case in this database (MySQL/MariaDB and SQLite do)."""
        return self._mysql or self.dialect == "sqlite"

    def _spelled(self, names: list[str]) -> list[str]:
        """The input's column names, those the table has under another case spelled as the table does."""
        return [self.spelling.get(n.lower(), n) for n in names]

    @property
    def _ddl_commits(self) -> bool:
        """DDL may commit outside the load's transaction: always on MySQL/MariaDB, and on SQLite before
        the first row (Python's sqlite3 begins its transaction at the first INSERT)."""
        return self._mysql or self.dialect == "sqlite"

    def _checkpoint_table(self) -> None:
        """The checkpoint table next to the target, created if missing; one from before positions gets the
        column (nullable: its rows have none)."""
        import sqlalchemy as sa

        table = _checkpoints(self.schema, self._mysql)
        insp = sa.inspect(self.conn)
        if not insp.has_table(checkpoints.TABLE, schema=self.schema):
            table.create(self.conn)
        elif "position" not in {c["name"] for c in insp.get_columns(checkpoints.TABLE, schema=self.schema)}:
            ddl = table.c.position.type.compile(dialect=self.engine.dialect)
            self.conn.exec_driver_sql(f"ALTER TABLE {self._qualified(checkpoints.TABLE)} ADD COLUMN "
                                      f"{identifier(self.engine, 'position')} {ddl}")
        self.checkpoints = table

    def _early_checkpoint_table(self) -> None:
        """Make the checkpoint table in a transaction of its own, before the load's: two loads of a first
        run would otherwise create it at the same moment, and on PostgreSQL the later CREATE fails with
        all its load's rows. Where that cannot be done now (a schema the database does not have yet),
        the load makes the table itself, in its transaction."""
        import sqlalchemy.exc

        for attempt in range(3):
            try:
                with self.conn.begin():
                    self._checkpoint_table()
                return
            except sqlalchemy.exc.IntegrityError:  # another load made it meanwhile: look again
                if attempt == 2:
                    raise
            except sqlalchemy.exc.DBAPIError:
                self.checkpoints = None
                return

    def _checkpoint(self) -> None:
        if self.checkpoints is None:
            self._checkpoint_table()
        row = dict(zip(checkpoints.COLUMNS, checkpoints.checkpoint(self.ctx, self.config.table,
                                                                   self.unit_rows).values()))
        row["position"] = json.loads(row["position"])  # the JSON type writes it as JSON again
        self.conn.execute(self.checkpoints.insert(), row)

    def _qualified(self, name: str) -> str:
        return qualified(self.engine, self.schema, name)

    def _swap(self) -> None:
        staging, table = self._qualified(self.into.name), self._qualified(self.name)
        if self._mysql:
            if self.target is None:
                self.conn.exec_driver_sql(f"RENAME TABLE {staging} TO {table}")
            else:  # one statement swaps both names: readers see the old table or the new one
                old = self._qualified(f"{self.name[:40]}_old_{uuid.uuid4().hex[:8]}")
                self.conn.exec_driver_sql(f"RENAME TABLE {table} TO {old}, {staging} TO {table}")
                self.conn.exec_driver_sql(f"DROP TABLE {old}")
            return
        if self.target is not None:
            self.conn.exec_driver_sql(f"DROP TABLE {table}")
        self.conn.exec_driver_sql(f"ALTER TABLE {staging} RENAME TO {identifier(self.engine, self.name)}")

    def _upsert(self) -> None:
        import sqlalchemy as sa

        s, t = self.into, self.target
        cols = [c.name for c in s.c if c.name != _SEQ]
        keys = [s.c[k] for k in self.key]
        last = sa.select(sa.func.max(s.c[_SEQ])).group_by(*keys)
        # the last row of each key; NULL keys never conflict, so all of those rows go in
        source = sa.select(*[s.c[n] for n in cols]).where(sa.or_(s.c[_SEQ].in_(last), *[k.is_(None) for k in keys]))
        others = [n for n in cols if n not in self.key]
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.mysql import insert
            stmt = insert(t).from_select(cols, source)
            update = {n: stmt.inserted[n] for n in (others or self.key[:1])}
            self.conn.execute(stmt.on_duplicate_key_update(update))
            return
        stmt = insert(t).from_select(cols, source)
        if others:
            stmt = stmt.on_conflict_do_update(index_elements=self.key,
                                              set_={n: stmt.excluded[n] for n in others})
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=self.key)
        self.conn.execute(stmt)

    def close(self) -> None:
        if self.conn is None:
            return
        with contextlib.suppress(Exception):
            if self.tx is not None and self.tx.is_active:
                self.tx.rollback()
        for table in reversed(self.created):  # committed at once where _ddl_commits; elsewhere gone already
            with contextlib.suppress(Exception), self.conn.begin():
                table.drop(self.conn, checkfirst=True)
        if not self.committed:  # the same for columns and a unique index added to the table
            for name in self.added:  # (gone already where the DDL was in the rollback)
                with contextlib.suppress(Exception), self.conn.begin():
                    self.conn.exec_driver_sql(f"ALTER TABLE {self._qualified(self.name)} "
                                              f"DROP COLUMN {identifier(self.engine, name)}")
            if self.index is not None:
                with contextlib.suppress(Exception), self.conn.begin():
                    self.index.drop(self.conn)
        self.conn.close()
        self.conn = None

    def _fail(self, problem: str, kind: type[ToolError] = ToolError) -> ToolError:
        where = location(self.engine) if hasattr(self, "engine") else "?"
        tail = self.kept() if self.commits else "nothing was written"
        return kind(f"task {self.ctx.task!r}: table {self.config.table!r} at {where}: {problem}; {tail}")

    def error(self, e: BaseException) -> ToolError:
        import sqlalchemy.exc

        text = " ".join(str(getattr(e, "orig", None) or e).split())[:400]
        rolled = self.rolled()
        if transient(e):
            return self._fail(f"{text}; {rolled}; it may succeed if tried again", TransientError)
        if isinstance(e, sqlalchemy.exc.IntegrityError):
            return self._fail(f"a row violates a constraint ({text}); {rolled}. Fix the rows upstream "
                              "(e.g. a quality check) or the table's constraint")
        if isinstance(e, sqlalchemy.exc.DataError):
            return self._fail(f"a value does not fit its column ({text}); {rolled}. Cast the column "
                              "upstream or change the table")
        return self._fail(f"{text}; {rolled}")


def _checkpoints(schema: str | None, in_mysql: bool) -> Any:
    """The checkpoint table as SQLAlchemy sees it (``databases.checkpoints``)."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql, postgresql

    if in_mysql:  # TIMESTAMP: a point in time (DATETIME would hold the session's wall clock); to the
        # microsecond, so the units of one load have an order
        committed_at = sa.Column("committed_at", mysql.TIMESTAMP(fsp=6), nullable=False,
                                 server_default=sa.text("CURRENT_TIMESTAMP(6)"))
    else:
        committed_at = sa.Column("committed_at", sa.DateTime(timezone=True), nullable=False,
                                 server_default=sa.func.current_timestamp())
    return sa.Table(
        checkpoints.TABLE, sa.MetaData(),
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("table_name", sa.Text(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        committed_at,
        schema=schema)


def _committed(ctx: ToolContext, config: SQLLoader.Config) -> dict[str, Any] | None:
    """The checkpoint rows of ``ctx``'s run and task for the table (``Loader.committed``); a SQLite
    file that does not exist is not created by asking. None when the table itself is gone (dropped
    since), whatever checkpoint rows remain."""
    import sqlalchemy as sa

    def read(conn: Any, t: Any, order: list[Any]) -> dict[str, Any] | None:
        match = sa.and_(t.c.run_id == ctx.run_id, t.c.task == ctx.task, t.c.table_name == config.table)
        total, count = conn.execute(sa.select(sa.func.sum(t.c.rows), sa.func.count()).where(match)).one()
        if not count:
            return None
        position = conn.execute(sa.select(t.c.position).where(match).order_by(*order).limit(1)).scalar()
        return checkpoints.committed(total, count, position)

    return _checkpoint_rows(ctx, config, read, loaded=True)


def _mark(ctx: ToolContext, config: SQLLoader.Config, source: str) -> dict[str, Any] | None:
    """The newest incremental mark of ``source`` in the checkpoints of the task and table (``Loader.mark``)."""
    import sqlalchemy as sa

    def read(conn: Any, t: Any, order: list[Any]) -> dict[str, Any] | None:
        text = sa.cast(t.c.position, sa.Text())  # JSON, JSONB or text: its text, to match and to parse
        match = [t.c.task == ctx.task, t.c.table_name == config.table,
                 *(text.like(p) for p in checkpoints.mark_patterns(source))]
        rows = conn.execute(sa.select(text).where(*match).order_by(*order))
        return checkpoints.first_mark((r[0] for r in rows), source)

    return _checkpoint_rows(ctx, config, read, loaded=False)


def _checkpoint_rows(ctx: ToolContext, config: SQLLoader.Config, read: Callable[[Any, Any, list[Any]], Any],
                     loaded: bool) -> Any:
    """``read(connection, checkpoint table, newest-first order)``, or None if there is no database
    file or checkpoint table, or ``loaded`` and the loaded table is gone."""
    import sqlalchemy as sa

    try:
        schema, name = split_table(config.table)
    except ValueError as e:
        raise ToolError(f"task {ctx.task!r}: {e}") from None
    eng = engine(ctx, config.connection)
    file = sqlite_file(eng)
    if file is not None and not file.is_file():
        return None
    try:
        conn = eng.connect()
    except sa.exc.DBAPIError as e:
        raise connect_error(e, eng.url, config.connection) from None
    with conn:
        insp = sa.inspect(conn)
        if not insp.has_table(checkpoints.TABLE, schema=schema) or (loaded and not insp.has_table(name, schema=schema)):
            return None
        t = _checkpoints(schema, eng.dialect.name in ("mysql", "mariadb"))
        order = [t.c.committed_at.desc()]
        if eng.dialect.name == "sqlite":
            order.append(sa.literal_column("rowid").desc())
        return read(conn, t, order)


class SQLLoader(DatabaseLoader):
    """Write Arrow batches into a table of any SQLAlchemy database (append, replace, merge)."""

    class Config(SinkOptions):
        """Options of the sql loader: connection (a SQLAlchemy url), table, mode, key, schema_policy."""

    read_committed = staticmethod(_committed)
    read_mark = staticmethod(_mark)
    writer: _Writer | None = None

    async def load(self, batches: AsyncIterator[pa.RecordBatch]) -> int:
        import sqlalchemy.exc

        # on SQLite, siblings into the same file would wait for this load's write lock while it waits for them
        spool = self.ctx.prepare_hook is not None and engine(self.ctx, self.config.connection).dialect.name == "sqlite"
        self.writer = _Writer(self.ctx, self.config)
        return await write_stream(self.writer, batches, self.ctx, (sqlalchemy.exc.SQLAlchemyError,),
                                  units=self.takes_units(), spool=spool)
