"""``StageAhead``: a merge's stage chunks written on a second connection while the load's own
connection upserts the chunk before (``merging``).

On one connection a chunk's COPY into the TEMP stage waits for the upsert of the chunk before it:
about 0.2 s per 262,144 rows that the server spends taking the rows, in series with the upsert. Here
the load's transaction (connection A) only upserts; connection B COPYs each chunk into an UNLOGGED
table of its own and commits it, so the server takes chunk k+1 on one backend while it upserts
chunk k on the other. Chunks are upserted one at a time, in input order (the last row of a key
still wins). B's tables hold staged rows only: the load's transaction is still the one that
changes the target, so a failure anywhere leaves the target as it was.

The tables are named ``_agent_etl_stage_<B's backend pid>_<token>_<n>`` in the target's schema and
dropped once the unit has ended (A holds a lock on each it read until then). Those of a process
killed in the middle are dropped by the next ``StageAhead`` on that schema whose backend pid is
no longer a session of the server. Where B cannot create a table in the schema (no CREATE on it),
or where a second connection cannot be made, ``open`` returns None and the load stages in its
TEMP table as before.
"""

from __future__ import annotations

import logging
import secrets
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from psycopg import sql

from agent_etl.tools.databases.postgres import ddl

log = logging.getLogger(__name__)

PREFIX = ddl.STAGE + "_"


class StageAhead:
    def __init__(self, connect: Callable[[], Any], conn: Any, schema: str):
        self._connect, self.conn, self.cur, self.schema = connect, conn, conn.cursor(), schema
        pid = self.cur.execute("SELECT pg_backend_pid()").fetchone()[0]
        self._name = f"{PREFIX}{pid}_{secrets.token_hex(3)}_"
        self._made = 0
        self.tables: list[sql.Identifier] = []  # of the unit under way: dropped once it has ended
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="agent-etl-pg-upsert")
        self._pending: Future | None = None

    @classmethod
    def open(cls, connect: Callable[[], Any], schema: str) -> StageAhead | None:
        """A second connection that may create tables in ``schema`` (None if it may not: the load
        then stages in its TEMP table), after dropping the stage tables of dead sessions there."""
        import psycopg

        try:
            conn = connect()
        except Exception as e:  # e.g. the server's max_connections reached: one connection will do
            log.info("merge stage on a second connection not used (%s); staging in the session", e)
            return None
        try:
            allowed = conn.execute("SELECT has_schema_privilege(%s, 'CREATE')", (schema,)).fetchone()[0]
            if not allowed:
                conn.close()
                return None
            ahead = cls(connect, conn, schema)
            ahead.sweep()
            return ahead
        except psycopg.Error as e:
            log.info("merge stage on a second connection not used (%s); staging in the session", e)
            conn.close()
            return None

    def sweep(self) -> None:
        """Drop the stage tables in the schema whose session has gone (a killed process's)."""
        import psycopg

        rows = self.cur.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r' AND starts_with(c.relname, %s)",
            (self.schema, PREFIX)).fetchall()
        alive = {r[0] for r in self.cur.execute("SELECT pid FROM pg_stat_activity").fetchall()}
        self.conn.commit()
        for (name,) in rows:
            pid = name[len(PREFIX):].split("_", 1)[0]
            if pid.isdigit() and int(pid) not in alive:
                try:
                    self.cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(self.schema, name)))
                    self.conn.commit()
                except psycopg.Error as e:  # another sweep got there first, or it is not ours to drop
                    self.conn.rollback()
                    log.info("stage table %s.%s left (%s)", self.schema, name, e)

    def create(self, cols: list[tuple[str, str]]) -> sql.Identifier:
        """A new stage table for the next chunk (B's transaction, until ``hand_over``)."""
        self._made += 1
        table = sql.Identifier(self.schema, f"{self._name}{self._made}")
        self.cur.execute(ddl.create_table(table, cols, None, unlogged=True))
        self.tables.append(table)
        return table

    def hand_over(self) -> None:
        """The chunk's COPY has ended: commit it, so that the load's transaction can read it."""
        self.conn.commit()

    def then(self, upsert: Callable[[], None]) -> None:
        """Run ``upsert`` on the load's connection once the one before it has ended (raising its error)."""
        self.wait()
        self._pending = self._pool.submit(upsert)

    def wait(self) -> None:
        """The upsert under way, ended; its error raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def quiet(self) -> None:
        """After a failure: wait for an upsert still running, whatever it ends with."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.exception()

    def drop(self) -> None:
        """The unit has ended (committed, or rolled back with its connection): its tables go. A
        connection left in the middle of a COPY (the load failed) is closed and a new one drops them."""
        import psycopg

        tables, self.tables = self.tables, []
        if not tables:
            return
        try:
            try:
                self.conn.rollback()  # a table made for a next chunk that never came goes with it
            except psycopg.Error:
                self.conn.close()
                self.conn = self._connect()
                self.cur = self.conn.cursor()
            for table in tables:
                self.cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
            self.conn.commit()
        except Exception as e:  # the next StageAhead on the schema sweeps them
            log.warning("could not drop the merge's stage tables (%s); the next merge into %s drops them", e,
                        self.schema)

    def close(self) -> None:
        self.quiet()
        self._pool.shutdown(wait=True)
        self.drop()
        self.conn.close()
