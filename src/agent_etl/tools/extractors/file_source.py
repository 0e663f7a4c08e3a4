"""One open file as a source of Arrow batches, read in a worker thread a little ahead of its
consumer so that parsing overlaps with what the consumer does; the block size of a read; and how
the readers open what they read: a local ``Path``, or a ``StoredFile`` (an object in a store such
as S3), through ``open_stream``, ``open_random``, ``file_size`` and ``read_bytes``."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa

from agent_etl.exceptions import ToolError

READ_ERRORS = (pa.ArrowException, OSError, UnicodeError)  # a bad or unreadable file; anything else is a bug
READ_AHEAD = 2  # batches read ahead of the consumer: they absorb its slow steps (e.g. a row group write)


class StoredFile:
    """A file that is not on the local disk (an S3 object): what the file readers need of it.
    ``str()`` names it in positions and messages (``s3://bucket/key``)."""

    name: str  # the last part of its name, e.g. ``part-0.csv.gz``

    def size(self) -> int:
        raise NotImplementedError

    def stream(self) -> pa.NativeFile:
        """Its contents from the start, decompressed as its name says (.gz, .zst, .bz2)."""
        raise NotImplementedError

    def random(self) -> pa.NativeFile:
        """Its raw bytes, seekable (ranged reads): Parquet, or an uncompressed CSV read from an offset."""
        raise NotImplementedError

    def sample(self, size: int) -> bytes:
        """About the first ``size`` bytes of its contents (decompressed), cheaply: one short read."""
        with self.stream() as f:
            return f.read(size)


FileRef = Path | StoredFile  # what the file readers read


def open_stream(file: FileRef) -> pa.NativeFile:
    """The decompressed contents of ``file``; a local uncompressed file is seekable, so is a stored
    one that is neither compressed nor large (see ``StoredFile.stream``)."""
    return file.stream() if isinstance(file, StoredFile) else pa.input_stream(str(file))


def file_size(file: FileRef) -> int:
    return file.size() if isinstance(file, StoredFile) else file.stat().st_size


def read_bytes(file: FileRef) -> bytes:
    if isinstance(file, StoredFile):
        with file.stream() as f:
            return f.read()
    return file.read_bytes()


class Source:
    """One open file: its schema and a blocking ``read_next`` that returns None at the end.

    ``mark``, if given, is called right after each ``read_next`` (in the same thread): where the
    batch just read starts in the file, as position keys a resumed read can start from ({} for
    "from the start of the file")."""

    def __init__(self, schema: pa.Schema, read_next: Callable[[], pa.RecordBatch | None],
                 close: Callable[[], Any] = lambda: None, mark: Callable[[], dict[str, Any]] | None = None):
        self.schema, self.read_next, self.close, self.mark = schema, read_next, close, mark


async def read_ahead(source: Source, explain: Callable[[Exception], ToolError]
                     ) -> AsyncIterator[tuple[pa.RecordBatch, dict[str, Any]]]:
    """Read up to READ_AHEAD batches ahead in a worker thread, so parsing overlaps with the consumer;
    each batch comes with where it starts in the file (``Source.mark``)."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="agent-etl-read")  # one thread: reads stay in order
    ended = False

    def read() -> tuple[pa.RecordBatch, dict[str, Any]] | None:
        nonlocal ended
        if ended:
            return None
        try:
            batch = source.read_next()
        except BaseException:
            ended = True
            raise
        ended = batch is None
        return None if batch is None else (batch, source.mark() if source.mark is not None else {})

    loop = asyncio.get_running_loop()
    pending = deque(loop.run_in_executor(pool, read) for _ in range(READ_AHEAD))
    try:
        while True:
            try:
                batch = await pending.popleft()
            except READ_ERRORS as e:
                raise explain(e) from e
            if batch is None:
                return
            pending.append(loop.run_in_executor(pool, read))
            yield batch
    finally:
        for fut in pending:
            if not fut.done():
                fut.cancel()
            elif not fut.cancelled():
                fut.exception()  # mark retrieved: the consumer stopped, later reads are moot
        # A read may still run; closing the reader under it would crash, so wait for it (one batch).
        pool.shutdown(wait=True, cancel_futures=True)
        source.close()


def block_size(path: FileRef, batch_size: int) -> int:
    """Bytes that hold about ``batch_size`` rows (a block becomes a batch), from the start of the file."""
    if isinstance(path, StoredFile):
        sample = path.sample(1 << 16)
    else:
        with pa.input_stream(str(path)) as f:  # decompresses .gz/.bz2/.zst by extension
            sample = f.read(1 << 16)
    return int(min(max(batch_size * len(sample) / max(sample.count(b"\n"), 1) * 0.9, 1 << 20), 64 << 20))
