"""MariaDB / MySQL connections for the mysql extractor and loader (PyMySQL, plus connectorx for reads).

A connection url is ``mysql://user:password@host:3306/database`` (``mariadb://`` and the SQLAlchemy
spellings ``mysql+pymysql://`` / ``mariadb+pymysql://`` work too; ``?unix_socket=/path`` connects
through a socket). Every session runs with ``time_zone = '+00:00'`` (TIMESTAMP values are read and
written in UTC), ``utf8mb4`` and ``STRICT_ALL_TABLES`` added to the server's ``sql_mode``.

``pool(ctx, name)`` gives the run's pool for connection ``name`` (shared by every task of the run and
closed when the run ends); ``with pool.connection() as conn`` lends a connection and takes it back
rolled back (discarded if broken). A refused login raises ``ToolError`` naming user, host and port
(never the password) with a fix; an unreachable or restarting server raises ``TransientError``,
which the coordinator retries with backoff (``defaults.retries``) before the run fails.
"""

from __future__ import annotations

import datetime as dt
import decimal
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from agent_etl.exceptions import ToolError, TransientError
from agent_etl.tools.databases import pool as pool_base
from agent_etl.tools.databases.connection import describe, url_of
from agent_etl.tools.databases.options import split_table

CONNECT_TIMEOUT = 10  # seconds per attempt; the coordinator's retries bound the total
SESSION = ("SET time_zone = '+00:00', "
           "sql_mode = CONCAT_WS(',', NULLIF(@@sql_mode, ''), 'STRICT_ALL_TABLES')")
_SCHEMES = ("mysql", "mariadb", "mysql+pymysql", "mariadb+pymysql", "mysql+mysqldb", "mariadb+mariadbconnector")
# errors that mean "the server is not there (yet)": can't connect, lost, gone away, shutting down,
# too many connections, lock wait timeout, deadlock
TRANSIENT_CODES = {1040, 1053, 1205, 1213, 2002, 2003, 2005, 2006, 2013, 2055}


@dataclass(frozen=True)
class Address:
    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = field(default="", repr=False)
    database: str | None = None
    unix_socket: str | None = None

    def connectorx_url(self) -> str:
        auth = quote(self.user, safe="") + (":" + quote(self.password, safe="") if self.password else "")
        return f"mysql://{auth}@{self.host}:{self.port}/{quote(self.database or '', safe='')}"


def address(url: str, name: str) -> Address:
    try:
        u = urlsplit(url)
        port = u.port or 3306
    except ValueError as e:
        raise ToolError(f"connection {name!r}: the url is not valid ({e}); write mysql://user:password@host:3306/db")
    if u.scheme not in _SCHEMES:
        raise ToolError(f"connection {name!r}: url scheme {u.scheme!r} is not MariaDB/MySQL; write "
                        "mysql://user:password@host:3306/database")
    query = {k: v[-1] for k, v in parse_qs(u.query).items()}
    return Address(host=u.hostname or "127.0.0.1", port=port, user=unquote(u.username or "root"),
                   password=unquote(u.password or ""), database=unquote(u.path.lstrip("/")) or None,
                   unix_socket=query.get("unix_socket"))


class Pool(pool_base.Pool):
    def __init__(self, url: str, name: str):
        super().__init__(url, name)
        self.address = address(url, name)

    def connect(self) -> Any:
        import pymysql

        a = self.address
        try:
            return pymysql.connect(host=a.host, port=a.port, user=a.user, password=a.password, database=a.database,
                                   unix_socket=a.unix_socket, charset="utf8mb4", connect_timeout=CONNECT_TIMEOUT,
                                   local_infile=True, autocommit=True, init_command=SESSION)
        except pymysql.Error as e:
            raise connect_error(self.url, self.name, e) from None

    def is_open(self, conn: Any) -> bool:
        return conn.open

    def reset(self, conn: Any) -> bool:
        import pymysql

        try:
            conn.rollback()  # a transaction left open must not leak into the next borrower
        except pymysql.Error:
            return False
        return True


def pool(ctx: Any, name: str) -> Pool:
    url = url_of(ctx, name)
    if not url:
        raise ToolError(f"task {ctx.task!r}: connection {name!r} has no url; write url: mysql://user@host:3306/db")
    return ctx.resources.get(("mysql", url), lambda: Pool(url, name), Pool.close)


def connect_error(url: str, name: str, e: Exception) -> Exception:
    where = describe(url)
    code = e.args[0] if e.args and isinstance(e.args[0], int) else None
    text = str(e.args[1]) if len(e.args) > 1 else str(e)
    if code in (1045, 1044, 1698):
        return ToolError(f"connection {name!r}: MariaDB/MySQL at {where} refused the login: {text}; check the user "
                         "and password (give the password through ${ENV_VAR} or ${file:path}) and the user's grants")
    if code == 1049:
        return ToolError(f"connection {name!r}: MariaDB/MySQL at {where}: {text}; create the database "
                         "(CREATE DATABASE ...) or fix the url")
    if code in TRANSIENT_CODES:
        return TransientError(f"connection {name!r}: MariaDB/MySQL at {where} is unreachable: {text}; check that the "
                              "server runs and that host and port in the url are right")
    return ToolError(f"connection {name!r}: cannot connect to MariaDB/MySQL at {where}: {text}")


def error_code(e: BaseException) -> int | None:
    args = getattr(e, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def error_text(e: BaseException) -> str:
    args = getattr(e, "args", ())
    return str(args[1]) if len(args) > 1 else str(e)


def ident(name: str) -> str:
    """A backtick-quoted identifier (a backtick inside is doubled), so a name is never SQL."""
    if "\x00" in name:
        raise ToolError(f"identifier {name!r} contains a NUL character, which MariaDB/MySQL names cannot hold")
    return "`" + name.replace("`", "``") + "`"


def table_name(table: str) -> tuple[str | None, str]:
    """``db.table`` (double quotes keep dots) into its parts, as a ToolError if malformed."""
    try:
        return split_table(table)
    except ValueError as e:
        raise ToolError(str(e)) from None


def qualified(database: str | None, table: str) -> str:
    return f"{ident(database)}.{ident(table)}" if database else ident(table)


def literal(value: Any) -> str:
    """A SQL literal of a cursor or partition bound, for SQL sent without parameters (connectorx).

    Only values this module produced from typed state go through here; strings become hex literals,
    so no quoting mode (NO_BACKSLASH_ESCAPES, ANSI_QUOTES) can change their meaning."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(float(value))
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:  # sessions run in UTC
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return f"TIMESTAMP'{value.isoformat(sep=' ', timespec='microseconds')}'"
    if isinstance(value, dt.date):
        return f"DATE'{value.isoformat()}'"
    if isinstance(value, str):
        return f"_utf8mb4 X'{value.encode().hex()}'" if value else "''"
    raise ToolError(f"cannot use a {type(value).__name__} value ({value!r}) as a bound; use a number, date, "
                    "timestamp or string column")
