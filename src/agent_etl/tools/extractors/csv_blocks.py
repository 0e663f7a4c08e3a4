"""A CSV file cut into blocks of whole lines, parsed on several cores and returned in order."""

from __future__ import annotations

import os
import re
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from agent_etl.exceptions import ToolError
from agent_etl.tools.extractors.file_source import FileRef, open_stream

PARSERS = min(4, os.cpu_count() or 1)  # CSV blocks parsed at once


def _line_end(buf: pa.Buffer) -> int:
    """The offset just past the last newline in ``buf`` (0 if none), found without copying it."""
    arr, step = np.frombuffer(buf, dtype=np.uint8), 1 << 16
    for end in range(arr.size, 0, -step):
        hits = np.flatnonzero(arr[max(0, end - step):end] == 10)
        if hits.size:
            return max(0, end - step) + int(hits[-1]) + 1
    return 0


def _lines(path: FileRef, size: int) -> int:
    """Lines in the first ``size`` bytes of the file (for the row number of an error)."""
    count = 0
    with open_stream(path) as f:
        while size > 0 and (chunk := f.read(min(size, 1 << 24))):
            count, size = count + chunk.count(b"\n"), size - len(chunk)
    return count


class CSVBlocks:
    """A CSV file cut into blocks at line ends, several blocks parsed at once, returned in order.

    Arrow's streaming reader parses on one core, which alone takes as long as ``read_csv`` of the
    whole file on two. Cutting at newlines is what Arrow does too unless ``newlines_in_values`` is
    set (then ``open_csv`` is used). Blocks are parsed serially, which is what makes Arrow name the
    row of an error; the first block's types hold for the rest, as in the streaming reader.
    """

    def __init__(self, path: FileRef, size: int, read: pacsv.ReadOptions, parse: pacsv.ParseOptions,
                 convert: pacsv.ConvertOptions, start: int = 0, schema: pa.Schema | None = None):
        """``start``/``schema``: resume at that byte offset (a line start after the header) with the
        columns and types of the first read."""
        self._path, self._in = path, open_stream(path)  # decompresses .gz/.bz2/.zst by extension
        self._seekable, self._size, self._carry, self._offset = self._in.seekable(), size, b"", 0
        self._parse, self._pool = parse, ThreadPoolExecutor(PARSERS, thread_name_prefix="agent-etl-csv")
        self._pending: deque[tuple[Future[pa.Table], int]] = deque()
        self.start = 0  # where the block read last starts
        if start:
            try:
                self._skip_to(start)
            except BaseException:
                self.close()
                raise
            self._first, self.schema = None, schema
        else:
            block = self._block()
            self._first = self._table(*block, read, convert) if block else None
            self.schema = self._first.schema if self._first is not None else None
        if self.schema is not None:
            # all types fixed, null too: a value in a column empty so far is then an error with its row
            self._later = (pacsv.ReadOptions(column_names=self.schema.names, encoding=read.encoding),
                           pacsv.ConvertOptions(column_types=self.schema, null_values=convert.null_values,
                                                strings_can_be_null=True))

    def _skip_to(self, offset: int) -> None:
        if self._seekable:
            if offset > self._in.size():
                raise ToolError(f"cannot resume in {self._path}: the position is at byte {offset}, but the file has "
                                f"{self._in.size()} bytes now; it changed since the position was taken, so start "
                                "the read anew")
            self._in.seek(offset)
        else:  # a compressed stream: decompress up to the offset (still far cheaper than parsing)
            left = offset
            while left > 0:
                got = self._in.read_buffer(min(left, 1 << 24)).size
                if got == 0:
                    raise ToolError(f"cannot resume in {self._path}: the position is at byte {offset} of its "
                                    f"contents, but it holds {offset - left} now; it changed since the position was "
                                    "taken, so start the read anew")
                left -= got
        self._offset = offset

    def _block(self) -> tuple[pa.Buffer, int] | None:
        """The next run of whole lines (not copied), and its offset in the file."""
        start, want = self._offset, self._size
        while True:
            chunk = self._in.read_buffer(want)
            eof = chunk.size < want
            data = pa.py_buffer(self._carry + chunk.to_pybytes()) if self._carry else chunk
            cut = data.size if eof else _line_end(data)
            if cut or eof:
                break
            want *= 2  # a line longer than the block: read more
            if self._seekable:
                self._in.seek(start)
            else:
                self._carry = data.to_pybytes()
        if self._seekable:
            self._in.seek(start + cut)  # the partial last line starts the next block
        else:  # a compressed stream cannot seek back, so its partial line is kept
            self._carry = data.slice(cut).to_pybytes()
        self._offset = start + cut
        return (data.slice(0, cut), start) if cut else None

    def _table(self, data: pa.Buffer, start: int, read: pacsv.ReadOptions, convert: pacsv.ConvertOptions) -> pa.Table:
        read = pacsv.ReadOptions(use_threads=False, block_size=data.size + 1, encoding=read.encoding,
                                 column_names=read.column_names, skip_rows=read.skip_rows,
                                 autogenerate_column_names=read.autogenerate_column_names)
        try:
            return pacsv.read_csv(pa.BufferReader(data), read_options=read, parse_options=self._parse,
                                  convert_options=convert)
        except pa.ArrowInvalid as e:  # Arrow counts rows from the block start: count them from the file's
            before = _lines(self._path, start) if start else 0
            raise pa.ArrowInvalid(re.sub(r"Row #(\d+)", lambda m: f"Row #{before + int(m[1])}", str(e))) from e

    def read_next(self) -> pa.RecordBatch | None:
        if self._first is not None:
            table, self._first, self.start = self._first, None, 0
        else:
            while len(self._pending) < PARSERS and (block := self._block()) is not None:
                self._pending.append((self._pool.submit(self._table, *block, *self._later), block[1]))
            if not self._pending:
                return None
            future, self.start = self._pending.popleft()
            table = future.result()
        batches = table.combine_chunks().to_batches()
        return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)

    def mark(self) -> dict[str, Any]:
        """Where the block read last starts: {} for the first (a resume reads the header again)."""
        return {"offset": self.start} if self.start else {}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._in.close()
