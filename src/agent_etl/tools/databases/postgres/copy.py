"""Reading ``COPY ... TO STDOUT (FORMAT binary)`` into Arrow record batches, in worker threads.

Per read (one per partition) two threads: the *fetch* thread drives libpq directly (``PGconn``:
non-blocking ``get_copy_data`` and ``poll`` on the socket, so the GIL is free while the server
works) and appends each row message to a bytearray, noting its length; every ~1 MiB of rows (a
block that stays in the CPU cache while it is decoded) goes through a small queue to the *decode*
thread, which turns it into Arrow arrays (``decode``) and concatenates blocks into batches of
``batch_size`` rows. Batches reach the event loop through an asyncio queue; a semaphore bounds the
batches in flight, so memory stays flat whatever the table size.

That is about half the Python work per row of psycopg's ``Copy`` iterator, whose row-at-a-time
generator is the anchor of ``benchmarks/pg_to_parquet.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import select
import threading
from array import array
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from agent_etl.tools.databases.postgres.columns import PgColumn
from agent_etl.tools.databases.postgres.decode import RowBlock, decode, empty

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
TRAILER = b"\xff\xff"
BLOCK_BYTES = 2 << 20  # rows decoded together: near the L2 cache size, where numpy gathers are 3x faster
ROWS_PER_CHECK = 64  # messages read between two block-size checks (fewer for wide rows)
BLOCKS_AHEAD = 8  # raw blocks between fetch and decode
BATCHES_AHEAD = 2  # decoded batches waiting for the consumer, per read
POLL_MS = 200  # how often a waiting thread looks at the stop flag
CANCEL_TIMEOUT = 5  # seconds to get an abandoned COPY cancelled


class Stopped(Exception):
    """The consumer went away; the read ends (and its connection is discarded)."""


class _End:
    """The last item of a fetch thread's queue: how it ended."""

    def __init__(self, error: BaseException | None):
        self.error = error


def copy_blocks(conn: Any, statement: bytes, stop: threading.Event) -> Iterator[tuple[bytearray, np.ndarray]]:
    """The rows of a binary COPY TO as (bytes, row lengths) blocks; PostgreSQL's errors are raised."""
    pg = conn.pgconn
    poller = select.poll()
    poller.register(pg.socket, select.POLLIN)

    def wait() -> None:
        while not poller.poll(POLL_MS):
            if stop.is_set():
                _cancel(conn)
                raise Stopped
        pg.consume_input()

    pg.send_query(statement)
    _result(pg, wait, expect="COPY_OUT")
    get = pg.get_copy_data
    nbytes, first = get(1)
    while nbytes == 0:
        wait()
        nbytes, first = get(1)
    if nbytes < 0 or bytes(first[:11]) != SIGNATURE:
        _result(pg, wait, expect="COMMAND_OK")
        raise ValueError("COPY did not start with the binary COPY signature")
    skip = 19 + int.from_bytes(first[15:19], "big")  # signature, flags, header extension
    buf, lengths = bytearray(first[skip:]), array("q")
    if buf == TRAILER:  # an empty result: the header and the trailer come in one message
        buf.clear()
    if buf:
        lengths.append(len(buf))
    done, per_check = False, ROWS_PER_CHECK
    while not done:
        append = lengths.append
        for _ in range(per_check):
            nbytes, data = get(1)
            if nbytes > 0:
                # the trailer (field count -1) is never a row, so it is dropped as it arrives: a
                # block that fills up on it must not carry it to the decoder
                if nbytes == 2 and data == TRAILER:
                    continue
                buf += data
                append(nbytes)
            elif nbytes == 0:
                wait()
            else:
                done = True
                break
        if len(buf) >= BLOCK_BYTES or done:
            if stop.is_set():
                _cancel(conn)
                raise Stopped
            if lengths:
                # wide rows: look at the size more often, so that a block stays near BLOCK_BYTES
                per_check = max(1, min(ROWS_PER_CHECK, BLOCK_BYTES * len(lengths) // (8 * len(buf) or 1)))
                yield buf, np.frombuffer(lengths, np.int64)
            buf, lengths = bytearray(), array("q")
    _result(pg, wait, expect="COMMAND_OK")


def _cancel(conn: Any) -> None:
    """Stop the server's side of an abandoned COPY now (the connection is discarded after)."""
    with contextlib.suppress(Exception):
        conn.cancel_safe(timeout=CANCEL_TIMEOUT)


def _result(pg: Any, wait: Callable[[], None], expect: str) -> None:
    """Read the statement's result without blocking in libpq (which would hold the GIL)."""
    import psycopg
    from psycopg import pq

    while pg.is_busy():
        wait()
    res = pg.get_result()
    if res is None:
        raise psycopg.OperationalError("the server closed the COPY without a result")
    status = pq.ExecStatus(res.status)
    if status.name != expect:
        error = psycopg.errors.error_from_result(res, encoding="utf-8")
        while pg.get_result() is not None:  # the connection is idle again only after the last result
            pass
        raise error
    if expect == "COMMAND_OK":
        while pg.is_busy():
            wait()
        while pg.get_result() is not None:
            pass


class CopyRead:
    """The batches of one or more binary COPY statements (partitions) read in parallel threads.

    ``opener(i)`` is a context manager giving the connection of read ``i`` (in its transaction,
    if any), ``statements[i]`` its COPY. ``decode_error`` turns a decoding problem into the error
    the task raises; ``on_stop`` runs when the stream ends early (to release a waiting opener).
    An empty result gives one 0-row batch with the columns' types.
    """

    def __init__(self, opener: Callable[[int], Any], statements: list[bytes], columns: list[PgColumn],
                 schema: pa.Schema, batch_size: int, decode_error: Callable[[BaseException], BaseException],
                 on_stop: Callable[[], None] | None = None):
        self.opener, self.statements, self.on_stop = opener, statements, on_stop
        self.columns, self.schema, self.batch_size = columns, schema, max(1, batch_size)
        self.decode_error = decode_error
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.slots = threading.Semaphore(BATCHES_AHEAD * len(statements))
        self.rows = 0

    async def batches(self):
        loop = asyncio.get_running_loop()
        out: asyncio.Queue = asyncio.Queue()

        def deliver(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens any more
                loop.call_soon_threadsafe(out.put_nowait, item)

        for i, statement in enumerate(self.statements):
            raw: queue.Queue = queue.Queue(BLOCKS_AHEAD)
            for target in (self._fetch, self._decode):
                t = threading.Thread(target=target, args=(i, statement, raw, deliver), daemon=True,
                                     name=f"pg-copy-{i}-{target.__name__[1:]}")
                t.start()
                self.threads.append(t)
        running, emitted = len(self.statements), False
        try:
            while running:
                kind, value = await out.get()
                if kind == "error":
                    raise value
                if kind == "done":
                    running -= 1
                    continue
                self.slots.release()
                self.rows += value.num_rows
                emitted = True
                yield value
            if not emitted:  # an empty result still gives one 0-row batch, so the schema travels
                yield empty(self.schema)
        finally:
            self.stop.set()
            if self.on_stop is not None:
                self.on_stop()
            await asyncio.to_thread(self.join)

    def join(self) -> None:
        for t in self.threads:
            t.join()

    def _get(self, q: queue.Queue) -> Any:
        while True:
            try:
                return q.get(timeout=POLL_MS / 1000)
            except queue.Empty:
                if self.stop.is_set():
                    raise Stopped from None

    def _put(self, q: queue.Queue, item: Any) -> None:
        while True:
            try:
                q.put(item, timeout=POLL_MS / 1000)
                return
            except queue.Full:
                if self.stop.is_set():
                    raise Stopped from None

    def _fetch(self, i: int, statement: bytes, raw: queue.Queue, deliver: Callable[[Any], None]) -> None:
        try:
            with self.opener(i) as conn:
                for block in copy_blocks(conn, statement, self.stop):
                    self._put(raw, block)
        except Stopped:
            return
        except Exception as e:  # noqa: BLE001 - handed to the consumer, which raises it in the task
            self._put_end(raw, e)
            return
        self._put_end(raw, None)

    def _put_end(self, raw: queue.Queue, error: BaseException | None) -> None:
        with contextlib.suppress(Stopped):
            self._put(raw, _End(error))

    def _decode(self, i: int, statement: bytes, raw: queue.Queue, deliver: Callable[[Any], None]) -> None:
        parts: list[pa.RecordBatch] = []
        rows = 0
        try:
            while True:
                item = self._get(raw)
                if isinstance(item, _End):
                    if item.error is not None:
                        deliver(("error", item.error))
                        return
                    break
                try:
                    batch = decode(RowBlock(*item), self.columns, self.schema)
                except Exception as e:
                    raise self.decode_error(e) from e
                parts.append(batch)
                rows += batch.num_rows
                if rows >= self.batch_size:
                    parts, rows = self._emit(parts, deliver)
            if parts:
                self._emit(parts, deliver, final=True)
            deliver(("done", None))
        except Stopped:
            return
        except Exception as e:  # noqa: BLE001 - handed to the consumer, which raises it in the task
            self.stop.set()
            deliver(("error", e))

    def _emit(self, parts: list[pa.RecordBatch], deliver: Callable[[Any], None],
              final: bool = False) -> tuple[list[pa.RecordBatch], int]:
        """Deliver ``batch_size`` rows (all of them if ``final``); return what is left over."""
        whole = pa.concat_batches(parts) if len(parts) > 1 else parts[0]
        while whole.num_rows >= self.batch_size or (final and whole.num_rows):
            batch, whole = whole.slice(0, self.batch_size), whole.slice(self.batch_size)
            while not self.slots.acquire(timeout=POLL_MS / 1000):
                if self.stop.is_set():
                    raise Stopped
            deliver(("batch", batch))
        return ([whole] if whole.num_rows else []), whole.num_rows
