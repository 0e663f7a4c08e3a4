"""Where a quality gate sets failing rows aside: a Parquet file by default, or any loader.

A group (or a ``validate`` step) chooses with ``quarantine:``::

    on_failure: quarantine
    quarantine: {tool: sqlite, connection: wh, table: bad_orders}    # any loader and its options
    quarantine: {tool: parquet, path: rejected/orders.parquet}

Without it the rows go to ``<home>/quarantine/<run_id>/<input>.parquet``. Either way each row
carries ``_quarantine_reason`` (the labels of the checks it failed, ``; ``-separated) and
``_run_id``. The loader's options are validated with the spec (a typo is a spec error with its
line). Both sinks take ``write(table)`` from the gate's worker thread:

- ``ParquetFile`` writes synchronously, a row group per 64k bad rows; ``close`` writes what waits
  and keeps the file, so what was set aside stays readable when the run fails or is cancelled.
- ``LoaderSink`` runs the loader as a real ``Loader`` over an async stream of the bad rows, as an
  asyncio task started at the first bad row and fed through a bounded queue: ``write`` blocks the
  gate's thread while the queue is full (backpressure, flat memory). ``finish`` ends the stream
  and waits for the loader's commit; ``abort`` ends the stream with an error, so the loader rolls
  back as it does for any failed stream (nothing half-written in a table).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa

from agent_etl.exceptions import AgentETLError, ToolError

REASON, RUN_ID = "_quarantine_reason", "_run_id"


class ParquetFile:
    """The default sink: one Parquet file per gate, written in the gate's thread.

    A batch has few bad rows; they wait until GROUP_ROWS of them (or GROUP_BYTES) make a row group,
    so the file is not one tiny row group per batch (slower to write and to read). A lock keeps a
    ``close`` from an aborting run out of a ``write`` still under way in the gate's thread."""

    GROUP_ROWS = 65_536
    GROUP_BYTES = 16 << 20

    def __init__(self, path: Path, input: str):
        self.path, self.input = Path(path), input
        self.where = str(self.path)
        self._writer = None
        self._schema: pa.Schema | None = None  # the first table's: later ones are cast to it
        self._held: list[pa.Table] = []
        self._held_rows = self._held_bytes = 0
        self._lock = threading.Lock()

    def write(self, table: pa.Table) -> None:
        with self._lock:
            self._hold(table)

    def _hold(self, table: pa.Table) -> None:
        if self._schema is None:
            self._schema = table.schema
        elif not table.schema.equals(self._schema):
            try:
                table = table.cast(self._schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as e:
                raise ToolError(f"quality gate on {self.input!r}: the batch's columns changed mid-stream and cannot go "
                                f"into the same quarantine file {self.path}: {e}; give the stream one schema "
                                "(cast transform)") from e
        self._held.append(table)
        self._held_rows += table.num_rows
        self._held_bytes += table.get_total_buffer_size()
        if self._held_rows >= self.GROUP_ROWS or self._held_bytes >= self.GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._held:
            return
        table = pa.concat_tables(self._held)
        self._held, self._held_rows, self._held_bytes = [], 0, 0
        try:
            if self._writer is None:
                import pyarrow.parquet as pq

                from agent_etl.private import private_dir, private_file

                if self.path.parent.parent.name == "quarantine":  # <home>/quarantine/<run>/: owner-only
                    private_dir(self.path.parent.parent)
                private_file(private_dir(self.path.parent) / self.path.name)
                # the two added columns repeat a few values; dictionary-encoding only them halves write time,
                # and min/max statistics (a fifth of it, for text) serve no reader of a file of rejects
                self._writer = pq.ParquetWriter(self.path, table.schema, use_dictionary=[REASON, RUN_ID],
                                                write_statistics=False)
            self._writer.write_table(table)
        except OSError as e:
            raise ToolError(f"quality gate on {self.input!r}: cannot write quarantined rows to {self.path}: {e}; "
                            "check that the directory is writable and has space (or set AGENT_ETL_HOME)") from e

    def close(self) -> None:
        """Write the rows that wait and close the file (keeping what was written)."""
        with self._lock:
            try:
                self._flush()
            finally:
                writer, self._writer = self._writer, None
                if writer is not None:
                    writer.close()

    async def finish(self) -> None:
        self.close()

    async def abort(self) -> None:
        self.close()


_END = object()


class LoaderSink:
    """Any loader as a quarantine destination, run as a task over a bounded queue of bad rows."""

    def __init__(self, loader: Any, loop: asyncio.AbstractEventLoop, where: str, input: str, maxsize: int = 2):
        self.loader, self.where, self.input = loader, where, input
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue(maxsize)
        self._task: asyncio.Task | None = None
        self.rows = 0

    # -- the gate's side (a worker thread) --------------------------------------------------------

    def write(self, table: pa.Table) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # the expected case: a worker thread has no loop
            running = None
        if running is self._loop:
            raise RuntimeError("LoaderSink.write blocks; call the gate from a worker thread (asyncio.to_thread)")
        asyncio.run_coroutine_threadsafe(self._put(table), self._loop).result()
        self.rows += table.num_rows

    def close(self) -> None:
        """Nothing to do in the gate's thread: ``finish`` or ``abort`` ends the loader on the loop."""

    # -- the loop's side --------------------------------------------------------------------------

    async def _put(self, item: Any) -> None:
        if self._task is None:
            self._task = self._loop.create_task(self.loader.load(self._stream()),
                                                name=f"quarantine:{self.input}")
        put = asyncio.ensure_future(self._queue.put(item))
        done, _ = await asyncio.wait({put, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if put not in done:  # the loader stopped reading: it failed, say why instead of waiting forever
            put.cancel()
            self._failed()

    async def _stream(self):
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            for batch in item.to_batches():
                yield batch

    async def finish(self) -> None:
        """End the stream and wait for the loader to commit what it got."""
        if self._task is None:
            return
        if not self._task.done():
            await self._put(_END)
        try:
            await self._task
        except AgentETLError as e:
            raise ToolError(f"quality gate on {self.input!r}: quarantine to {self.where} failed: {e}") from e

    async def abort(self) -> None:
        """End the stream with an error: the loader rolls back. Never raises."""
        task, self._task = self._task, None
        if task is None:
            return
        if not task.done():
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(ToolError(f"quality gate on {self.input!r} aborted"))
        await asyncio.gather(task, return_exceptions=True)

    def _failed(self) -> None:
        error = self._task.exception() if self._task.done() and not self._task.cancelled() else None
        raise ToolError(f"quality gate on {self.input!r}: quarantine to {self.where} stopped: "
                        f"{error or 'the loader ended before its input'}") from error


def build_sink(options: dict[str, Any] | None, *, input: str, run_id: str, home: Path, base_dir: Path,
               registry: Any, connections: dict[str, Any] | None = None, resources: Any = None,
               line: int | None = None) -> ParquetFile | LoaderSink:
    """The sink a group's ``quarantine:`` option names (validated with the spec), or the default file."""
    if not options:
        return ParquetFile(Path(home) / "quarantine" / run_id / f"{input}.parquet", input)
    from agent_etl.tools.base import ToolContext

    options = dict(options)
    tool = options.pop("tool")
    cls = registry.get("loader", tool)
    kw = {"resources": resources} if resources is not None else {}
    ctx = ToolContext(run_id=run_id, task=f"{input}_quarantine", base_dir=base_dir, home=Path(home),
                      connections=connections or {}, line=line, **kw)
    loader = cls(cls.Config.model_validate(options), ctx)
    target = options.get("table") or options.get("path") or options.get("stream") or options.get("url") or ""
    where = f"{tool} {target}".strip()
    return LoaderSink(loader, asyncio.get_running_loop(), where, input)
