"""The base of per-batch transforms that run DuckDB SQL (filter, derive, dedupe): one connection
per transform, and the run's temporary directory it may spill to."""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from agent_etl.tools.base import BatchTransform
from agent_etl.tools.databases.duckdb.in_memory import connect
from agent_etl.tools.transforms.inputs import skip_empty


def spool_dir(ctx: Any) -> Path:
    """The folder of the state folder's ``tmp/`` for a transform's files and DuckDB's spills (made
    only when needed), named for this process (``agent_etl.tempfiles``): those a killed process left
    there are removed first."""
    from agent_etl.tempfiles import new_name, sweep

    tmp = ctx.home / "tmp"
    if tmp.is_dir():
        sweep("duckdb", folder=str(tmp))
    return tmp / new_name("duckdb")


def remove_spool(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # tmp/, if nothing else is in it


class DuckDBBatchTransform(BatchTransform):
    """A per-batch transform with one DuckDB connection of its own, closed when the stream ends.

    ``apply`` runs in worker threads; ``self.lock`` keeps the connection out of two threads at
    once. With ``spills`` the connection may spill to a temporary directory of the run, removed
    at the end.
    """

    threaded = True
    spills: ClassVar[bool] = False

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self._con: Any = None
        self._spool: Path | None = None
        self.lock = threading.Lock()

    @property
    def con(self) -> Any:
        """The connection (call with ``self.lock`` held)."""
        if self._con is None:
            self._con = connect(self._spool / "duckdb" if self._spool else None)
        return self._con

    async def run(self, inputs: dict[str, AsyncIterator[pa.RecordBatch]]) -> AsyncIterator[pa.RecordBatch]:
        if self.spills:
            self._spool = spool_dir(self.ctx)
        try:
            async with contextlib.aclosing(skip_empty(super().run(inputs))) as batches:
                async for batch in batches:
                    yield batch
        finally:
            if self._con is not None:
                self._con.interrupt()  # a cancelled run may leave a query going in a worker thread
                with self.lock:
                    self._con.close()
                    self._con = None
            if self._spool is not None:
                remove_spool(self._spool)
