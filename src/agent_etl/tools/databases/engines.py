"""SQLAlchemy engines for the generic ``sql`` extractor and loader.

The ``url`` of the connection is any SQLAlchemy URL (``postgresql+psycopg://user@host/db``,
``mysql+pymysql://root@host/db``, ``sqlite:///relative/path.db`` ...; a relative SQLite path
starts at the pipeline file). The run keeps one engine (with its connection pool) per URL in
``ctx.resources``, shared by its tasks and disposed of when the run ends. Messages name
``user@host:port/database``, never the password.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent_etl.exceptions import SpecError, ToolError, TransientError
from agent_etl.tools.databases.connection import describe

_UNREACHABLE = ("connection refused", "timeout", "timed out", "could not translate host", "name or service not known",
                "no route to host", "network is unreachable", "can't connect", "starting up", "shutting down")


def engine(ctx: Any, connection: str) -> Any:
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    raw = str(ctx.connection(connection).get("url") or "")
    try:
        url = make_url(raw)
    except ArgumentError:
        raise SpecError(f"task {ctx.task!r}: connection {connection!r} has no valid SQLAlchemy url; write e.g. "
                        "postgresql+psycopg://user@host:5432/db or sqlite:///path.db") from None
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" \
            and not url.database.startswith("file:"):
        url = url.set(database=str(ctx.path(url.database)))

    def create() -> Any:
        try:
            return sa.create_engine(url, pool_pre_ping=True)
        except NoSuchModuleError:
            raise SpecError(f"task {ctx.task!r}: connection {connection!r}: SQLAlchemy has no dialect "
                            f"{url.drivername!r}; check the url's scheme") from None
        except ImportError as e:
            raise ToolError(f"task {ctx.task!r}: connection {connection!r} needs the database driver {e.name!r}; "
                            f"install it (pip install {e.name})") from None

    return ctx.resources.get(("sql", url.render_as_string(hide_password=False)), create, lambda eng: eng.dispose())


def sqlite_file(eng: Any) -> Path | None:
    """The file of an engine on a SQLite database file; None for another database, or SQLite in
    memory or through a ``file:`` URI."""
    database = eng.url.database
    if eng.url.get_backend_name() != "sqlite" or database in (None, "", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def connect_error(e: BaseException, url: Any, connection: str) -> Exception:
    """A connection failure as a message naming user, host and port, or a SQLite file (and whether to retry)."""
    where = (str(url.database) if url.get_backend_name() == "sqlite" and url.database
             else describe(url.render_as_string(hide_password=True)))
    text = " ".join(str(getattr(e, "orig", None) or e).split())[:300]
    low = text.lower()
    if any(s in low for s in _UNREACHABLE):
        return TransientError(f"connection {connection!r}: database at {where} is unreachable: {text}; check that the "
                              "server runs and that host and port in the url are right")
    if any(s in low for s in ("password", "access denied", "authentication", "role")):
        return ToolError(f"connection {connection!r}: database at {where} refused the login: {text}; check the user "
                         "and password (give the password through ${ENV_VAR} or ${file:path})")
    return ToolError(f"connection {connection!r}: cannot connect to the database at {where}: {text}")


def location(eng: Any) -> str:
    """The database of an engine for messages: ``user@host:port/db``, or a SQLite file's path."""
    url = eng.url
    if url.get_backend_name() == "sqlite":
        return str(url.database or ":memory:")
    return describe(url.render_as_string(hide_password=True))


def identifier(eng: Any, name: str) -> str:
    """``name`` quoted by the dialect, always (a name is never SQL)."""
    return eng.dialect.identifier_preparer.quote_identifier(name)


def qualified(eng: Any, schema: str | None, name: str) -> str:
    return f"{identifier(eng, schema)}.{identifier(eng, name)}" if schema else identifier(eng, name)


def placeholder(eng: Any) -> tuple[Any, bool]:
    """How the i-th DB-API parameter is written for this driver, and whether ``%`` must be doubled."""
    style = eng.dialect.paramstyle
    if style == "qmark":
        return (lambda i: "?"), False
    if style in ("format", "pyformat"):
        return (lambda i: "%s"), True
    if style == "numeric_dollar":
        return (lambda i: f"${i}"), False
    if style == "named":
        return (lambda i: f":p{i}"), False
    return (lambda i: f":{i}"), False  # numeric


def bind(eng: Any, values: list[Any]) -> Any:
    """The parameters in the shape the driver takes (a dict for named placeholders)."""
    if eng.dialect.paramstyle == "named":
        return {f"p{i}": v for i, v in enumerate(values, 1)}
    return tuple(values)
