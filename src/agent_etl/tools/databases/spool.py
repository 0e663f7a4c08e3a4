"""The batches of a commit unit kept on local disk until the unit may be written (``write_stream``
with ``spool``: a single-writer database whose load waits for its siblings before writing)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from typing import Any


class Spool:
    """The batches of the open commit unit, in Arrow IPC stream files of a private temporary
    directory (one file per run of batches with one schema), written and replayed in worker
    threads; the memory held stays one batch. The directory is named for this process
    (``agent_etl.tempfiles``): making one removes those that killed processes left."""

    def __init__(self) -> None:
        from agent_etl.tempfiles import make_dir

        self.dir = make_dir("spool")
        self.files: list[str] = []
        self._sink: Any = None
        self._writer: Any = None
        self._schema: Any = None

    def write(self, batch: Any) -> None:
        import pyarrow as pa

        if self._writer is None or not batch.schema.equals(self._schema, check_metadata=True):
            self._end()
            path = os.path.join(self.dir, f"{len(self.files)}.arrow")
            self._sink = pa.OSFile(path, "wb")
            self._writer = pa.ipc.new_stream(self._sink, batch.schema)
            self.files.append(path)
            self._schema = batch.schema
        self._writer.write_batch(batch)

    def replay(self, write: Callable[[Any], None]) -> None:
        """``write`` every batch spooled since the last replay, in order; then forget them."""
        import pyarrow as pa

        self._end()
        files, self.files = self.files, []
        try:
            for path in files:
                with pa.OSFile(path, "rb") as source:
                    for batch in pa.ipc.open_stream(source):
                        write(batch)
        finally:
            for path in files:
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def _end(self) -> None:
        if self._writer is not None:
            writer, sink, self._writer, self._sink = self._writer, self._sink, None, None
            try:
                writer.close()
            finally:
                sink.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._end()
        shutil.rmtree(self.dir, ignore_errors=True)
