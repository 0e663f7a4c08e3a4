"""Redis errors as one clear message each (shared by the redis_stream source and sink). Imported only by
the redis tools, after ``redis`` itself."""

from __future__ import annotations

from typing import Any

from agent_etl.exceptions import ToolError, TransientError


def where(client: Any) -> str:
    """host:port of a client, without the password that may be in its url."""
    kw = client.connection_pool.connection_kwargs
    if kw.get("path"):
        return f"unix:{kw['path']}"
    return f"{kw.get('host', '?')}:{kw.get('port', 6379)}"


def unreachable(client: Any, e: BaseException) -> TransientError:
    return TransientError(f"cannot reach Redis at {where(client)} ({type(e).__name__}: {e}); check that the server "
                          "is running and the url (host, port, password)")


def refused(what: str, e: BaseException) -> ToolError:
    return ToolError(f"{what}: Redis refused the command: {e}")
