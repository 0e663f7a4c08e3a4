"""The data plane between tasks: bounded, fanned-out channels of Arrow batches.

A task's output goes into one ``Channel``; each task that reads it gets its own bounded queue, so
a slow reader holds back the producer (backpressure) and memory stays flat. Batches travel inside
an ``Envelope`` that carries the source positions reached with that batch, so a loader knows what
to checkpoint when it commits. Tools never see envelopes: they get plain ``pa.RecordBatch``
iterators from ``batches()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from agent_etl.exceptions import UpstreamError


@dataclass(slots=True)
class Envelope:
    batch: pa.RecordBatch
    position: dict[str, Any]  # source task -> its position after this batch
    boundary: bool = False  # a commit unit of the loads downstream ends with this batch


class _End:
    __slots__ = ("error", "position")

    def __init__(self, error: BaseException | None, position: dict[str, Any] | None = None):
        self.error = error
        self.position = position


class Channel:
    def __init__(self, name: str, consumers: int, maxsize: int = 4):
        self.name = name
        self._queues = [asyncio.Queue(maxsize) for _ in range(consumers)]
        self._live = [True] * consumers
        self.closed = False

    async def put(self, env: Envelope) -> None:
        for q, live in zip(self._queues, self._live):
            if live:
                await q.put(env)

    async def close(self, error: BaseException | None = None, position: dict[str, Any] | None = None) -> None:
        """End the stream: with ``error``, or cleanly with the sources' ``position`` once everything
        was read (an incremental source's new mark is known only then)."""
        if self.closed:
            return
        self.closed = True
        end = _End(error, position)
        for i, q in enumerate(self._queues):
            if self._live[i]:
                await q.put(end)

    def detach(self, i: int) -> None:
        """Consumer ``i`` stopped reading: drop what it holds so the producer never waits on it."""
        self._live[i] = False
        q = self._queues[i]
        while not q.empty():
            q.get_nowait()

    async def envelopes(self, i: int) -> AsyncIterator[Envelope]:
        """The envelopes of consumer ``i``; a clean end with a final position comes as an envelope
        with no batch (``Tracker`` takes its position and yields nothing for it)."""
        q = self._queues[i]
        try:
            while True:
                item = await q.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        root = getattr(item.error, "root", None) or self.name
                        raise UpstreamError(f"skipped: {root!r} failed", root) from item.error
                    if item.position:
                        yield Envelope(None, item.position)
                    return
                yield item
        finally:
            self.detach(i)


class Tracker:
    """Unwraps envelopes for a tool and remembers the latest position seen on each input."""

    def __init__(self) -> None:
        self.position: dict[str, Any] = {}
        self.boundary = False  # the last batch handed out ends a commit unit

    async def batches(self, envelopes: AsyncIterator[Envelope]) -> AsyncIterator[pa.RecordBatch]:
        async for env in envelopes:
            self.position.update(env.position)
            if env.batch is None:  # the end, with the sources' final position
                continue
            self.boundary = env.boundary
            yield env.batch


def slices(batch: pa.RecordBatch, max_rows: int) -> Iterator[pa.RecordBatch]:
    """Zero-copy slices of at most ``max_rows`` rows."""
    n = batch.num_rows
    if n <= max_rows:
        yield batch
        return
    for start in range(0, n, max_rows):
        yield batch.slice(start, max_rows)


async def to_reader(stream: AsyncIterator[pa.RecordBatch], schema: pa.Schema | None = None) -> pa.RecordBatchReader:
    """A ``pa.RecordBatchReader`` over an async stream, to hand to a library that runs in a thread.

    The reader must be consumed in a worker thread (``asyncio.to_thread``), never on the loop
    thread: each ``read_next_batch`` waits for the loop to produce the next batch. Without a
    ``schema`` the first batch is read now to learn it; an empty stream gives an empty reader.
    """
    loop = asyncio.get_running_loop()
    it = aiter(stream)
    done = object()

    async def next_batch() -> Any:
        try:
            return await anext(it)
        except StopAsyncIteration:
            return done

    first = None
    if schema is None:
        first = await next_batch()
        if first is done:
            return pa.RecordBatchReader.from_batches(pa.schema([]), [])
        schema = first.schema

    def gen() -> Iterator[pa.RecordBatch]:
        if first is not None:
            yield first
        while True:
            batch = asyncio.run_coroutine_threadsafe(next_batch(), loop).result()
            if batch is done:
                return
            yield batch

    return pa.RecordBatchReader.from_batches(schema, gen())
