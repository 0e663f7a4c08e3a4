"""File extractors: CSV, JSON Lines, JSON and Parquet, from a file, a directory or a glob.

Every format but ``json`` is read in bounded blocks by a worker thread a little ahead of the
consumer, and sliced to at most ``ctx.batch_size`` rows. All files of one read share the first
file's schema: later files are cast to it, and one that cannot be is an error naming both files.

Every read is resumable (``resume_from``); what a position holds for each format is in
``file_position``, the read and resume shared by the formats in ``file_extractor``.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterator
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
from pydantic import Field

from agent_etl.exceptions import ToolError
from agent_etl.tools.base import ToolContext
from agent_etl.tools.extractors.csv_blocks import CSVBlocks
from agent_etl.tools.extractors.file_config import FileConfig, TypedFileConfig
from agent_etl.tools.extractors.file_extractor import FileExtractor
from agent_etl.tools.extractors.file_position import skipping
from agent_etl.tools.extractors.file_source import (READ_ERRORS, FileRef, Source, StoredFile, block_size,
                                                    file_size, open_stream, read_bytes)


_CSV_CONVERSION = re.compile(
    r"In CSV column #(\d+): (?:Row #(\d+): )?CSV conversion error to (.+?): (?:invalid value '(.*)'|(.*))", re.S)
_CSV_FIELDS = re.compile(r"CSV parse error: (?:Row #(\d+): )?Expected (\d+) columns, got (\d+): ?(.*)", re.S)


class CSVConfig(TypedFileConfig):
    """Read CSV files, in blocks; types are inferred from the first block unless given."""

    delimiter: str = Field(",", min_length=1, max_length=1, description="the character between fields")
    quote_char: str = Field('"', min_length=1, max_length=1, description="the character that quotes a field")
    header: bool = Field(True, description="the first line holds the column names")
    columns: list[str] | None = Field(None, description="column names to use (replaces the header if there is one)")
    null_values: list[str] | None = Field(None, description="strings read as null (default: '', NULL, NA, N/A, ...)")
    encoding: str = Field("utf-8", description="the files' text encoding (utf-8 is read fastest)")
    newlines_in_values: bool = Field(False, description="quoted values may hold line breaks (parses on one core)")
    bad_rows: Literal["fail", "skip"] = Field(
        "fail", description="rows with the wrong number of fields: fail, or skip them (counted in skipped_rows)")
    block_size: int | None = Field(None, ge=1 << 16, le=1 << 30,
                                   description="bytes per block; default: about batch_size rows, 1-64 MiB")


class CSVExtractor(FileExtractor):
    """Read CSV files (a file, a directory of .csv files or a glob), in blocks parsed on all cores."""

    fmt = "csv"
    suffixes = (".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".tsv")
    Config = CSVConfig
    config: CSVConfig

    def __init__(self, config: CSVConfig, ctx: ToolContext):
        super().__init__(config, ctx)
        self.skipped_rows = 0
        self._skip_lock = threading.Lock()

    def _on_bad_row(self, row: Any) -> str:
        if self.config.bad_rows == "fail":
            return "error"
        with self._skip_lock:  # called from the parser threads
            self.skipped_rows += 1
        return "skip"

    def _open(self, path: FileRef, target: pa.Schema | None) -> Source | None:
        return self._open_csv(path, target)

    def _open_at(self, path: FileRef, target: pa.Schema | None, position: dict[str, Any]) -> Source | None:
        offset = position.get("offset")
        if not offset:  # in the first block: read the header again and drop the rows already yielded
            return super()._open_at(path, target, position)
        if target is None or self._streamed():
            raise ToolError(f"task {self.ctx.task!r}: cannot resume in {path} at byte {offset}: the position has no "
                            "schema, or the read no longer cuts the file into blocks (newlines_in_values, encoding); "
                            "start the read anew")
        source = self._open_csv(path, target, offset)
        return None if source is None else skipping(source, position.get("skip", 0), path, self.ctx.task)

    def _streamed(self) -> bool:
        """Whether Arrow's streaming reader reads the file: line ends are not findable in the raw bytes."""
        c = self.config
        return c.newlines_in_values or c.encoding.lower().replace("-", "").startswith(("utf16", "utf32"))

    def _open_csv(self, path: FileRef, target: pa.Schema | None, offset: int = 0) -> Source | None:
        c = self.config
        size = c.block_size or block_size(path, self.ctx.batch_size)
        read = pacsv.ReadOptions(use_threads=False, block_size=size, encoding=c.encoding, column_names=c.columns,
                                 skip_rows=1 if c.columns and c.header else 0,
                                 autogenerate_column_names=not c.header and not c.columns)
        parse = pacsv.ParseOptions(delimiter=c.delimiter, quote_char=c.quote_char,
                                   newlines_in_values=c.newlines_in_values, invalid_row_handler=self._on_bad_row)
        convert = pacsv.ConvertOptions(column_types=c.arrow_types(target), null_values=c.null_values,
                                       strings_can_be_null=True)
        if self._streamed():
            if file_size(path) == 0:  # line ends are not findable in the raw bytes: Arrow cuts the rows
                return None
            stream = open_stream(path)
            try:
                reader = pacsv.open_csv(stream, read_options=read, parse_options=parse, convert_options=convert)
            except BaseException:
                stream.close()
                raise
            self._check_text(reader.schema, path, lambda: (reader.close(), stream.close()))
            return self._known_columns(Source(reader.schema, lambda: next(reader, None),
                                              lambda: (reader.close(), stream.close())), path)
        try:
            blocks = CSVBlocks(path, size, read, parse, convert, offset, target)
        except ToolError as e:
            raise ToolError(f"task {self.ctx.task!r}: {e}") from None
        if blocks.schema is None:
            blocks.close()
            return None
        self._check_text(blocks.schema, path, blocks.close)
        return self._known_columns(Source(blocks.schema, blocks.read_next, blocks.close, blocks.mark), path)

    def _check_text(self, schema: pa.Schema, path: FileRef, close: Any) -> None:
        """Arrow infers ``binary`` for a column whose bytes are not valid text in the encoding: that
        is a wrong encoding, never what a CSV means, unless column_types asks for binary."""
        wrong = [f.name for f in schema if pa.types.is_binary(f.type) and f.name not in self.config.column_types]
        if wrong:
            close()
            raise ToolError(self._not_text(path, wrong[0]))

    def _not_text(self, path: FileRef, column: str) -> str:
        return (f"task {self.ctx.task!r}: {path}: column {column!r} holds bytes that are not valid "
                f"{self.config.encoding} text; set encoding: to the file's encoding (e.g. latin-1 or cp1252)")

    def _column(self, path: FileRef, index: int) -> str:
        """The name of column ``index``, for an error message (the header is read with the csv module)."""
        if self.config.columns:
            names = self.config.columns
        else:
            import csv
            import io

            with open_stream(path) as f:  # the header is in the first MiB, or the message names #index
                head = f.read(1 << 20).decode(self.config.encoding, errors="replace")
            names = next(csv.reader(io.StringIO(head, newline=""), delimiter=self.config.delimiter,
                                    quotechar=self.config.quote_char), [])
            names = names if self.config.header else [f"f{i}" for i in range(len(names))]
        return names[index] if index < len(names) else f"#{index + 1}"

    def _explain(self, error: Exception, path: FileRef) -> ToolError:
        task, text = self.ctx.task, str(error)
        if m := _CSV_CONVERSION.search(text):
            typ, value = m[3], m[4]
            col = self._column(path, int(m[1]))
            if "invalid UTF8" in text:
                return ToolError(self._not_text(path, col).replace(f"{path}:", f"{path}: row {m[2]}:", 1)
                                 if m[2] else self._not_text(path, col))
            what = (f"has the value {value!r}, which is not a valid {typ}" if value is not None
                    else f"does not convert to {typ} ({m[5].strip()})")
            why = (f"column_types or the first file make it {typ}" if col in self.config.column_types
                   or self._file_index > 0 else f"{typ} was inferred from the first block")
            return ToolError(
                f"task {task!r}: {path}: {f'row {m[2]}' if m[2] else 'a row'}: column {col!r} {what} ({why}); "
                f"fix the value in the file, or set column_types: {{{col}: string}} (or the type it really has); "
                "bad_rows: skip only drops rows with the wrong number of fields")
        if m := _CSV_FIELDS.search(text):
            return ToolError(
                f"task {task!r}: {path}: {f'row {m[1]}' if m[1] else 'a row'} has {m[3]} fields where the header "
                f"has {m[2]} ({m[4].strip()[:80]!r}); fix the row, set bad_rows: skip to drop such rows, or check "
                "delimiter/quote_char")
        return ToolError(f"task {task!r}: cannot read csv file {path}: {text}; check delimiter, quote_char "
                         "and encoding, or set column_types")


class JSONLConfig(TypedFileConfig):
    """Read JSON Lines files (one object per line), in blocks."""

    block_size: int | None = Field(None, ge=1 << 16, le=1 << 30,
                                   description="bytes per block; default: about batch_size rows, 1-64 MiB")


def _cast(batch: pa.RecordBatch | pa.Table, types: dict[str, pa.DataType]) -> Any:
    schema = pa.schema([f.with_type(types.get(f.name, f.type)) for f in batch.schema])
    return batch if schema.equals(batch.schema) else batch.cast(schema)


class JSONLExtractor(FileExtractor):
    """Read JSON Lines files (one object per line), in blocks; types come from the first block."""

    fmt = "jsonl"
    suffixes = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
    Config = JSONLConfig
    config: JSONLConfig

    def _open(self, path: FileRef, target: pa.Schema | None) -> Source | None:
        if file_size(path) == 0:
            return None
        types = self.config.arrow_types(target)
        # The JSON reader parses no dates or decimals: read those as text or float, then cast.
        explicit = pa.schema([(n, pa.string() if pa.types.is_date(t) or pa.types.is_time(t) else
                               pa.float64() if pa.types.is_decimal(t) else t) for n, t in types.items()])
        size = self.config.block_size or block_size(path, self.ctx.batch_size)
        stream = open_stream(path)
        try:
            reader = pajson.open_json(
                stream, read_options=pajson.ReadOptions(block_size=size),
                parse_options=pajson.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="infer"))
        except BaseException:
            stream.close()
            raise
        # Table.from_batches, not Schema.empty_table(): the latter imports pandas (0.4 s)
        schema = _cast(pa.Table.from_batches([], reader.schema), types).schema
        return Source(schema, lambda: (lambda b: b if b is None else _cast(b, types))(next(reader, None)),
                      lambda: (reader.close(), stream.close()))

    def _explain(self, error: Exception, path: FileRef) -> ToolError:
        text, task = str(error), self.ctx.task
        # Arrow counts rows from the start of the failing block, which follows the rows yielded so far
        m = re.search(r"in row (\d+)", text)
        at = f"line {self._file_rows + int(m[1]) + 1}" if m else f"a line after line {self._file_rows}"
        if "unexpected field" in text or "changed from" in text:
            return ToolError(
                f"task {task!r}: {path}: {at} has a field or type that the lines before it did not have "
                f"({text}); types are inferred from the first block, so set column_types for that field, or a "
                "larger block_size")
        return ToolError(f"task {task!r}: {path}: {at} is not valid JSON ({text}); fix it (each line must be "
                         "one JSON object)")


class JSONConfig(TypedFileConfig):
    """Read JSON documents: an array of objects, or an object holding one at ``records``."""

    records: str | None = Field(None, description="dotted path to the list of records, e.g. data.items")


class JSONExtractor(FileExtractor):
    """Read JSON files holding an array of objects (or one at ``records``); each file is parsed whole.

    A JSON document cannot be streamed, so memory grows with the file (about twice its size while
    parsing); use jsonl for large data. The Arrow JSON parser takes files up to 2 GiB.
    """

    fmt = "json"
    suffixes = (".json",)
    Config = JSONConfig
    config: JSONConfig

    def _open(self, path: FileRef, target: pa.Schema | None) -> Source | None:
        data = read_bytes(path)
        head = data.lstrip()[:1]
        if not head:
            return None
        if head == b"[":  # Arrow reads objects only: wrap the array in one
            data, steps = b'{"records":' + data + b"}", ["records"]
        else:
            steps = self.config.records.split(".") if self.config.records else []
        table = pajson.read_json(pa.BufferReader(data), read_options=pajson.ReadOptions(block_size=len(data) + 1),
                                 parse_options=pajson.ParseOptions(newlines_in_values=True))
        found = self._walk(table, steps, path)
        if found is None:
            return None
        records = _cast(found, self.config.arrow_types(target))
        batches = iter(records.to_batches(max_chunksize=self.ctx.batch_size))
        return self._known_columns(Source(records.schema, lambda: next(batches, None)), path)

    def _walk(self, table: pa.Table, steps: list[str], path: FileRef) -> pa.Table | None:
        """The records at ``steps``; None for an empty list (no rows, like an empty file)."""
        task = self.ctx.task
        if not steps:
            lists = [f.name for f in table.schema if pa.types.is_list(f.type)]
            raise ToolError(f"task {task!r}: {path} holds a JSON object, not an array; set records to the "
                            f"dotted path of the list of records (lists at the top: {lists})")
        node: Any = table.to_struct_array().combine_chunks()
        for i, step in enumerate(steps):
            keys = [f.name for f in node.type] if pa.types.is_struct(node.type) else []
            if step not in keys:
                raise ToolError(f"task {task!r}: {path}: no key {step!r} at {'.'.join(steps[:i]) or 'the top'} "
                                f"(keys there: {keys}); fix the records path")
            node = node.field(step)
        if pa.types.is_list(node.type) and pa.types.is_null(node.type.value_type) and not pc.sum(
                pc.list_value_length(node)).as_py():
            return None
        if not pa.types.is_list(node.type) or not pa.types.is_struct(node.type.value_type):
            raise ToolError(f"task {task!r}: {path}: {self.config.records or 'the array'} holds {node.type}, not "
                            "objects; "
                            "point records at a list of objects")
        return pa.Table.from_struct_array(node.flatten())


PREBUFFER_WINDOW = 64 << 20  # compressed bytes of row groups fetched at once by ranged reads of a store


class _StoredParquet(pq.ParquetFile):
    """A Parquet file in a store; closing it closes what it reads from. Read by ranged reads unless
    it was fetched whole: then the column chunks of a window of row groups are fetched together,
    coalesced and concurrently (``pre_buffer``): one GET per column chunk, in turn, is 10x slower."""

    def __init__(self, file: StoredFile):
        self._stored = file.random()
        self.ranged = not isinstance(self._stored, pa.BufferReader)
        super().__init__(self._stored, pre_buffer=self.ranged)

    def close(self, force: bool = False) -> None:
        super().close(force)
        self._stored.close()


READ_BUFFER = 1 << 20  # bytes a local Parquet file is read by, a column chunk at a time (see _parquet_file)


def _parquet_file(path: FileRef) -> pq.ParquetFile:
    """A Parquet file opened to read with bounded memory. ``pre_buffer`` keeps what it read ahead
    until the file is closed (745 MB against 309 MB over a 10M-row file read in 100k-row batches; it
    pays off only on high-latency storage). Without ``buffer_size``, each column chunk is read whole
    into memory before its first page is decoded: a 1M-row row group of 10 columns holds ~58 MB
    read at once, and the next one's read overlaps it (pyarrow's pool peaks at 92-113 MB; with a
    1 MiB buffer, at 44 MB at any size)."""
    if isinstance(path, StoredFile):
        return _StoredParquet(path)
    return pq.ParquetFile(str(path), pre_buffer=False, buffer_size=READ_BUFFER)


def _row_batches(pf: pq.ParquetFile, first: int, groups: int, size: int, cols: list[str] | None) -> Iterator[Any]:
    """The batches of row groups ``first`` to ``groups``, a window of row groups at a time, with
    pyarrow's pool handed back what it kept after each window: mimalloc keeps the freed pages of the
    decoded columns for reuse, and peak RSS grew ~7 MB per million rows without the release.
    From a store by ranged reads, a window holds up to ``PREBUFFER_WINDOW`` compressed bytes: what
    ``pre_buffer`` fetched is kept until the next ``iter_batches`` call, so the windows bound the
    memory it takes; from a local file or a fetched object, a window is one row group."""
    ranged = getattr(pf, "ranged", False)
    windows, start, held = [], first, 0
    for i in range(first, groups):
        group = pf.metadata.row_group(i)
        if ranged:
            held += sum(group.column(j).total_compressed_size for j in range(group.num_columns))
        if not ranged or held >= PREBUFFER_WINDOW or i == groups - 1:
            windows.append(range(start, i + 1))
            start, held = i + 1, 0
    return itertools.chain.from_iterable(_released(pf.iter_batches(batch_size=size, columns=cols, row_groups=w))
                                         for w in windows)


def _released(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for b in batches:
        yield b
        pa.default_memory_pool().release_unused()
    pa.default_memory_pool().release_unused()


class ParquetConfig(FileConfig):
    """Read Parquet files."""

    columns: list[str] | None = Field(None, description="read only these columns")


class ParquetExtractor(FileExtractor):
    """Read Parquet files (a file, a directory of .parquet files or a glob), row group by row group."""

    fmt = "parquet"
    suffixes = (".parquet", ".pq")
    Config = ParquetConfig
    config: ParquetConfig
    schema_in_position = False

    def _open(self, path: FileRef, target: pa.Schema | None) -> Source | None:
        return self._open_parquet(path, 0)

    def _open_at(self, path: FileRef, target: pa.Schema | None, position: dict[str, Any]) -> Source | None:
        return self._open_parquet(path, position["file_rows"])

    def _open_parquet(self, path: FileRef, skip: int) -> Source:
        """The rows of ``path`` after the first ``skip``: read from the row group that holds row
        ``skip`` on, its first rows sliced off."""
        pf = _parquet_file(path)
        try:
            schema, cols = self._schema(pf, path), self.config.columns
            groups, first = pf.metadata.num_row_groups, 0
            while first < groups and skip >= (n := pf.metadata.row_group(first).num_rows):
                skip, first = skip - n, first + 1
            if first == groups and skip:
                raise ToolError(f"task {self.ctx.task!r}: cannot resume in {path}: the position is past its "
                                f"{pf.metadata.num_rows} rows; the file changed since the position was taken, so "
                                "start the read anew")
        except BaseException:
            pf.close()
            raise
        if first == groups:  # nothing left (0 row groups would mean "all" to iter_batches)
            return Source(schema, lambda: None, pf.close)
        it = _row_batches(pf, first, groups, self.ctx.batch_size, cols)
        source = Source(schema, lambda: next(it, None), pf.close)
        return skipping(source, skip, path, self.ctx.task) if skip else source

    def _schema(self, pf: pq.ParquetFile, path: FileRef) -> pa.Schema:
        schema, cols = pf.schema_arrow, self.config.columns
        if cols:
            missing = [c for c in cols if c not in schema.names]
            if missing:
                raise ToolError(f"task {self.ctx.task!r}: {path} has no column {missing} (its columns: "
                                f"{schema.names}); fix columns")
            schema = pa.schema([schema.field(c) for c in cols])
        return schema

    def _resume_target(self, files: list[FileRef], position: dict[str, Any]) -> pa.Schema | None:
        """From the footers: the schema of the first file with rows, as the read before took it."""
        for path in files[:position["file_index"]]:
            try:
                with _parquet_file(path) as pf:
                    if pf.metadata.num_rows:
                        return self._schema(pf, path)
            except READ_ERRORS as e:
                raise self._explain(e, path) from e
        return None
