"""The servers the suite uses, and what a test gets when one is unreachable (DESIGN.md §5).

A test needs a server when it asks for one of the fixtures in ``FIXTURES``, when one of its
parameter ids names a server (``postgres``, ``mariadb``, ``redis_stream``, ...), or when it is
marked ``@pytest.mark.services("postgres", ...)``. Before such a test is set up, each server is
probed once per session (a TCP connect): unreachable, the test is skipped with a one-line reason,
or fails under ``AGENT_ETL_REQUIRE_SERVICES=1`` (set by ``.ci/run``), so CI never skips silently.
"""

from __future__ import annotations

import functools
import os
import socket

import pytest

# name -> (what the reason calls it, host, port)
SERVERS = {
    "postgres": ("PostgreSQL", "127.0.0.1", 5432),
    "mariadb": ("MariaDB", "127.0.0.1", 3306),
    "redis": ("Redis", "127.0.0.1", 6379),
    "nats": ("NATS", "127.0.0.1", 4222),
}
FIXTURES = {
    "pg_source": "postgres", "pg_target": "postgres", "pg_schema": "postgres",
    "mysql_db": "mariadb", "maria_db": "mariadb",
    "redis_stream": "redis", "nats_stream": "nats",
}
PARAM_IDS = {
    "postgres": "postgres", "postgresql": "postgres", "sql_pg": "postgres",
    "mariadb": "mariadb", "mysql": "mariadb",
    "redis_stream": "redis", "nats": "nats",
}


@functools.cache
def reachable(name: str) -> bool:
    _, host, port = SERVERS[name]
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def needed(item: pytest.Item) -> set[str]:
    names = {FIXTURES[f] for f in getattr(item, "fixturenames", ()) if f in FIXTURES}
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        names |= {PARAM_IDS[part] for part in callspec.id.split("-") if part in PARAM_IDS}
    for mark in item.iter_markers("services"):
        names |= set(mark.args)
    return names


def require(item: pytest.Item) -> None:
    """Skip ``item`` (or fail it, under AGENT_ETL_REQUIRE_SERVICES=1) if a server it needs is down."""
    for name in sorted(needed(item)):
        if reachable(name):
            continue
        label, host, port = SERVERS[name]
        reason = f"{label} is not reachable at {host}:{port}"
        if os.environ.get("AGENT_ETL_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (AGENT_ETL_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(reason)
