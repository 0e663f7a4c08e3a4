"""The connections of one named connection, shared by the tasks of a run.

A database's pool says how to connect (``connect``), whether an idle connection is still usable
(``is_open``) and how to make a returned one clean for the next borrower (``reset``: False when it
cannot, and the connection is dropped). ``with pool.connection() as conn`` lends one; a caller that
holds a connection across calls uses ``acquire`` and ``release``. A connection whose borrower
raised is dropped, never lent again.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from agent_etl.tools.databases.connection import describe


class Pool:
    def __init__(self, url: str, name: str):
        self.url, self.name = url, name
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    def where(self) -> str:
        """user@host:port/database, for messages (never the password)."""
        return describe(self.url)

    def connect(self) -> Any:
        raise NotImplementedError

    def is_open(self, conn: Any) -> bool:
        raise NotImplementedError

    def reset(self, conn: Any) -> bool:
        """End what the last borrower left open; False if the connection is broken."""
        raise NotImplementedError

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        conn = self.acquire()
        try:
            yield conn
        except BaseException:
            discard(conn)
            raise
        else:
            self.release(conn)

    def acquire(self) -> Any:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None or not self.is_open(conn):
            conn = self.connect()
        return conn

    def release(self, conn: Any, broken: bool = False) -> None:
        if broken or not self.reset(conn):
            discard(conn)
            return
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        discard(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            discard(conn)


def discard(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()
