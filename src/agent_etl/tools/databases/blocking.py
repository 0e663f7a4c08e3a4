"""Blocking database calls from the event loop, so that cancelling never races the cleanup."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def in_thread(fn: Callable[..., Any], *args: Any, stop: Callable[[], None] | None = None) -> Any:
    """Run blocking database work in a worker thread; on cancellation, wait for it to stop.

    A cancelled await would otherwise return while the thread still uses the connection, and the
    cleanup (rollback, close) would race it. ``stop`` asks the thread to give up early.
    """
    fut = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        if stop is not None:
            stop()
        while not fut.done():
            try:
                await asyncio.wait({fut})
            except asyncio.CancelledError:
                pass
        if not fut.cancelled():
            fut.exception()  # retrieved: the cancellation is what propagates
        raise
