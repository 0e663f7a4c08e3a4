"""The checkpoint a database loader writes into the destination with each commit (DESIGN.md §1).

Table ``_agent_etl_checkpoints``, next to the loaded table (same schema or database), one row per
commit, written in the commit's own transaction wherever the load has one, so the destination
itself tells which runs landed, and up to where in their sources:

=============  ===========================================================================
run_id         the run that committed
task           the load task
table_name     the loaded table: schema.table (postgres), database.table (mysql), else as the
               spec names it
rows           rows this commit wrote
position       JSON: each upstream extract task's position after the last batch committed
               (the extractor's ``position()``: rows read, the incremental cursor's bound and
               largest value, a file and offset...), ``{}`` for a load run on its own
committed_at   the database's clock at the commit
=============  ===========================================================================

A loader that commits in units (``commit_every``) writes one row per unit, each with the rows of
that unit and the position after it. ``Loader.committed()`` reads them back for a run and task
(``committed``): rows summed, units counted, the position of the latest. A resumed or repeated run
uses that to skip what already landed (exactly-once), and an operator can audit a warehouse table
without the run store.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent_etl.tools.base import ToolContext

TABLE = "_agent_etl_checkpoints"
COLUMNS = ("run_id", "task", "table_name", "rows", "position")  # written; committed_at is the default


@dataclass(frozen=True)
class Checkpoint:
    run_id: str
    task: str
    table_name: str
    rows: int
    position: str  # JSON text

    def values(self) -> tuple[Any, ...]:
        return self.run_id, self.task, self.table_name, self.rows, self.position


def insert(table: str, quote: Callable[[str], str], mark: str) -> str:
    """The INSERT of one row of COLUMNS into ``table`` (already quoted), with the driver's ``mark``
    as placeholder (``?``, ``%s``)."""
    return f"INSERT INTO {table} ({', '.join(quote(c) for c in COLUMNS)}) VALUES ({', '.join([mark] * len(COLUMNS))})"


def totals(table: str, quote: Callable[[str], str], mark: str) -> str:
    """SUM(rows) and COUNT(*) of the rows of one run, task and table_name (three ``mark`` parameters)."""
    return (f"SELECT SUM({quote('rows')}), COUNT(*) FROM {table} WHERE {quote('run_id')} = {mark} AND "
            f"{quote('task')} = {mark} AND {quote('table_name')} = {mark}")


def latest(table: str, quote: Callable[[str], str], mark: str, tiebreak: str = "") -> str:
    """The position of the latest row of one run, task and table_name (ties of the clock broken by
    ``tiebreak``, an expression that grows with each insert, where the database has one)."""
    order = f"{quote('committed_at')} DESC" + (f", {tiebreak} DESC" if tiebreak else "")
    return (f"SELECT {quote('position')} FROM {table} WHERE {quote('run_id')} = {mark} AND {quote('task')} = {mark} "
            f"AND {quote('table_name')} = {mark} ORDER BY {order} LIMIT 1")


def committed(total: Any, count: Any, position: Any) -> dict[str, Any] | None:
    """``Loader.committed()``'s answer from ``totals`` and ``latest`` (None when no row matched)."""
    if not count:
        return None
    if isinstance(position, (bytes, bytearray)):
        position = position.decode()
    if isinstance(position, str):
        position = json.loads(position)
    return {"rows": int(total or 0), "commits": int(count), "position": position or {}}


def checkpoint(ctx: ToolContext, table_name: str, rows: int) -> Checkpoint:
    """The checkpoint of a commit of ``rows`` rows into ``table_name`` now."""
    position = json.dumps(ctx.source_position(), sort_keys=True, default=str)
    return Checkpoint(ctx.run_id, ctx.task, table_name, rows, position)
