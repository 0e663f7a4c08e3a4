"""Reading back a PostgreSQL loader's checkpoint rows (``Loader.committed``, ``Loader.mark``): what a
resume asks of the destination, and where an incremental source stands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent_etl.tools.base import ToolContext
from agent_etl.tools.databases import checkpoints
from agent_etl.tools.databases.options import SinkOptions, split_table
from agent_etl.tools.databases.postgres import ddl, twophase
from agent_etl.tools.databases.postgres.connections import pool


def committed(ctx: ToolContext, config: SinkOptions) -> dict[str, Any] | None:
    """The checkpoint rows of ``ctx``'s run and task for the table (``Loader.committed``); None when
    the table itself is gone (dropped since), whatever checkpoint rows remain."""
    def read(cur: Any, quoted: str, table_name: str) -> dict[str, Any] | None:
        return checkpoints.query_committed(cur.execute, quoted, _quote, "%s", (ctx.run_id, ctx.task, table_name))

    return _read(ctx, config, read, loaded=True)


def mark(ctx: ToolContext, config: SinkOptions, source: str) -> dict[str, Any] | None:
    """The newest incremental mark of ``source`` in the checkpoints of the task and table (``Loader.mark``)."""
    def read(cur: Any, quoted: str, table_name: str) -> dict[str, Any] | None:
        return checkpoints.query_mark(cur.execute, quoted, _quote, "%s", ctx.task, table_name, source,
                                      as_text="{}::text")

    return _read(ctx, config, read, loaded=False)


def _read(ctx: ToolContext, config: SinkOptions, read: Callable[[Any, str, str], Any],
                 loaded: bool) -> Any:
    """``read(cursor, checkpoint table quoted, table_name of the rows)`` on a pooled connection, or
    None if there is no checkpoint table (no schema), or ``loaded`` and the loaded table is gone."""
    from psycopg import sql

    schema, name = split_table(config.table)
    with pool(ctx, config.connection).connection() as conn:
        if loaded:  # a resume asks: what a crash left prepared is settled first, then reported
            twophase.settle(conn, ctx)
        cur = conn.cursor()
        if schema is None:
            schema = cur.execute("SELECT current_schema()").fetchone()[0]
            if schema is None:
                return None
        table = sql.Identifier(schema, ddl.CHECKPOINTS)
        if cur.execute("SELECT to_regclass(%s)", (table.as_string(cur),)).fetchone()[0] is None:
            return None
        if loaded and ddl.table(cur, schema, name) is None:
            return None
        return read(cur, table.as_string(cur), f"{schema}.{name}")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
