"""PostgreSQL two-phase commit for loads that commit together with sibling loads, where the server
allows it (``max_prepared_transactions > 0``; 0 by default).

An ``append`` load with siblings (``ctx.prepare_hook``) on such a server ends each commit unit
with ``PREPARE TRANSACTION 'agent-etl/<run_id>/<unit>/<task>'`` (the data and the checkpoint row
written; a gid of more than 199 bytes gets ``#`` and the SHA-1 of the task, then of the run id),
and only then waits at the commit barrier (``ctx.prepare``), which records the decision in the run
store before releasing anyone; then ``COMMIT PREPARED`` (``ROLLBACK PREPARED`` if a sibling
failed). ``unit`` counts the load's calls of ``ctx.prepare`` from 1, as the barrier counts its
rounds (and as ``mysql.xa``). ``merge`` and ``replace`` stage into a TEMP table, which a prepared
transaction may not have used: they keep plain transactions.

A prepared transaction survives the process that made it and holds its locks. ``settle`` finds
those of the task in ``pg_prepared_xacts`` (of the current database) and ends them as the run store
decided (``twophase.settle``); the loader settles at every load and in ``committed()``.
"""

from __future__ import annotations

import logging
from typing import Any

from agent_etl.tools.databases import twophase
from agent_etl.tools.databases.twophase import PREFIX, fit

log = logging.getLogger(__name__)

_MAX = 199  # PostgreSQL's GIDSIZE is 200 bytes, with the terminating NUL


def _task(task: str) -> str:
    return fit(task, _MAX - len(PREFIX) - 64)


def gid(run_id: str, task: str, unit: int) -> str:
    """The gid of unit ``unit`` of load ``task`` in run ``run_id``."""
    whole = f"{PREFIX}{run_id}/{unit}/{task}"
    if len(whole.encode()) <= _MAX:
        return whole
    tail = f"/{unit}/{_task(task)}"
    return PREFIX + fit(run_id, _MAX - len(PREFIX) - len(tail)) + tail


def enabled(conn: Any) -> bool:
    """Whether the server allows prepared transactions (``max_prepared_transactions > 0``)."""
    return int(conn.execute("SHOW max_prepared_transactions").fetchone()[0]) > 0


def prepared(conn: Any, task: str) -> list[tuple[str, int, str]]:
    """The prepared transactions of load ``task`` in the connection's database: (run id as named, unit, gid)."""
    rows = conn.execute("SELECT gid FROM pg_prepared_xacts WHERE database = current_database() "
                        "AND gid LIKE 'agent-etl/%'").fetchall()
    tails = {"/" + task, "/" + _task(task)}
    out = []
    for (g,) in rows:
        for tail in tails:
            if not g.endswith(tail):
                continue
            run, _, unit = g[len(PREFIX):-len(tail)].rpartition("/")
            if unit.isdigit() and run:
                out.append((run, int(unit), g))
                break
    return out


def finish(conn: Any, g: str, commit: bool) -> None:
    """``COMMIT PREPARED`` or ``ROLLBACK PREPARED`` of ``g``, outside any transaction."""
    was = conn.autocommit
    if not was:
        conn.rollback()  # a transaction open on this connection (a read) would hold the statement
        conn.autocommit = True
    try:
        conn.execute(f"{'COMMIT' if commit else 'ROLLBACK'} PREPARED {_literal(g)}")
    finally:
        if not was:
            conn.autocommit = False


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def settle(conn: Any, ctx: Any) -> list[tuple[str, int, bool]]:
    """End the prepared transactions of ``ctx.task`` as the run store decided: (run, unit, committed).
    One another user prepared (only its owner or a superuser may end it) is left, with a warning."""
    import psycopg

    def end(g: str, commit: bool) -> bool:
        try:
            finish(conn, g, commit)
        except psycopg.errors.InsufficientPrivilege as e:
            log.warning("task %r: cannot settle prepared transaction %r: %s", ctx.task, g, e)
            return False
        return True

    return twophase.settle(ctx, prepared(conn, ctx.task), end, "PostgreSQL")


class TwoPhase:
    """The two-phase state of one load's connection: ``prepare`` the open unit, then ``commit`` or ``rollback``."""

    def __init__(self, ctx: Any):
        self.ctx = ctx
        self.rounds = 0  # calls of ctx.prepare so far
        self.gid: str | None = None  # the unit prepared and not yet ended

    def prepare(self, conn: Any) -> None:
        g = gid(self.ctx.run_id, self.ctx.task, self.rounds)
        conn.execute(f"PREPARE TRANSACTION {_literal(g)}")
        self.gid = g

    def commit(self, conn: Any) -> None:
        finish(conn, self.gid, True)
        self.gid = None

    def rollback(self, conn: Any) -> None:
        if self.gid is not None:
            g, self.gid = self.gid, None
            finish(conn, g, False)
