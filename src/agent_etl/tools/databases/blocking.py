"""Blocking database calls from the event loop, so that cancelling never races the cleanup."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
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


async def write_stream(writer: Any, batches: AsyncIterator[Any], ctx: Any, errors: tuple[type[BaseException], ...],
                       stop: Callable[[], None] | None = None) -> int:
    """Drive a blocking table writer over a stream: ``open``, ``write`` per batch (``stop`` interrupts
    a write when the load is cancelled), ``finish`` (the commit: never interrupted, it happens or it
    does not) and always ``close``. Driver ``errors`` become ``writer.error(e)``. Once the writer has
    committed, the checkpoint is recorded, even if the load was cancelled just after the COMMIT:
    the rows are in, so is the checkpoint."""
    try:
        try:
            await in_thread(writer.open)
            async for batch in batches:
                await in_thread(writer.write, batch, stop=stop)
            await in_thread(writer.finish)
        except errors as e:
            raise writer.error(e) from e
    finally:
        await in_thread(writer.close)
        if writer.committed:
            await ctx.commit(writer.rows)
    return writer.rows


async def read_stream(reader: Any, errors: tuple[type[BaseException], ...], inc: Any = None,
                      stop: Callable[[], None] | None = None) -> AsyncIterator[Any]:
    """Drive a blocking table reader: ``open``, ``next`` until it returns None, and always ``close``
    (``stop`` interrupts the call in flight when the read is cancelled). Driver ``errors`` become
    ``reader.error(e)``. An incremental read (``inc``) sees every batch and stages its new mark once
    the stream has ended. Iterate it inside ``contextlib.aclosing`` so that a consumer that stops
    early closes the reader at once, not when the generator is collected."""
    try:
        try:
            await in_thread(reader.open, stop=stop)
        except errors as e:
            raise reader.error(e) from e
        while True:
            try:
                batch = await in_thread(reader.next, stop=stop)
            except errors as e:
                raise reader.error(e) from e
            if batch is None:
                break
            if inc is not None:
                inc.observe(batch)
            yield batch
        if inc is not None:
            inc.finish()
    finally:
        await in_thread(reader.close)
