"""PostgreSQL connections for the postgres extractor and loader (psycopg 3).

``pool(ctx, name)`` gives the run's pool for connection ``name`` (shared by every task of the run
and closed when the run ends); ``with pool.connection() as conn`` lends a connection and takes it
back clean (rolled back if a transaction was left open, discarded if broken). A connection that
cannot be made raises ``ToolError`` naming user, host and port (never the password) with a fix;
an unreachable or restarting server raises ``TransientError``, which the coordinator retries with
backoff (``defaults.retries``) before the run fails with that message.
"""

from __future__ import annotations

from typing import Any

from agent_etl.exceptions import ToolError, TransientError
from agent_etl.tools.databases import pool as pool_base
from agent_etl.tools.databases.connection import describe, url_of

CONNECT_TIMEOUT = 10  # seconds per attempt; the coordinator's retries bound the total


class Pool(pool_base.Pool):
    def __init__(self, url: str, name: str):
        # SQLAlchemy-style URLs work too: postgresql+psycopg://... is the same server
        super().__init__(url.replace("postgresql+psycopg://", "postgresql://")
                         .replace("postgres+psycopg://", "postgresql://"), name)

    def connect(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.OperationalError as e:
            raise connect_error(self.url, self.name, e) from None

    def is_open(self, conn: Any) -> bool:
        return not conn.closed

    def reset(self, conn: Any) -> bool:
        import psycopg

        try:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()
        except psycopg.Error:
            return False
        return True


def pool(ctx: Any, name: str) -> Pool:
    url = url_of(ctx, name)
    return ctx.resources.get(("postgres", url), lambda: Pool(url, name), Pool.close)


def connect_error(url: str, name: str, e: Exception) -> Exception:
    where = describe(url)
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__
    text = text.removeprefix("connection failed: ")
    low = str(e).lower()
    if ("password authentication failed" in low or "no password supplied" in low
            or ("role" in low and "does not exist" in low)):
        return ToolError(f"connection {name!r}: PostgreSQL at {where} refused the login: {text}; "
                         "check the user and password (give the password through ${ENV_VAR} or ${file:path})")
    if "database" in low and "does not exist" in low:
        return ToolError(f"connection {name!r}: PostgreSQL at {where}: {text}; create it or fix the url")
    if any(s in low for s in ("connection refused", "timeout", "timed out", "could not translate host",
                              "no route to host", "network is unreachable", "starting up", "shutting down")):
        return TransientError(f"connection {name!r}: PostgreSQL at {where} is unreachable: {text}; check that the "
                              "server runs and that host and port in the url are right")
    return ToolError(f"connection {name!r}: cannot connect to PostgreSQL at {where}: {text}")

