"""Which driver errors are transient: the same work may succeed if it is tried again.

A deadlock, a serialization failure, a lock wait that timed out, a connection that was reset,
closed or refused, a server that went away or is restarting: the loaders raise these as
``TransientError`` (the coordinator retries the task with backoff, and a resumed load goes on
after its last committed unit); every other error stays a ``ToolError`` and fails at once.

=================  ================================================================================
PostgreSQL         SQLSTATE 40001 (serialization failure), 40P01 (deadlock), 55P03 (lock not
                   available: ``lock_timeout``), class 08 (connection exception), 57P01/57P02/57P03
                   (shut down, crashed, starting up), 53300 (too many connections), and a lost
                   connection (psycopg's OperationalError without a SQLSTATE)
MariaDB / MySQL    1040, 1053, 1205 (lock wait timeout), 1213 (deadlock), 2002, 2003, 2005, 2006
                   (gone away), 2013 (lost connection), 2055; a closed connection
SQLite             SQLITE_BUSY / SQLITE_LOCKED ("database is locked")
DuckDB             a write-write conflict between transactions
=================  ================================================================================

Drivers are recognised by their module, so none is imported here.
"""

from __future__ import annotations

from agent_etl.tools.databases.mysql.connections import TRANSIENT_CODES as MYSQL_CODES

PG_STATES = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300"}


def transient(e: BaseException) -> bool:
    """Whether a driver error (or a SQLAlchemy error wrapping one) may go away on a retry."""
    if getattr(e, "connection_invalidated", False):  # SQLAlchemy: the connection broke under the call
        return True
    e = getattr(e, "orig", None) or e
    if isinstance(e, ConnectionError):
        return True
    module = type(e).__module__.split(".")[0].lstrip("_")  # DuckDB's classes live in _duckdb
    if module in ("psycopg", "psycopg2"):
        state = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
        if state:
            return state in PG_STATES or state.startswith("08")
        name = type(e).__name__
        return name == "OperationalError" or (name == "InterfaceError" and "closed" in str(e))
    if module in ("pymysql", "MySQLdb", "mariadb"):
        code = e.args[0] if e.args and isinstance(e.args[0], int) else None
        return code in MYSQL_CODES or (type(e).__name__ == "InterfaceError" and code in (0, None))
    if module == "sqlite3":
        code = getattr(e, "sqlite_errorcode", None)  # extended: its low byte is the primary code
        return (code is not None and code & 0xFF in (5, 6)) or "database is locked" in str(e)
    if module == "duckdb":
        return type(e).__name__ == "TransactionException" and "conflict" in str(e).lower()
    return False
