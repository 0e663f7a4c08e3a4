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

The commit that follows the end of an incremental read carries the source's new high-water mark
(``position[source]["mark"]``). ``Loader.mark()`` reads the newest one of a load, from any run
(``marks`` and ``first_mark``), so the next run of the source reads after what the destination holds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agent_etl.tools.base import ToolContext

TABLE = "_agent_etl_checkpoints"
COLUMNS = ("run_id", "task", "table_name", "rows", "position")  # written; committed_at is the default
Rows = Callable[[str, Sequence[Any]], Iterable[Sequence[Any]]]  # runs a query with its parameters: its rows


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


def mark_patterns(source: str) -> list[str]:
    """LIKE patterns the position text of a checkpoint that may hold ``source``'s mark matches: the
    ``"mark"`` key, and the source's name where its JSON text is plain ASCII (a database may show
    JSON with other escapes). LIKE's wildcards and escape in the name become ``_`` (any one
    character), so no escape clause is needed: a pattern may match more rows, never fewer, and the
    rows are looked at in Python anyway (``first_mark``)."""
    patterns = ['%"mark"%']
    if source.isascii() and source.isprintable() and '"' not in source:
        patterns.append('%"' + re.sub(r"[%_\\]", "_", source) + '"%')
    return patterns


def marks(table: str, quote: Callable[[str], str], mark: str, patterns: int, as_text: str = "{}",
          tiebreak: str = "") -> str:
    """The positions of one task and table_name (two ``mark`` parameters) whose position text is LIKE
    ``patterns`` more parameters (``mark_patterns``), newest first (the order of ``latest``), from
    every run. ``as_text`` turns the position column into text where it is JSON (``CAST({} AS
    CHAR)``)."""
    order = f"{quote('committed_at')} DESC" + (f", {tiebreak} DESC" if tiebreak else "")
    text = as_text.format(quote("position"))
    like = "".join(f" AND {text} LIKE {mark}" for _ in range(patterns))
    return (f"SELECT {quote('position')} FROM {table} WHERE {quote('task')} = {mark} AND {quote('table_name')} = "
            f"{mark}{like} ORDER BY {order}")


def first_mark(positions: Iterable[Any], source: str) -> dict[str, Any] | None:
    """``position[source]["mark"]`` of the first of ``positions`` (JSON text or parsed) that has one."""
    for position in positions:
        try:
            position = _parsed(position)
        except ValueError:
            continue
        held = position.get(source) if isinstance(position, dict) else None
        if isinstance(held, dict) and isinstance(held.get("mark"), dict):
            return held["mark"]
    return None


def _parsed(position: Any) -> Any:
    if isinstance(position, (bytes, bytearray, memoryview)):
        position = bytes(position).decode()
    if isinstance(position, str):
        return json.loads(position)
    return position


def committed(total: Any, count: Any, position: Any) -> dict[str, Any] | None:
    """``Loader.committed()``'s answer from ``totals`` and ``latest`` (None when no row matched)."""
    if not count:
        return None
    position = _parsed(position)
    return {"rows": int(total or 0), "commits": int(count), "position": position or {}}


def query_committed(rows: Rows, table: str, quote: Callable[[str], str], mark: str, key: Sequence[Any],
                    tiebreak: str = "") -> dict[str, Any] | None:
    """``committed`` of ``key`` (run_id, task, table_name): ``totals``, then ``latest``, each run by
    ``rows(query, parameters)``, the driver's call that returns a query's rows."""
    total, count = next(iter(rows(totals(table, quote, mark), key)))
    if not count:
        return None
    (position,) = next(iter(rows(latest(table, quote, mark, tiebreak), key)))
    return committed(total, count, position)


def query_mark(rows: Rows, table: str, quote: Callable[[str], str], mark: str, task: str, table_name: str,
               source: str, as_text: str = "{}", tiebreak: str = "") -> dict[str, Any] | None:
    """``first_mark`` of ``source`` in the positions ``marks`` finds for ``task`` and ``table_name``,
    run by ``rows`` (as in ``query_committed``), whose rows are read only as far as the first mark."""
    patterns = mark_patterns(source)
    found = rows(marks(table, quote, mark, len(patterns), as_text, tiebreak), (task, table_name, *patterns))
    return first_mark((r[0] for r in found), source)


def checkpoint(ctx: ToolContext, table_name: str, rows: int) -> Checkpoint:
    """The checkpoint of a commit of ``rows`` rows into ``table_name`` now."""
    position = json.dumps(ctx.source_position(), sort_keys=True, default=str)
    return Checkpoint(ctx.run_id, ctx.task, table_name, rows, position)
