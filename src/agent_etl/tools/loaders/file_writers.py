"""The writers of the file formats, shared by the file loaders and the object-store loaders: CSV,
JSON Lines and Parquet into a ``Sink`` (a local path, or a writable binary stream such as an S3
multipart upload), and hive-style partitioned output in any of them.

A writer has ``write(batch)``, ``close()`` (the output is complete), ``abort()`` (drop it), and, for
``PartitionedOutput``'s memory bound, ``held``/``held_bytes`` (rows waiting for a row group) and
``flush()``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

# Where a writer writes: a local file, or a writable binary stream (an object-store upload, whose
# close() ends the writing; the upload is committed or aborted by its owner, not by the writer)
Sink = Path | BinaryIO


def _where(sink: Sink) -> Any:
    """What a pyarrow writer takes: a local path as text, or the writable stream itself."""
    return str(sink) if isinstance(sink, Path) else sink


class CSVOutput:
    held = held_bytes = 0  # rows go to the sink as they come: nothing waits (see PartitionedOutput)

    def __init__(self, sink: Sink, schema: pa.Schema, options: pacsv.WriteOptions):
        self._sink = sink
        self._w = pacsv.CSVWriter(_where(sink), schema, write_options=options)
        self.write, self.abort = self._w.write_batch, self._w.close

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._w.close()
        if not isinstance(self._sink, Path):
            self._sink.close()


class JSONLinesOutput:
    """Rows as JSON objects, one per line, rendered by DuckDB's to_json (vectorised, no per-row Python)."""

    held = held_bytes = 0  # rows go to the sink as they come: nothing waits (see PartitionedOutput)

    def __init__(self, sink: Sink, schema: pa.Schema):
        import duckdb

        self._con = duckdb.connect()
        self._file = open(sink, "wb") if isinstance(sink, Path) else sink
        lowered = {n.lower() for n in schema.names}
        self._alias = next(a for a in (f"_row{i}" for i in range(len(lowered) + 1)) if a not in lowered)

    def write(self, batch: pa.RecordBatch) -> None:
        # JSON has no NaN or Infinity: write them as null, as pandas and most JSON libraries do.
        for i, field in enumerate(batch.schema):
            if pa.types.is_floating(field.type):
                col = batch.column(i)
                batch = batch.set_column(i, field, pc.if_else(pc.is_finite(col), col, pa.scalar(None, field.type)))
        self._con.register("batch", pa.Table.from_batches([batch]))
        out = self._con.sql(f'select to_json("{self._alias}") || chr(10) from batch as "{self._alias}"')
        for chunk in out.to_arrow_table().column(0).chunks:
            self._file.write(_text(chunk))
        self._con.unregister("batch")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._file.close()
        self._con.close()

    abort = close


def _text(chunk: pa.Array) -> pa.Buffer:
    """The bytes of a string array's values, back to back (a zero-copy view of its data buffer)."""
    if not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
        chunk = chunk.cast(pa.large_string())  # e.g. a string view
    _, offsets, data = chunk.buffers()
    width = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
    offs = np.frombuffer(offsets, dtype=width)
    start, end = int(offs[chunk.offset]), int(offs[chunk.offset + len(chunk)])
    return data.slice(start, end - start)


GROUP_BYTES = 32 << 20  # a row group is written once this much data waits, even short of row_group_size


DICTIONARY_SAMPLE = 16_384  # rows of the first row group whose distinct count decides "auto"
DICTIONARY_MAX_RATIO = 0.5  # "auto" encodes a column with a dictionary when distinct <= this x non-null values


class Dictionary:
    """Which columns to dictionary-encode, decided once from the first rows written (shared by the
    files of a partitioned write). A column of mostly distinct values fills a dictionary page, then
    falls back to plain encoding: the attempt doubled the writer's time and made the file ~20%
    bigger on the pg_1m_rows table; so "auto" keeps dictionaries for the columns that repeat."""

    def __init__(self, choice: str | list[str]):
        self._choice = choice
        self._columns: list[str] | bool | None = None

    def columns(self, table: pa.Table) -> list[str] | bool:
        if self._columns is None:
            self._columns = self._decide(table)
        return self._columns

    def _decide(self, table: pa.Table) -> list[str] | bool:
        if self._choice in ("all", "none"):
            return self._choice == "all"
        if isinstance(self._choice, list):
            return [c for c in self._choice if c in table.column_names]  # less the partition_by columns
        sample, chosen = table.slice(0, DICTIONARY_SAMPLE), []
        for name, column in zip(sample.column_names, sample.columns):
            t = column.type
            if pa.types.is_dictionary(t):
                chosen.append(name)
            elif not (pa.types.is_boolean(t) or pa.types.is_nested(t) or pa.types.is_null(t)):
                values = len(column) - column.null_count
                if values and pc.count_distinct(column).as_py() <= DICTIONARY_MAX_RATIO * values:
                    chosen.append(name)
        return chosen


class ParquetOutput:
    """A Parquet writer that gathers batches into full row groups (one write per batch would make one
    small row group each). What waits is bounded by ``row_group_size`` rows and GROUP_BYTES."""

    def __init__(self, sink: Sink, schema: pa.Schema, compression: str, row_group_size: int,
                 dictionary: Dictionary):
        self._sink, self._compression, self._dictionary = sink, compression, dictionary
        self._w: pq.ParquetWriter | None = None  # opened at the first row group, which decides the dictionaries
        self._schema, self._size = schema, row_group_size
        self._held: list[pa.RecordBatch] = []
        self.held = self.held_bytes = 0

    def _open(self, dictionary: list[str] | bool) -> pq.ParquetWriter:
        self._w = pq.ParquetWriter(_where(self._sink), self._schema, compression=self._compression,
                                   use_dictionary=dictionary)
        return self._w

    def _write(self, table: pa.Table) -> None:
        (self._w or self._open(self._dictionary.columns(table))).write_table(table, row_group_size=self._size)

    def write(self, batch: pa.RecordBatch) -> None:
        self._held.append(batch)
        self.held += batch.num_rows
        self.held_bytes += batch.nbytes
        if self.held >= self._size:
            table = pa.Table.from_batches(self._held, schema=self._schema)
            full = self.held - self.held % self._size
            self._write(table.slice(0, full))
            self._held = table.slice(full).to_batches()
            self.held, self.held_bytes = self.held - full, sum(b.nbytes for b in self._held)
        elif self.held_bytes >= GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.held:
            self._write(pa.Table.from_batches(self._held, schema=self._schema))
        self._held, self.held, self.held_bytes = [], 0, 0
        # the allocator keeps freed row-group buffers for reuse; hand them back so RSS stays flat
        pa.default_memory_pool().release_unused()

    def close(self) -> None:
        self.flush()
        (self._w or self._open(False)).close()  # no rows: a file with the schema and no row group
        if not isinstance(self._sink, Path):
            self._sink.close()

    def abort(self) -> None:
        self._held = []
        if self._w is not None:
            self._w.close()


class PartitionedOutput:
    """Hive-style ``col=value/part-<n><suffix>`` files, one open writer per partition: ``open_part``
    opens the writer of a file (a path relative to the output) with the schema less ``by``."""

    def __init__(self, open_part: Callable[[str, pa.Schema], Any], schema: pa.Schema, by: list[str], suffix: str,
                 row_group_size: int, max_open: int = 256):
        self._open_part, self._by, self._suffix, self._size = open_part, by, suffix, row_group_size
        self._schema, self._max_open = pa.schema([f for f in schema if f.name not in by]), max_open
        self._open: dict[tuple[str, ...], Any] = {}
        self._parts: dict[tuple[str, ...], int] = {}

    def write(self, batch: pa.RecordBatch) -> None:
        table = pa.Table.from_batches([batch])
        table = table.take(pc.sort_indices(table, [(c, "ascending") for c in self._by]))  # nulls sort last
        # On sorted input a single-threaded group_by lists the groups in order, so counts give the runs.
        groups = table.group_by(self._by, use_threads=False).aggregate([([], "count_all")])
        keys = zip(*(_segments(groups.column(c)) for c in self._by))
        data, start = table.drop_columns(self._by), 0
        for key, n in zip(keys, groups.column("count_all").to_pylist()):  # a loop over partitions, not rows
            writer = self._open.get(key) or self._start(key)
            for part in data.slice(start, n).to_batches():
                writer.write(part)
            start += n
        # Bound memory: all partitions together hold at most about one row group.
        if sum(w.held for w in self._open.values()) >= self._size or \
                sum(w.held_bytes for w in self._open.values()) >= GROUP_BYTES:
            for w in self._open.values():
                w.flush()
        if len(self._open) > self._max_open:
            self.close()

    def _start(self, key: tuple[str, ...]) -> Any:
        n = self._parts.get(key, 0)
        self._parts[key] = n + 1
        rel = "/".join([*(f"{c}={v}" for c, v in zip(self._by, key)), f"part-{n}{self._suffix}"])
        writer = self._open[key] = self._open_part(rel, self._schema)
        return writer

    def close(self) -> None:
        for w in self._open.values():
            w.close()
        self._open = {}

    def abort(self) -> None:
        for w in self._open.values():
            w.abort()
        self._open = {}


def local_part(root: Path, make: Callable[[Path, pa.Schema], Any]) -> Callable[[str, pa.Schema], Any]:
    """``PartitionedOutput``'s ``open_part`` for a local directory: its folders made as they are needed."""
    def open_part(rel: str, schema: pa.Schema) -> Any:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return make(path, schema)

    return open_part


def parquet_part(sink: Sink, schema: pa.Schema, *, compression: str, row_group_size: int,
                  dictionary: Dictionary) -> ParquetOutput:
    return ParquetOutput(sink, schema, compression, row_group_size, dictionary)


def _segments(column: pa.ChunkedArray) -> list[str]:
    """Hive path segments of partition values, in Arrow's text form, URI-escaped like pyarrow.dataset."""
    text = pc.cast(column, pa.string()).to_pylist()
    return ["__HIVE_DEFAULT_PARTITION__" if v is None else urllib.parse.quote(v, safe="") for v in text]
