"""XA two-phase commit for MariaDB/MySQL loads that commit together with sibling loads.

A load with siblings (``defaults.commit: together``) runs each commit unit as an XA transaction
named ``'agent-etl/<run_id>/<unit>','<task>'`` (gtrid, bqual: each at most 64 bytes, a longer
run id or task name is replaced by ``#`` and its SHA-1). At the end of the unit the data and the
checkpoint row are written, then ``XA END`` and ``XA PREPARE`` make it durable, and only then the
load waits at the commit barrier (``ctx.prepare``); the barrier records the decision in the run
store (``RunStore.decide``) before releasing anyone, and the load runs ``XA COMMIT`` (``XA ROLLBACK``
if a sibling failed). ``unit`` counts the load's calls of ``ctx.prepare`` from 1, as the barrier
counts its rounds.

A process killed between PREPARE and COMMIT leaves a prepared transaction that survives it and
holds its locks. ``settle`` finds those of a task (``XA RECOVER``) and ends each one as the run
store decided: ``XA COMMIT`` if ``ctx.decided(run_id, unit)``, else ``XA ROLLBACK`` (no decision:
the barrier never released the unit, presumed abort); a run the store does not know (``decided``
None: another pipeline's load of the same task name) is left alone. The loader settles at every load and in
``committed()`` (asked at a resume). Without ``ctx.decided`` (a tool run alone) they are left as
they are, with a warning.
"""

from __future__ import annotations

import logging
from typing import Any

from agent_etl.tools.databases import twophase
from agent_etl.tools.databases.twophase import PREFIX, fit

log = logging.getLogger(__name__)

_MAX = 64


def _literal(value: str) -> str:
    return "X'" + value.encode().hex() + "'"


def xid(run_id: str, task: str, unit: int) -> str:
    """The XA id of unit ``unit`` of load ``task`` in run ``run_id``, as SQL (``XA START <xid>``)."""
    tail = f"/{unit}"
    gtrid = PREFIX + fit(run_id, _MAX - len(PREFIX) - len(tail)) + tail
    return f"{_literal(gtrid)},{_literal(fit(task, _MAX))}"


def prepared(conn: Any, task: str) -> list[tuple[str, int, str]]:
    """The prepared XA transactions of load ``task`` on the server: (run id as named, unit, xid SQL)."""
    with conn.cursor() as cur:
        cur.execute("XA RECOVER")
        rows = cur.fetchall()
    bqual = fit(task, _MAX).encode()
    out = []
    for _fmt, glen, blen, data in rows:
        data = data if isinstance(data, bytes) else str(data).encode()
        g, b = data[:glen], data[glen:glen + blen]
        if b != bqual or not g.startswith(PREFIX.encode()):
            continue
        run, _, unit = g[len(PREFIX):].decode(errors="replace").rpartition("/")
        if not unit.isdigit() or not run:
            continue
        out.append((run, int(unit), f"X'{g.hex()}',X'{b.hex()}'"))
    return out


def settle(conn: Any, ctx: Any) -> list[tuple[str, int, bool]]:
    """End the prepared XA transactions of ``ctx.task`` as the run store decided: (run, unit, committed)."""
    try:
        found = prepared(conn, ctx.task)
    except Exception as e:  # XA RECOVER needs a right the user may lack (1227): say so, go on
        if getattr(e, "args", (None,))[0] not in (1227, 1044, 1142):
            raise
        log.warning("task %r: cannot list prepared XA transactions (XA RECOVER): %s", ctx.task, e)
        return []

    def end(x: str, commit: bool) -> None:
        with conn.cursor() as cur:
            cur.execute(f"XA {'COMMIT' if commit else 'ROLLBACK'} {x}")

    return twophase.settle(ctx, found, end, "XA")


class XA:
    """The XA state of one load's connection: ``start`` a unit, ``prepare`` it, ``commit`` or ``rollback``."""

    def __init__(self, ctx: Any):
        self.ctx = ctx
        self.rounds = 0  # calls of ctx.prepare so far: the unit under way is rounds + 1
        self.state: str | None = None  # None, "active", "prepared"
        self.id = ""

    def start(self, conn: Any) -> None:
        self.id = xid(self.ctx.run_id, self.ctx.task, self.rounds + 1)
        with conn.cursor() as cur:
            cur.execute(f"XA START {self.id}")
        self.state = "active"

    def prepare(self, conn: Any) -> None:
        with conn.cursor() as cur:
            cur.execute(f"XA END {self.id}")
            self.state = "idle"
            cur.execute(f"XA PREPARE {self.id}")
        self.state = "prepared"

    def commit(self, conn: Any) -> None:
        with conn.cursor() as cur:
            cur.execute(f"XA COMMIT {self.id}")
        self.state = None

    def rollback(self, conn: Any) -> None:
        """Roll back the unit in whatever state it is (close, a failure, a sibling that failed)."""
        if self.state is None:
            return
        with conn.cursor() as cur:
            if self.state == "active":
                try:
                    cur.execute(f"XA END {self.id}")
                except Exception:  # a transaction the server marked rollback-only: the ROLLBACK says
                    pass
            self.state = None
            cur.execute(f"XA ROLLBACK {self.id}")
