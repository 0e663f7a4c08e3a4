"""DuckDB database files for the duckdb extractor and loader.

A connection's ``url`` is ``duckdb:///path.duckdb`` (relative to the pipeline file;
``duckdb:////abs/path.duckdb`` for an absolute path). A DuckDB file can be open for writing in one
process only, so the run opens each file once (``open_database``, kept in ``ctx.resources`` and
closed when the run ends) and every task works through its own ``cursor()`` of it: a cursor is a
connection of its own to the same database, with its own transaction, usable from its own thread.

Cursors run with ``TimeZone = 'UTC'``, so TIMESTAMPTZ values come out as ``timestamp[us, UTC]``
whatever the machine's zone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent_etl.exceptions import SpecError, ToolError, TransientError
from agent_etl.tools.folders import make_folder_for

HINT = "use url: duckdb:///relative/path.duckdb (next to the pipeline file) or duckdb:////absolute/path.duckdb"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str | None, table: str) -> str:
    return f"{quote(schema)}.{quote(table)}" if schema else quote(table)


def path_of(ctx: Any, connection: str) -> Path:
    url = str(ctx.connection(connection).get("url") or "")
    scheme, sep, rest = url.partition(":///")
    if scheme != "duckdb" or not sep or not rest or rest.startswith(":memory:"):
        raise SpecError(f"task {ctx.task!r}: connection {connection!r} ({url.split('?')[0]!r}) is not a DuckDB "
                        f"database file; {HINT}")
    return ctx.path(rest.split("?")[0])


def open_database(ctx: Any, connection: str, *, create: bool) -> Any:
    """The run's connection to the file of ``connection`` (opened by the first task that asks)."""
    path = path_of(ctx, connection)
    if not create and not path.is_file():
        raise ToolError(f"task {ctx.task!r}: DuckDB database {path} does not exist; check the connection url "
                        "(relative paths start at the pipeline file)")

    def connect() -> Any:
        import duckdb

        make_folder_for(path, ctx.task)
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as e:
            if "lock" in str(e).lower():
                raise TransientError(f"task {ctx.task!r}: DuckDB database {path} is open in another process "
                                     f"({first_line(e)}); close that process, or let the run retry") from None
            raise ToolError(f"task {ctx.task!r}: cannot open DuckDB database {path}: {first_line(e)}") from None
        except duckdb.Error as e:
            raise ToolError(f"task {ctx.task!r}: cannot open DuckDB database {path}: {first_line(e)}; is it a "
                            "DuckDB file (written by a compatible DuckDB version)?") from None

    return ctx.resources.get(("duckdb", str(path.resolve())), connect, lambda con: con.close())


def cursor(con: Any) -> Any:
    cur = con.cursor()
    cur.execute("SET TimeZone = 'UTC'")
    return cur


def first_line(e: BaseException) -> str:
    """DuckDB's message without the excerpt of the statement (``LINE 1: ...``)."""
    head = str(e).split("\n\n")[0].strip()
    return "; ".join(line.strip() for line in head.splitlines() if line.strip() and not line.startswith("LINE "))
