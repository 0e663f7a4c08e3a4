"""``Sender``: encoded COPY data on its way to the server, one write at a time, in order, in a thread.

The loader encodes the next part while the previous one is being written. A write that returns
at once (the common case) is simply waited for before the next one. A write that keeps the server
busy for a long time (a merge applying a chunk of its stage, ``INSERT ... ON CONFLICT``, is told
by ``long``) does not stop the encoding: up to ``AHEAD_BYTES`` of encoded parts wait here and go
to the server together once it is free, so the client's work hides behind the server's instead
of following it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from agent_etl.tools.databases.blocking import in_thread

ENCODE_ROWS = 32_768  # rows encoded and sent together
AHEAD_BYTES = 8 << 20  # encoded parts kept while the server works through a long write (32 MB held 60 MB more at 10M rows and gained nothing)

Parts = list[tuple[memoryview, int]]


class Sender:
    def __init__(self, write: Callable[[Parts], Any], long: Callable[[int], bool]):
        """``write(parts)`` sends parts (blocking, run in a thread); ``long(rows)``: whether writing
        that many more rows will keep the server busy (asked before the write starts)."""
        self._write, self._long = write, long
        self.pending: asyncio.Future | None = None
        self._pending_long = False
        self._ahead: Parts = []
        self._bytes = 0

    async def send(self, data: memoryview, rows: int) -> None:
        if self.pending is not None and not self.pending.done() and self._pending_long \
                and self._bytes + len(data) <= AHEAD_BYTES:
            self._ahead.append((data, rows))
            self._bytes += len(data)
            return
        await self._wait()
        parts, self._ahead, self._bytes = [*self._ahead, (data, rows)], [], 0
        self._pending_long = self._long(sum(r for _, r in parts))
        self.pending = asyncio.ensure_future(in_thread(self._write, parts))

    async def settle(self) -> None:
        """Everything sent and written (before anything else runs on the connection)."""
        await self._wait()
        if self._ahead:
            parts, self._ahead, self._bytes = self._ahead, [], 0
            await in_thread(self._write, parts)

    async def _wait(self) -> None:
        if self.pending is not None:
            await self.pending  # kept until it ends: ``drain`` waits for it after a failure
            self.pending = None

    async def drain(self) -> None:
        """After a failure or a cancellation: wait for a write still running in its thread before
        the connection is closed under it; what waits here is dropped."""
        self._ahead, self._bytes = [], 0
        fut, self.pending = self.pending, None
        while fut is not None and not fut.done():
            try:
                await asyncio.wait({fut})
            except asyncio.CancelledError:
                pass
        if fut is not None and not fut.cancelled():
            fut.exception()
