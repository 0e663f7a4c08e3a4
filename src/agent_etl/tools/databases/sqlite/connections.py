"""The SQLite database file a connection names, and SQLAlchemy engines on it (extractor and loader)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent_etl.exceptions import SpecError
from agent_etl.tools.base import ToolContext

BUSY_TIMEOUT_S = 10.0  # how long to wait for another writer's lock; `?timeout=` in the URL overrides it


def database(ctx: ToolContext, connection: str) -> tuple[Path, float]:
    """The database file a connection's ``url: sqlite:///path.db`` names, and its lock timeout."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = ctx.connection(connection).get("url")
    hint = "use url: sqlite:///relative/path.db (next to the pipeline file) or sqlite:////absolute/path.db"
    try:
        u = make_url(str(url or ""))
    except ArgumentError:
        raise SpecError(f"task {ctx.task!r}: connection {connection!r} has no valid url; {hint}") from None
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:" or u.database.startswith("file:"):
        shown = u.render_as_string(hide_password=True)
        raise SpecError(f"task {ctx.task!r}: connection {connection!r} ({shown}) is not a SQLite database file; {hint}")
    try:
        timeout = float(u.query.get("timeout", BUSY_TIMEOUT_S))
    except ValueError:
        raise SpecError(f"task {ctx.task!r}: connection {connection!r}: ?timeout= must be seconds") from None
    return ctx.path(u.database), timeout


def engine(path: Path, timeout: float, *, read_only: bool, begin: str):
    """A SQLAlchemy engine with one connection per ``connect()``, transactions started by ``begin``.

    pysqlite's own transaction handling starts transactions lazily and not before DDL, so it is
    turned off (isolation_level=None) and SQLAlchemy's begin event issues ``begin`` itself.
    """
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    target = path.resolve().as_uri() + "?mode=ro" if read_only else str(path)

    def creator() -> sqlite3.Connection:
        # check_same_thread=False: asyncio.to_thread may pick a different worker for each call;
        # calls are awaited one at a time, so one thread uses the connection at any moment.
        return sqlite3.connect(target, timeout=timeout, isolation_level=None, check_same_thread=False, uri=read_only)

    eng = create_engine("sqlite+pysqlite://", creator=creator, poolclass=NullPool)

    @event.listens_for(eng, "begin")
    def _begin(conn) -> None:
        conn.exec_driver_sql(begin)

    return eng


def cause(e: BaseException) -> BaseException:
    """The sqlite3 error under a SQLAlchemy wrapper."""
    return getattr(e, "orig", None) or e
