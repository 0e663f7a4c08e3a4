"""Naming a database connection in messages without its secrets."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit


def describe(url: str) -> str:
    """``user@host:port/database`` of a URL, never the password (for error messages)."""
    try:
        u = urlsplit(url)
        host = u.hostname or "localhost"
        port = f":{u.port}" if u.port else ""
        user = f"{u.username}@" if u.username else ""
        db = u.path.lstrip("/")
    except ValueError:
        return "<unparseable url>"
    return f"{user}{host}{port}" + (f"/{db}" if db else "")


def url_of(ctx: Any, name: str) -> str:
    """The url of connection ``name`` of the run (a SpecError naming the known ones if undefined)."""
    conn = ctx.connection(name)
    return str(conn.get("url", ""))
