"""Positions of a file read, and what a read resumed from one needs: the rows to skip, the schema.

Every read is resumable (``resume_from``): the files are read in name order and each file's rows
in file order, so a position names the file (``file_index`` and ``file`` in the sorted list; a
list that changed before it is an error, not a read of other rows) and how far into it:

- parquet: ``file_rows``, turned into a row group and the rows into it from the file's footer;
  the read starts at that row group and slices off the rows already yielded.
- csv: ``offset``, the byte offset of the block (a line boundary) the last batch came from, and
  ``skip``, its rows already yielded: the resumed read seeks there and parses on from that block,
  with the first read's column names and types (``schema``). In the first block of the file the
  position holds neither: the file is read from its header and ``file_rows`` rows are dropped.
  With ``newlines_in_values`` (or UTF-16/32) a line end is no row boundary: the file is parsed
  again from its start and ``file_rows`` rows are dropped.
- jsonl, json, excel: ``file_rows`` rows are dropped from a read of the file from its start
  (Arrow's JSON reader says nothing of where a block started; parsing again is exact, and counting
  lines instead would go wrong on a line holding two objects).

``schema`` (the first file's Arrow schema, IPC-serialised, base64) is in the position whenever the
resumed read could not infer the same types again itself: in a file after the first, or from a
CSV block after the first. Parquet takes it from the footers.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pyarrow as pa

from agent_etl.exceptions import ToolError
from agent_etl.tools.extractors.file_source import Source


def skipping(source: Source, rows: int, path: Path, task: str) -> Source:
    """``source`` without its first ``rows`` rows (a file that has fewer is an error: it changed).
    Its marks say how many rows of the batch were dropped (``_skipped``), so a position taken in
    that batch counts them."""
    left, dropped = rows, 0

    def read_next() -> pa.RecordBatch | None:
        nonlocal left, dropped
        while True:
            batch = source.read_next()
            if batch is None:
                if left:
                    raise ToolError(f"task {task!r}: cannot resume in {path}: the position is {rows} rows into it, "
                                    f"but it has {rows - left} now; the file changed since the position was taken, "
                                    "so start the read anew")
                return None
            if left == 0:
                dropped = 0
                return batch
            if batch.num_rows > left:
                batch, dropped, left = batch.slice(left), left, 0
                return batch
            left -= batch.num_rows

    def mark() -> dict[str, Any]:
        return dict(source.mark() if source.mark is not None else {}, _skipped=dropped)

    return Source(source.schema, read_next, source.close, mark)


def schema_text(schema: pa.Schema) -> str:
    """An Arrow schema as JSON-safe text (IPC bytes, base64): exact, metadata included."""
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def schema_of(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))
