"""PostgreSQL loader: binary COPY from Arrow batches, in one transaction per commit unit.

Options (DESIGN.md §2): ``connection`` (a ``connections:`` entry with ``url: postgresql://...``),
``table`` (``name`` or ``schema.name``; double quotes keep dots and case: ``'"Odd.Name"'``),
``mode: append | replace | merge``, ``key`` (merge), ``schema_policy: evolve | freeze``.

- ``append`` (default) COPYs straight into the table (created from the first batch's schema if it
  does not exist, with its schema). A commit unit is one transaction, committed when the unit ends
  (or the input stream has ended cleanly): if the stream fails, nothing of the unit under way stays
  in the table.
- ``replace`` (``replace_strategy: auto | swap | insert``, the run's details say which was taken
  and why): ``swap`` COPYs into a new table made like the old one in the load's transaction and
  swaps it in by rename, the old table locked only for the swap and dropped after the COMMIT, while
  the run ends (``databases.postgres.swap``: what carries over, and what makes ``auto`` insert
  instead: views, foreign keys to the table, ...).
  ``insert`` COPYs into a TEMP staging table, then deletes the old rows and inserts the staged ones;
  the table itself stays, with everything on it. Either way readers see the old rows until the
  commit, then the new ones, never a mix and never an empty table (DELETE rather than TRUNCATE:
  TRUNCATE is not MVCC-safe). The table's columns missing from the stream get NULL (or their
  default). A stream with no batch at all empties the table (DELETE).
- ``merge`` stages the same way, then ``INSERT ... ON CONFLICT (key) DO UPDATE`` in one
  transaction, a chunk of ``STAGE_ROWS`` staged rows at a time: the client encodes the next chunk
  while the server upserts one (``databases.postgres.sender``), and the stage stays one chunk
  long. Within one load, the last row of a key wins. A table the loader creates gets a
  PRIMARY KEY on ``key`` (so key values may not be NULL); an existing table without a unique index
  on exactly ``key`` is merged by UPDATE of the matching rows, then INSERT of the others, under a
  lock that keeps out concurrent writers (readers are not blocked).
- ``schema_policy: evolve`` (default) adds the stream's new columns as nullable columns (ALTER
  TABLE ADD COLUMN; in append mode this locks the table against readers until the load commits);
  ``freeze`` fails listing them (and, for replace, the table's columns the stream lacks), changing
  nothing. A column whose type does not fit the table's column is an error naming both types in
  either mode (see ``pg_load_types`` for the type mapping and what fits).

Commit units (``tools.base``, ``Loader``): ``append`` and ``merge`` take them. After a batch for
which ``ctx.commit_due()`` is true, and once the stream has ended, the unit ends: the COPY is
finished (merge: the TEMP stage is upserted into the table, and goes with the commit; the next unit
stages anew), the checkpoint row written, ``ctx.prepare(final)`` awaited (the sibling loads), then
COMMIT and ``ctx.commit(rows of the unit)``; the next batch starts a new transaction and COPY. If
``prepare`` raises, the unit rolls back and the units before it stay. A unit with no rows after an
earlier one commits nothing (``prepare`` is still called). ``replace`` is one unit, its swap
prepared before the COMMIT. Without ``commit_due`` a load is one unit and costs exactly one COMMIT.
``committed()`` reads back the checkpoint rows of the run and task. Deadlocks, serialization
failures, lock timeouts and lost connections are ``TransientError`` (``databases.transient``).

With sibling loads (``ctx.prepare_hook``) on a server with ``max_prepared_transactions > 0`` (asked
once per load), each unit of ``append`` ends with ``PREPARE TRANSACTION`` before ``ctx.prepare``,
then ``COMMIT PREPARED`` (``ROLLBACK PREPARED`` if it raises): ``databases.postgres.twophase``. ``merge``
and ``replace`` stage into a TEMP table, which a prepared transaction may not have used: they keep
plain transactions, as does every load on a server with 0 (the default). Every load, and
``committed()``, first settles the task's prepared transactions a crash left in the database.

Rows that violate a constraint or a type (NOT NULL, unique, check, numeric overflow, a string too
long for varchar(n), ...) fail the load with PostgreSQL's message and leave the table unchanged.
With each commit, a row (run_id, task, table_name, rows, position) goes into ``_agent_etl_checkpoints``
in the table's schema, in the same transaction (``databases.checkpoints``): the destination itself
tells which runs landed, and up to where in their sources.

Batches are encoded by ``pg_encode`` in a worker thread, ENCODE_ROWS rows at a time, while the
previous part is being sent: the first bytes reach the server after a small encode, not a whole
batch's, and the encoded data in flight stays a few MB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import field_validator

from agent_etl.exceptions import ToolError, TransientError
from agent_etl.stream import slices
from agent_etl.tools.base import ToolContext
from agent_etl.tools.capabilities import DATABASE
from agent_etl.tools.databases import replace as replace_path
from agent_etl.tools.databases.blocking import Units, end_unit, in_thread, report
from agent_etl.tools.databases.checkpoints import checkpoint
from agent_etl.tools.databases.connection import describe
from agent_etl.tools.databases.options import SinkOptions, split_table
from agent_etl.tools.databases.postgres import checkpoint_reads, ddl, sequences, swap, twophase
from agent_etl.tools.databases.postgres.connections import pool
from agent_etl.tools.databases.postgres.encode import HEADER, TRAILER, EncodeError, Encoder, order
from agent_etl.tools.databases.postgres.key_order import KeyOrder
from agent_etl.tools.databases.postgres.load_errors import explain
from agent_etl.tools.databases.postgres.load_types import Column, Unmapped, accepts, natural, writable
from agent_etl.tools.databases.postgres.merging import SAVEPOINT, Merging
from agent_etl.tools.databases.postgres.sender import ENCODE_ROWS, Sender
from agent_etl.tools.databases.postgres.stage_ahead import StageAhead
from agent_etl.tools.databases.postgres.twophase import TwoPhase
from agent_etl.tools.databases.sink import DatabaseLoader

log = logging.getLogger(__name__)



class _Session(Merging, Units):
    """The blocking half: one pooled connection, one transaction per commit unit; each method runs in
    a thread."""

    def __init__(self, ctx: ToolContext, config: PostgresLoader.Config):
        self.ctx, self.config = ctx, config
        self.units = config.mode in ("append", "merge")
        self.pool = pool(ctx, config.connection)
        self.schema_name, self.name = split_table(config.table)
        self.stack = contextlib.ExitStack()
        self.existing: dict[str, Column] | None = None  # the table's columns, None if it did not exist
        self.oid: int | None = None
        self.staged: dict[str, Column] = {}  # columns of the table being written (target or stage)
        self.added: list[tuple[str, str]] = []  # new columns to add to the target at the end
        self.staging = False
        self.copy: Any = None
        self.copy_stack: contextlib.ExitStack | None = None
        self.encoder: Encoder | None = None
        self.schema: pa.Schema | None = None
        self.encoded = 0  # rows encoded so far (runs ahead of `rows` by one batch)
        self.committed = False  # the last unit committed, and nothing was written since
        self.final = False
        self.checkpoints_ready = False  # the checkpoint table is known to exist with its columns
        self.tpc: TwoPhase | None = None  # with siblings, where the server allows it (databases.postgres.twophase)
        self.swap: swap.Swap | None = None  # replace by swap: the new table (databases.postgres.swap)
        self.fresh = False  # the table written was created in this transaction (replace: COPY FREEZE)
        self.path: str | None = None  # replace, merge: the path taken and why, for the run's details
        self.direct = False  # merge COPYing straight into the (empty) table, a savepoint per chunk
        self.held: list[pa.RecordBatch] = []  # the batches of the direct chunk under way
        self.held_rows = self.held_bytes = 0
        self.copy_base = 0  # input rows before the COPY under way (its "line N" counts from there)
        self.copy_columns: list[tuple[str, str]] = []
        self.seq = False  # the merge's stage has the load-order column (ddl.SEQ)
        self.order: KeyOrder | None = None  # until then, the keys staged are strictly increasing (key_order)
        self.unique = False  # merge: the table has a unique index on the key (upsert, in stage chunks)
        self.stage_base = 0  # ``rows`` when the stage's chunk under way began
        self.applied = 0  # stage chunks upserted before the end of their unit
        self.sequences = sequences.Followed()  # append, merge: the loaded values of owned sequences' columns
        self.stage_table = ddl.sql.Identifier(ddl.STAGE)  # where the stage's rows go (TEMP, or StageAhead's)
        self.stage_cols: list[tuple[str, str]] = []
        self.ahead: StageAhead | None = None  # merge: stage chunks on a second connection (stage_ahead)
        self.ahead_refused = False  # ... which the server refused: stage in the TEMP table
        self.overlapped = False  # the stage under way is StageAhead's

    @property
    def shown(self) -> str:
        return f"{self.schema_name}.{self.name}" if self.schema_name else self.name

    def open(self) -> None:
        self.conn = self.stack.enter_context(self.pool.connection())
        self.cur = self.conn.cursor()
        twophase.settle(self.conn, self.ctx)  # what a crash left prepared holds locks: end it first
        if self.ctx.prepare_hook is not None and self.config.mode == "append" and twophase.enabled(self.conn):
            self.tpc = TwoPhase(self.ctx)
        if self.schema_name is None:
            self.schema_name = self.cur.execute("SELECT current_schema()").fetchone()[0]
            if self.schema_name is None:
                raise self._fail("no schema to create it in (the search_path is empty); write table: schema.name")
        self.target = ddl.sql.Identifier(self.schema_name, self.name)
        found = ddl.table(self.cur, self.schema_name, self.name)
        if found and found[1] not in ("r", "p"):
            raise self._fail("it is not a table (a view, sequence or foreign table?); load into a table")
        if found:
            self.oid = found[0]
            self.existing = ddl.columns(self.cur, self.oid)
        if self.config.mode == "replace":
            self._choose()
        elif found:
            self.sequences = sequences.Followed(self.cur, self.oid)
        self._checkpoint_table()

    def _choose(self) -> None:
        """Replace by swap or by insert (``replace_strategy``, ``databases.replace``), saying why in ``path``."""
        if self.existing is None:
            self.path = replace_path.NEW.details
            return
        strategy = self.config.replace_strategy
        path = replace_path.choose(strategy, [] if strategy == "insert" else swap.blockers(self.cur, self.oid),
                                   self._fail)
        self.path = path.details
        if path.swap:
            self.swap = swap.Swap(self.cur, self.schema_name, self.name, self.oid)

    def _checkpoint_table(self) -> None:
        """Make the checkpoint table in a transaction of its own, before the load's. Two loads of a
        first run would otherwise create it at the same moment, and PostgreSQL's CREATE TABLE IF NOT
        EXISTS fails the later one (a unique violation in the catalog) with all its rows. In a schema
        that does not exist yet, the load makes the table itself, in its transaction."""
        import psycopg

        if not self.cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema_name,)).fetchone():
            return
        for attempt in range(3):
            try:
                ddl.checkpoint(self.cur, self.schema_name)
                self.conn.commit()
                self.checkpoints_ready = True
                return
            except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable, psycopg.errors.DuplicateColumn):
                self.conn.rollback()  # another load made it meanwhile: look again
                if attempt == 2:
                    raise

    # -- schema ---------------------------------------------------------------------------------

    def fit(self, schema: pa.Schema) -> None:
        """Prepare COPY for batches of ``schema``: create or evolve the table, start a new COPY."""
        if self.direct:
            self.chunk_end(restart=False)
        self._end_copy()
        self.committed = False
        if len(set(schema.names)) != len(schema.names) or not schema.names:
            dupes = sorted({n for n in schema.names if schema.names.count(n) > 1})
            raise self._fail(f"the input has repeated column names {dupes}; rename them upstream" if dupes
                             else "the input has no columns; select some columns upstream")
        mode = self.config.mode
        if self.existing is None and not self.staged and self.ctx.partition is not None and mode != "replace":
            ddl.create_shared(self.conn, self.target, self.schema_name, [(f.name, self._natural(f)[1]) for f in schema],
                              self.config.key if mode == "merge" else None)  # the other copies make it too
            self.oid = ddl.table(self.cur, self.schema_name, self.name)[0]
            self.existing = ddl.columns(self.cur, self.oid)
        if self.existing is None and not self.staged:
            self._create(schema)
            self.fresh = mode == "replace"
        elif not self.staged:
            self._check_drift(schema)
            if mode == "append":
                self.staged = dict(self.existing)
            elif self.swap is not None:
                self.swap.create(self._moved)
                self.staged, self.target, self.fresh = dict(self.existing), self.swap.table, True
            elif mode == "merge":
                self._merge_into(schema)
            else:
                self._stage(schema)
        new = [f for f in schema if f.name not in self.staged]
        self._check_types(schema)
        for f in new:
            kind, type_sql = self._natural(f)
            if self.staging:
                self.stage_cur.execute(ddl.add_column(self.stage_table, f.name, type_sql))
                self.stage_cols.append((f.name, type_sql))
            else:
                self.cur.execute(ddl.add_column(self.target, f.name, type_sql))
            self.staged[f.name] = Column(f.name, kind, type_sql)
            if self.staging and self.existing is not None:
                self.added.append((f.name, type_sql))
        self.schema = schema
        self._start_copy()

    def _start_copy(self) -> None:
        """A COPY of batches of ``self.schema`` into the table written (the target, the swap's new
        table or the stage); under a savepoint when merging straight into the table."""
        seq = [(ddl.SEQ, "int8")] if self.staging and self.seq else []
        columns = order([(n, self.staged[n].kind) for n in self.schema.names] + seq)  # seq with the fixed-size
        if columns != self.copy_columns:
            self.encoder, self.copy_columns = Encoder(columns), columns
        if self.direct:
            self.cur.execute(SAVEPOINT)
        into, cur = (self.stage_table, self.stage_cur) if self.staging else (self.target, self.cur)
        self.copy_stack = contextlib.ExitStack()
        self.copy = self.copy_stack.enter_context(cur.copy(ddl.copy(into, [n for n, _ in columns], self.fresh)))
        self.copy.write(HEADER)
        self.copy_base = self.rows

    def _create(self, schema: pa.Schema) -> None:
        cols = []
        for f in schema:
            kind, type_sql = self._natural(f)
            cols.append((f.name, type_sql))
            self.staged[f.name] = Column(f.name, kind, type_sql)
        key = self.config.key if self.config.mode == "merge" else None
        if key:
            missing = [k for k in key if k not in self.staged]
            if missing:
                raise self._fail(f"merge key column(s) {missing} are not in the input (columns: "
                                 f"{', '.join(schema.names)}); fix `key`")
        self.cur.execute(ddl.create_schema(self.schema_name))
        self.cur.execute(ddl.create_table(self.target, cols, key))
        if self.config.mode == "merge":
            self.existing = dict(self.staged)
            self.oid = ddl.table(self.cur, self.schema_name, self.name)[0]
            self.staged = {}
            self._merge_into(schema)

    def _stage(self, schema: pa.Schema, ordered: bool = True, ahead: bool = False) -> None:
        """The staging table: the stream's columns, typed as in the target where it has them; for
        merge, the load-order column unless the keys may prove strictly increasing (``ordered``).
        TEMP, or with ``ahead`` (an upsert) a table of ``StageAhead``'s where the server allows it."""
        cols = []
        for f in schema:
            col = self.existing.get(f.name)
            if col is None:
                kind, type_sql = self._natural(f)
                col = Column(f.name, kind, type_sql)
                self.added.append((f.name, type_sql))
            cols.append((f.name, col.shown))
            self.staged[f.name] = col
        if self.config.mode == "merge":
            self.order = KeyOrder.of(schema, self.config.key or []) if ordered else None
            self.seq = self.order is None
            cols += [(ddl.SEQ, "bigint")] if self.seq else []
        if ahead and self.ahead is None and not self.ahead_refused:
            self.ahead = StageAhead.open(self.pool.connect, self.schema_name)
            self.ahead_refused = self.ahead is None
        self.stage_cols, self.overlapped = cols, ahead and self.ahead is not None
        if self.overlapped:
            self.stage_table = self.ahead.create(cols)
        else:
            self.stage_table = ddl.sql.Identifier(ddl.STAGE)
            self.cur.execute(ddl.create_table(self.stage_table, cols, None, temp=True))
        self.staging = True
        self.stage_base = self.rows

    @property
    def stage_cur(self) -> Any:
        """The cursor the stage is written through: the load's, or StageAhead's."""
        return self.ahead.cur if self.overlapped else self.cur

    def _check_drift(self, schema: pa.Schema) -> None:
        if self.config.schema_policy != "freeze":
            return
        new = [f"{f.name} ({f.type})" for f in schema if f.name not in self.existing]
        gone = [n for n in self.existing if n not in schema.names] if self.config.mode == "replace" else []
        if new or gone:
            raise self._fail(f"schema_policy: freeze, but the input differs from the table: new columns {new}, "
                             f"missing columns {gone}; change the table or set schema_policy: evolve")

    def _check_types(self, schema: pa.Schema) -> None:
        for f in schema:
            col = self.staged.get(f.name)
            if col is None:
                if self.config.schema_policy == "freeze" and self.existing is not None:
                    raise self._fail(f"schema_policy: freeze, but the input has a new column {f.name!r} ({f.type}); "
                                     "add it to the table, drop it upstream, or set schema_policy: evolve")
                continue
            if not writable(col.kind):
                raise self._fail(f"column {f.name!r} has type {col.shown}, which the loader cannot write; "
                                 "load into a staging table of a supported type and convert in SQL")
            if not accepts(col.kind, f.type):
                raise self._fail(f"column {f.name!r} is {col.shown} in the table but {f.type} in the input; cast it "
                                 f"upstream (tool: cast) to a type that fits {col.shown}, or change the table")

    def _natural(self, f: pa.Field) -> tuple[str, str]:
        try:
            return natural(f.type)
        except Unmapped:
            raise self._fail(f"column {f.name!r} has Arrow type {f.type}, which has no PostgreSQL column type; "
                             f"cast it upstream, e.g. {{tool: cast, columns: {{{f.name}: string}}}}") from None

    # -- data -----------------------------------------------------------------------------------

    def encode(self, batch: pa.RecordBatch) -> memoryview:
        self.sequences.see(batch)
        if self.staging and self.seq:
            seq = np.arange(self.encoded, self.encoded + batch.num_rows, dtype=np.int64)
            batch = batch.append_column(ddl.SEQ, pa.array(seq))
        self.encoded += batch.num_rows
        return self.encoder.encode(batch)

    def add_seq(self) -> None:
        """A key out of order: the stage takes the load-order column from the next row on."""
        self._end_copy()
        self.stage_cur.execute(ddl.add_column(self.stage_table, ddl.SEQ, "bigint"))
        self.stage_cols.append((ddl.SEQ, "bigint"))
        self.seq, self.order = True, None
        self._start_copy()

    def write(self, data: memoryview, rows: int) -> None:
        self.committed = False
        self.copy.write(data)
        self.rows += rows

    def write_parts(self, parts: list[tuple[memoryview, int]]) -> None:
        """Write encoded parts; then, if the merge's stage chunk is full, apply it (``stage_due``)."""
        for data, rows in parts:
            self.write(data, rows)
        if self.stage_due(0):
            self._apply_stage()

    def _end_copy(self) -> None:
        if self.copy_stack is not None:
            self.copy.write(TRAILER)
            stack, self.copy_stack, self.copy = self.copy_stack, None, None
            stack.close()

    def ready(self, final: bool) -> bool:
        """Everything of the unit but its COMMIT: the COPY ended, the stage applied to the table, the
        checkpoint row written. False when there is no unit to commit (no rows since the last one).
        With two-phase commit, the unit's transaction is then prepared (durable) before the siblings
        are waited for."""
        there = self._ready(final)
        if self.tpc is not None:
            self.tpc.rounds += 1  # ctx.prepare follows: the barrier's round for this load
            if there:
                self.tpc.prepare(self.conn)
        return there

    def _ready(self, final: bool) -> bool:
        if self.direct:
            self.chunk_end(restart=False)
        self._end_copy()
        if self.overlapped:  # the last chunk's rows readable by the load's transaction, the upserts before done
            self.ahead.hand_over()
            self.ahead.wait()
        self.final = final
        if not self.pending():
            return False
        mode, names = self.config.mode, list(self.staged)
        if self.swap is not None and self.staged:
            self.swap.build()
            self.swap.swap(self._moved)
        elif mode == "replace" and self.existing is not None and not self.staging:
            self.cur.execute(ddl.sql.SQL("DELETE FROM {}").format(self.target))  # no batch: empty it
            self.path = "insert (the input had no batch: the table was emptied)"
        self._add_columns()
        if self.staging and mode == "replace":
            for stmt in ddl.replace(self.target, names):
                self.cur.execute(stmt)
            sequences.follow_rows(self.cur, self.oid, self.target, names)  # past the loaded ids
        elif self.staging and mode == "merge":
            self._merge(names, self.stage_table)
        self.sequences.advance(self.cur, lock=self.tpc is None)  # append, merge: past the loaded ids
        if self.existing is not None or self.staged:  # else nothing happened, not even the schema
            if not self.checkpoints_ready:  # the schema is new: the table is made in this transaction
                ddl.checkpoint(self.cur, self.schema_name)
            self.cur.execute(ddl.checkpoint_insert(self.schema_name),
                             checkpoint(self.ctx, self.shown, self.unit_rows).values())
        return True

    def _add_columns(self, added: list[tuple[str, str]] | None = None) -> None:
        """The stream's new columns (``added``, default those noted so far), added to the table before
        the stage goes into it."""
        if added is None:
            added, self.added = self.added, []
        for name, type_sql in added:
            self.cur.execute(ddl.add_column(self.target, name, type_sql))

    def commit(self) -> None:
        if self.tpc is not None:
            self.tpc.commit(self.conn)
        else:
            self.conn.commit()
        self.committed = True
        if self.ahead is not None:
            self.ahead.drop()  # the unit's stage tables, no longer locked by its transaction
        self.count_commit()
        if self.existing is not None or self.staged:
            self.checkpoints_ready = True
        if not self.final and self.staged:
            self._next_unit()

    def _next_unit(self) -> None:
        """After a unit's COMMIT, before the next: the table as it is now (with the columns the unit
        added) is what the next unit writes into, through a new COPY (and a new stage for merge,
        whose TEMP table went with the commit) started by the next batch."""
        self.oid = ddl.table(self.cur, self.schema_name, self.name)[0]
        self.existing = ddl.columns(self.cur, self.oid)
        self.added = []
        if self.staging or self.direct:
            self.staged, self.staging, self.direct, self.overlapped = {}, False, False, False
        self.schema, self.order, self.seq = None, None, False  # the next stage checks its keys anew

    def close(self, exc: BaseException | None) -> None:
        if self.ahead is not None:
            self.ahead.quiet()  # an upsert still running on the connection ends before it goes
        self._close(exc)
        if self.ahead is not None:
            self.ahead.close()  # after the load's transaction has ended: its stage tables go
            self.ahead = None

    def _close(self, exc: BaseException | None) -> None:
        if self.tpc is not None and self.tpc.gid is not None:  # prepared, then a sibling failed
            try:
                self.tpc.rollback(self.conn)
            except Exception as e:  # the next load of the task, or a resume, settles it
                log.warning("%s: ROLLBACK PREPARED failed (%s); the next load of the task settles it", self._where(), e)
        if exc is None:
            self.stack.close()
        else:  # the COPY is abandoned and the connection discarded: the transaction rolls back
            self.copy_stack = None
            self.stack.__exit__(type(exc), exc, exc.__traceback__)

    # -- errors ---------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"task {self.ctx.task!r}: PostgreSQL table {self.shown} at {describe(self.pool.url)}"

    def _fail(self, problem: str) -> ToolError:
        return ToolError(f"{self._where()}: {problem}; {self.undone()}")

    def _moved(self, problem: str) -> TransientError:
        return TransientError(f"{self._where()}: {problem}; {self.undone()}; it may succeed if tried again")

    def error(self, e: BaseException) -> BaseException:
        return explain(e, self._where(), self.undone(), self.copy_base, self.swap)


class PostgresLoader(DatabaseLoader):
    """Write Arrow batches into a PostgreSQL table with binary COPY (append, atomic replace, merge)."""

    capabilities = replace(DATABASE, two_phase=True)
    extra = "postgres"

    class Config(SinkOptions):
        """Options of the postgres loader: connection, table, mode, key, schema_policy."""

        @field_validator("table")
        @classmethod
        def _table(cls, value: str) -> str:
            split_table(value)  # a malformed name is a spec error, with its YAML line
            return value

    read_committed = staticmethod(checkpoint_reads.committed)
    read_mark = staticmethod(checkpoint_reads.mark)
    session: _Session | None = None

    def details(self) -> dict[str, Any]:
        path = self.session.path if self.session is not None else None
        return {self.config.mode: path} if path else {}

    async def load(self, batches: AsyncIterator[pa.RecordBatch]) -> int:
        import psycopg

        session = self.session = _Session(self.ctx, self.config)
        units = self.takes_units()
        sender = Sender(session.write_parts, session.stage_due)  # writes overlap the next encodes
        failure: BaseException | None = None
        try:
            await in_thread(session.open)
            async for batch in batches:
                if batch.schema != session.schema:
                    await sender.settle()
                    await in_thread(session.fit, batch.schema)
                if session.order is not None and not session.order.increasing(batch):
                    await sender.settle()
                    await in_thread(session.add_seq)
                for part in slices(batch, ENCODE_ROWS) if batch.num_rows else ():
                    await sender.send(await asyncio.to_thread(session.encode, part), part.num_rows)
                if session.direct and session.hold(batch):
                    await sender.settle()
                    await in_thread(session.chunk_end)
                if units and self.ctx.commit_due():
                    await sender.settle()
                    await end_unit(session, self.ctx, final=False)
            await sender.settle()
            await end_unit(session, self.ctx, final=True)
        except (psycopg.Error, EncodeError) as e:
            failure = session.error(e)
            raise failure from e
        except BaseException as e:
            failure = e
            raise
        finally:
            await sender.drain()
            if session.committed and session.swap is not None and session.swap.aside is not None:
                # the old table's files go while the run ends; the run's resources wait for it
                dropping = asyncio.ensure_future(asyncio.to_thread(session.swap.drop_aside, session.conn, session.close))
                self.ctx.resources.get(("postgres", "drop aside", id(session)), lambda: dropping, _wait)
            else:
                await in_thread(session.close, failure if not session.committed else None)
            await report(session, self.ctx)
        return session.rows


async def _wait(fut: asyncio.Future) -> None:
    await asyncio.wait({fut})
