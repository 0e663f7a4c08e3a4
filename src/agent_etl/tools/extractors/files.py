"""File extractors: CSV, JSON Lines, JSON and Parquet, from a file, a directory or a glob.

Every format but ``json`` is read in bounded blocks by a worker thread a little ahead of the
consumer, and sliced to at most ``ctx.batch_size`` rows. All files of one read share the first
file's schema: later files are cast to it, and one that cannot be is an error naming both files.

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

import asyncio
import base64
import glob
import os
import re
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
from pydantic import Field, field_validator

from agent_etl.exceptions import ToolError
from agent_etl.stream import slices
from agent_etl.tools.base import Extractor, ToolConfig, ToolContext

_ALIASES = {"int": pa.int64(), "integer": pa.int64(), "date": pa.date32(), "timestamp": pa.timestamp("us")}
_DECIMAL = re.compile(r"decimal(?:128|256)?\(\s*(\d+)\s*,\s*(\d+)\s*\)", re.I)
_TIMESTAMP_TZ = re.compile(r"timestamp\[(s|ms|us|ns)\s*,\s*tz=([^\]]+)\]", re.I)
READ_ERRORS = (pa.ArrowException, OSError, UnicodeError)  # a bad or unreadable file; anything else is a bug
READ_AHEAD = 2  # batches read ahead of the consumer: they absorb its slow steps (e.g. a row group write)
PARSERS = min(4, os.cpu_count() or 1)  # CSV blocks parsed at once


def arrow_type(name: str) -> pa.DataType:
    """An Arrow type from its name: int64, float64, string, bool, date32, timestamp[s],
    timestamp[ms, tz=UTC], decimal(12,2); also int, date, timestamp (microseconds)."""
    text = name.strip()
    if m := _DECIMAL.fullmatch(text):
        precision, scale = int(m[1]), int(m[2])
        return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    if m := _TIMESTAMP_TZ.fullmatch(text):
        return pa.timestamp(m[1].lower(), tz=m[2].strip())
    try:
        return _ALIASES.get(text.lower()) or pa.type_for_alias(text.lower())
    except (ValueError, KeyError):
        raise ValueError(f"unknown type {name!r}; use an Arrow type name such as int64, float64, string, "
                         "bool, date32, timestamp[s], timestamp[ms, tz=UTC] or decimal(12,2)") from None


class FileConfig(ToolConfig):
    """Options shared by the file extractors."""

    path: str = Field(min_length=1, description="a file, a directory (every file of the format in it) or a glob")


class TypedFileConfig(FileConfig):
    column_types: dict[str, str] = Field(
        default_factory=dict, description="Arrow type per column, e.g. {id: int64, day: date32}")

    @field_validator("column_types")
    @classmethod
    def _known_types(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value.values():
            arrow_type(name)
        return value

    def arrow_types(self, first: pa.Schema | None = None) -> dict[str, pa.DataType]:
        """These column types over those of the first file (whose all-null columns stay untyped)."""
        types = {f.name: f.type for f in first if not pa.types.is_null(f.type)} if first else {}
        return types | {col: arrow_type(t) for col, t in self.column_types.items()}


def resolve(ctx: ToolContext, pattern: str, suffixes: tuple[str, ...], fmt: str) -> list[Path]:
    """The files ``pattern`` names, sorted; hidden files in a directory (temp files) are left out."""
    full = ctx.path(pattern)
    if any(ch in pattern for ch in "*?["):
        found = sorted(Path(p) for p in glob.glob(str(full), recursive=True) if Path(p).is_file())
        what = f"the glob {full}, which matches no files"
    elif full.is_dir():
        found = sorted(p for p in full.iterdir()
                       if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(suffixes))
        what = f"the directory {full}, which holds no {'/'.join(suffixes)} files"
    else:
        found, what = [full] if full.is_file() else [], f"{full}, which does not exist"
    if not found:
        raise ToolError(f"task {ctx.task!r}: no {fmt} file for path {pattern!r}: it resolved to {what}; "
                        "check the path (relative paths start at the pipeline file's directory)")
    return found


def conform(batch: pa.RecordBatch, target: pa.Schema, path: Path, first: Path, task: str) -> pa.RecordBatch:
    """``batch`` with the columns and types of ``target`` (the first file's schema)."""
    if batch.schema.equals(target):
        return batch
    names = batch.schema.names
    missing, extra = [n for n in target.names if n not in names], [n for n in names if n not in target.names]
    if missing or extra:
        raise ToolError(f"task {task!r}: {path} has other columns than {first} (missing {missing}, extra "
                        f"{extra}); give the files one set of columns or read them in separate steps")
    batch = batch.select(target.names)
    for field in target:
        have = batch.schema.field(field.name).type
        try:
            if have != field.type:
                batch.column(field.name).cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            first_file = "the first rows" if path == first else str(first)
            raise ToolError(
                f"task {task!r}: column {field.name!r} is {have} in {path} but {field.type} in {first_file}, and "
                f"the values do not convert ({e}); set column_types: {{{field.name}: <type>}} so it is read with "
                "one type everywhere") from e
    return batch.cast(target)


class Source:
    """One open file: its schema and a blocking ``read_next`` that returns None at the end.

    ``mark``, if given, is called right after each ``read_next`` (in the same thread): where the
    batch just read starts in the file, as position keys a resumed read can start from ({} for
    "from the start of the file")."""

    def __init__(self, schema: pa.Schema, read_next: Callable[[], pa.RecordBatch | None],
                 close: Callable[[], Any] = lambda: None, mark: Callable[[], dict[str, Any]] | None = None):
        self.schema, self.read_next, self.close, self.mark = schema, read_next, close, mark


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


async def _read_ahead(source: Source, explain: Callable[[Exception], ToolError]
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


class FileExtractor(Extractor):
    """Base of the file extractors: resolving the path, one schema for all files, positions, resume."""

    fmt: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]] = ()
    Config = FileConfig
    # whether a position past the first file carries the first file's schema (parquet reads footers)
    schema_in_position: ClassVar[bool] = True

    def __init__(self, config: FileConfig, ctx: ToolContext):
        super().__init__(config, ctx)
        self._file: Path | None = None
        self._file_index = self._rows = self._file_rows = 0
        self._first_index = 0  # the file whose schema all share
        self._schema_text: str | None = None
        self._mark: dict[str, Any] = {}  # where the batch being sliced starts in the file
        self._mark_rows = 0  # its rows yielded so far
        self._resume: dict[str, Any] | None = None

    def resumable(self) -> bool:
        return True

    def resume_from(self, position: dict[str, Any]) -> None:
        keys = ("file", "file_index", "rows", "file_rows")
        if not isinstance(position, dict) or any(k not in position for k in keys):
            raise ToolError(f"task {self.ctx.task!r}: cannot resume the {self.fmt} read from {position!r}: it is not "
                            f"the position of a file read (which has {', '.join(keys)})")
        self._resume = dict(position)

    def position(self) -> dict[str, Any] | None:
        """``file``/``file_index`` of the last batch, ``rows`` yielded in all, ``file_rows`` from that
        file; ``offset``/``skip`` past a CSV file's first block; ``schema`` where a resume needs it."""
        if self._file is None:
            return None
        pos = {"file": str(self._file), "file_index": self._file_index, "rows": self._rows,
               "file_rows": self._file_rows}
        if self._mark:
            pos.update(self._mark, skip=self._mark_rows)
        if self._schema_text is not None and (self._mark or self._file_index != self._first_index):
            pos["schema"] = self._schema_text
        return pos

    def _open(self, path: Path, target: pa.Schema | None) -> Source | None:
        """Open ``path`` in a worker thread (None skips an empty file); ``target`` is the first file's schema."""
        raise NotImplementedError

    def _open_at(self, path: Path, target: pa.Schema | None, position: dict[str, Any]) -> Source | None:
        """Open ``path`` where ``position`` (in this file) left off; by default: its rows after ``file_rows``."""
        source = self._open(path, target)
        return None if source is None else skipping(source, position["file_rows"], path, self.ctx.task)

    def _resume_target(self, files: list[Path], position: dict[str, Any]) -> pa.Schema | None:
        """The schema the read that took ``position`` gave every file (None: the position's file sets it)."""
        text = position.get("schema")
        if text is None:
            if position["file_rows"] != position["rows"]:
                raise ToolError(f"task {self.ctx.task!r}: cannot resume the {self.fmt} read: the position has rows "
                                "from earlier files but not their schema; start the read anew")
            return None
        try:
            return schema_of(text)
        except (pa.ArrowException, ValueError, TypeError) as e:
            raise ToolError(f"task {self.ctx.task!r}: cannot resume the {self.fmt} read: the position's schema does "
                            f"not decode ({e}); start the read anew") from None

    def _check(self, files: list[Path], position: dict[str, Any]) -> int:
        index, name = position["file_index"], position["file"]
        if not isinstance(index, int) or not 0 <= index < len(files) or str(files[index]) != name:
            now = (f"file #{index} is now {files[index]}" if isinstance(index, int) and 0 <= index < len(files)
                   else f"it now names {len(files)} file(s)")
            raise ToolError(f"task {self.ctx.task!r}: cannot resume the {self.fmt} read: the position is in file "
                            f"#{index} {name} of path {self.config.path!r}, but {now}; the file list changed since "
                            "the position was taken (a file added, removed or renamed before it), so the rows after "
                            "the position are not known: restore the files, or start the read anew")
        return index

    def _explain(self, error: Exception, path: Path) -> ToolError:
        return ToolError(f"task {self.ctx.task!r}: cannot read {self.fmt} file {path}: {error}; "
                         f"check that it is a valid {self.fmt} file")

    def _known_columns(self, source: Source, path: Path) -> Source:
        unknown = sorted(set(getattr(self.config, "column_types", {})) - set(source.schema.names))
        if unknown:
            source.close()
            raise ToolError(f"task {self.ctx.task!r}: column_types names {unknown}, which {path} does not have "
                            f"(its columns: {source.schema.names}); fix the names in column_types")
        return source

    async def batches(self) -> AsyncIterator[pa.RecordBatch]:
        files = await asyncio.to_thread(resolve, self.ctx, self.config.path, self.suffixes, self.fmt)
        target, first, start, resume = None, files[0], 0, self._resume
        yielded = 0  # rows of this read (a resumed one counts from the position)
        if resume is not None:
            start = self._check(files, resume)
            target = await asyncio.to_thread(self._resume_target, files, resume)
            self._rows, self._first_index = resume["rows"], -1 if target is not None else start
            if target is not None and self.schema_in_position:
                self._schema_text = resume.get("schema") or schema_text(target)
        for index in range(start, len(files)):
            path = files[index]
            self._file, self._file_index, self._file_rows, self._mark = path, index, 0, {}
            at = resume if resume is not None and index == start else None
            try:
                if at is not None:
                    self._file_rows = at["file_rows"]
                    source = await asyncio.to_thread(self._open_at, path, target, at)
                else:
                    source = await asyncio.to_thread(self._open, path, target)
            except READ_ERRORS as e:
                raise self._explain(e, path) from e
            if source is None:
                continue
            if target is None or (self._rows == 0 and resume is None):  # no consumer has seen a schema yet
                target, first, self._first_index = source.schema, path, index
                self._schema_text = schema_text(target) if self.schema_in_position else None
            async for batch, mark in _read_ahead(source, lambda e, p=path: self._explain(e, p)):
                self._mark_rows = mark.pop("_skipped", 0)
                self._mark = mark
                if batch.num_rows:
                    for part in slices(conform(batch, target, path, first, self.ctx.task), self.ctx.batch_size):
                        self._rows += part.num_rows
                        self._file_rows += part.num_rows
                        self._mark_rows += part.num_rows
                        yielded += part.num_rows
                        yield part
        if yielded == 0 and target is not None:
            yield pa.RecordBatch.from_pylist([], schema=target)  # carries the schema to the loader


def _block_size(path: Path, batch_size: int) -> int:
    """Bytes that hold about ``batch_size`` rows (a block becomes a batch), from the start of the file."""
    with pa.input_stream(str(path)) as f:  # decompresses .gz/.bz2/.zst by extension
        sample = f.read(1 << 16)
    return int(min(max(batch_size * len(sample) / max(sample.count(b"\n"), 1) * 0.9, 1 << 20), 64 << 20))


def _line_end(buf: pa.Buffer) -> int:
    """The offset just past the last newline in ``buf`` (0 if none), found without copying it."""
    arr, step = np.frombuffer(buf, dtype=np.uint8), 1 << 16
    for end in range(arr.size, 0, -step):
        hits = np.flatnonzero(arr[max(0, end - step):end] == 10)
        if hits.size:
            return max(0, end - step) + int(hits[-1]) + 1
    return 0


def _lines(path: Path, size: int) -> int:
    """Lines in the first ``size`` bytes of the file (for the row number of an error)."""
    count = 0
    with pa.input_stream(str(path)) as f:
        while size > 0 and (chunk := f.read(min(size, 1 << 24))):
            count, size = count + chunk.count(b"\n"), size - len(chunk)
    return count


class _CSVBlocks:
    """A CSV file cut into blocks at line ends, several blocks parsed at once, returned in order.

    Arrow's streaming reader parses on one core, which alone takes as long as ``read_csv`` of the
    whole file on two. Cutting at newlines is what Arrow does too unless ``newlines_in_values`` is
    set (then ``open_csv`` is used). Blocks are parsed serially, which is what makes Arrow name the
    row of an error; the first block's types hold for the rest, as in the streaming reader.
    """

    def __init__(self, path: Path, size: int, read: pacsv.ReadOptions, parse: pacsv.ParseOptions,
                 convert: pacsv.ConvertOptions, start: int = 0, schema: pa.Schema | None = None):
        """``start``/``schema``: resume at that byte offset (a line start after the header) with the
        columns and types of the first read."""
        self._path, self._in = path, pa.input_stream(str(path))  # decompresses .gz/.bz2/.zst by extension
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


_CSV_CONVERSION = re.compile(
    r"In CSV column #(\d+): (?:Row #(\d+): )?CSV conversion error to (.+?): (?:invalid value '(.*)'|(.*))", re.S)
_CSV_FIELDS = re.compile(r"CSV parse error: (?:Row #(\d+): )?Expected (\d+) columns, got (\d+): ?(.*)", re.S)


class CSVConfig(TypedFileConfig):
    """Read CSV files, in blocks; types are inferred from the first block unless given."""

    delimiter: str = Field(",", min_length=1, max_length=1)
    quote_char: str = Field('"', min_length=1, max_length=1)
    header: bool = Field(True, description="the first line holds the column names")
    columns: list[str] | None = Field(None, description="column names to use (replaces the header if there is one)")
    null_values: list[str] | None = Field(None, description="strings read as null (default: '', NULL, NA, N/A, ...)")
    encoding: str = "utf-8"
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

    def _open(self, path: Path, target: pa.Schema | None) -> Source | None:
        return self._open_csv(path, target)

    def _open_at(self, path: Path, target: pa.Schema | None, position: dict[str, Any]) -> Source | None:
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

    def _open_csv(self, path: Path, target: pa.Schema | None, offset: int = 0) -> Source | None:
        c = self.config
        size = c.block_size or _block_size(path, self.ctx.batch_size)
        read = pacsv.ReadOptions(use_threads=False, block_size=size, encoding=c.encoding, column_names=c.columns,
                                 skip_rows=1 if c.columns and c.header else 0,
                                 autogenerate_column_names=not c.header and not c.columns)
        parse = pacsv.ParseOptions(delimiter=c.delimiter, quote_char=c.quote_char,
                                   newlines_in_values=c.newlines_in_values, invalid_row_handler=self._on_bad_row)
        convert = pacsv.ConvertOptions(column_types=c.arrow_types(target), null_values=c.null_values,
                                       strings_can_be_null=True)
        if self._streamed():
            if path.stat().st_size == 0:  # line ends are not findable in the raw bytes: Arrow cuts the rows
                return None
            reader = pacsv.open_csv(str(path), read_options=read, parse_options=parse, convert_options=convert)
            return self._known_columns(Source(reader.schema, lambda: next(reader, None), reader.close), path)
        try:
            blocks = _CSVBlocks(path, size, read, parse, convert, offset, target)
        except ToolError as e:
            raise ToolError(f"task {self.ctx.task!r}: {e}") from None
        if blocks.schema is None:
            blocks.close()
            return None
        return self._known_columns(Source(blocks.schema, blocks.read_next, blocks.close, blocks.mark), path)

    def _column(self, path: Path, index: int) -> str:
        """The name of column ``index``, for an error message (the header is read with the csv module)."""
        if self.config.columns:
            names = self.config.columns
        else:
            import csv

            with open(path, encoding=self.config.encoding, newline="") as f:
                names = next(csv.reader(f, delimiter=self.config.delimiter, quotechar=self.config.quote_char), [])
            names = names if self.config.header else [f"f{i}" for i in range(len(names))]
        return names[index] if index < len(names) else f"#{index + 1}"

    def _explain(self, error: Exception, path: Path) -> ToolError:
        task, text = self.ctx.task, str(error)
        if m := _CSV_CONVERSION.search(text):
            typ, value = m[3], m[4]
            col = self._column(path, int(m[1]))
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

    def _open(self, path: Path, target: pa.Schema | None) -> Source | None:
        if path.stat().st_size == 0:
            return None
        types = self.config.arrow_types(target)
        # The JSON reader parses no dates or decimals: read those as text or float, then cast.
        explicit = pa.schema([(n, pa.string() if pa.types.is_date(t) or pa.types.is_time(t) else
                               pa.float64() if pa.types.is_decimal(t) else t) for n, t in types.items()])
        reader = pajson.open_json(
            str(path), read_options=pajson.ReadOptions(block_size=self.config.block_size or
                                                       _block_size(path, self.ctx.batch_size)),
            parse_options=pajson.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="infer"))
        # Table.from_batches, not Schema.empty_table(): the latter imports pandas (0.4 s)
        schema = _cast(pa.Table.from_batches([], reader.schema), types).schema
        return Source(schema, lambda: (lambda b: b if b is None else _cast(b, types))(next(reader, None)),
                      reader.close)

    def _explain(self, error: Exception, path: Path) -> ToolError:
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

    def _open(self, path: Path, target: pa.Schema | None) -> Source | None:
        data = path.read_bytes()
        head = data.lstrip()[:1]
        if not head:
            return None
        if head == b"[":  # Arrow reads objects only: wrap the array in one
            data, steps = b'{"records":' + data + b"}", ["records"]
        else:
            steps = self.config.records.split(".") if self.config.records else []
        table = pajson.read_json(pa.BufferReader(data), read_options=pajson.ReadOptions(block_size=len(data) + 1),
                                 parse_options=pajson.ParseOptions(newlines_in_values=True))
        records = _cast(self._walk(table, steps, path), self.config.arrow_types(target))
        batches = iter(records.to_batches(max_chunksize=self.ctx.batch_size))
        return self._known_columns(Source(records.schema, lambda: next(batches, None)), path)

    def _walk(self, table: pa.Table, steps: list[str], path: Path) -> pa.Table:
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
        if not pa.types.is_list(node.type) or not pa.types.is_struct(node.type.value_type):
            raise ToolError(f"task {task!r}: {path}: {self.config.records or 'the array'} holds {node.type}, not "
                            "objects; "
                            "point records at a list of objects")
        return pa.Table.from_struct_array(node.flatten())


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

    def _open(self, path: Path, target: pa.Schema | None) -> Source | None:
        return self._open_parquet(path, 0)

    def _open_at(self, path: Path, target: pa.Schema | None, position: dict[str, Any]) -> Source | None:
        return self._open_parquet(path, position["file_rows"])

    def _open_parquet(self, path: Path, skip: int) -> Source:
        """The rows of ``path`` after the first ``skip``: read from the row group that holds row
        ``skip`` on, its first rows sliced off."""
        # pre_buffer keeps what it read ahead until the file is closed: 745 MB against 309 MB over a
        # 10M-row file read in 100k-row batches; it pays off only on high-latency storage
        pf = pq.ParquetFile(str(path), pre_buffer=False)
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
        it = pf.iter_batches(batch_size=self.ctx.batch_size, columns=cols,
                             row_groups=range(first, groups) if first else None)
        source = Source(schema, lambda: next(it, None), pf.close)
        return skipping(source, skip, path, self.ctx.task) if skip else source

    def _schema(self, pf: pq.ParquetFile, path: Path) -> pa.Schema:
        schema, cols = pf.schema_arrow, self.config.columns
        if cols:
            missing = [c for c in cols if c not in schema.names]
            if missing:
                raise ToolError(f"task {self.ctx.task!r}: {path} has no column {missing} (its columns: "
                                f"{schema.names}); fix columns")
            schema = pa.schema([schema.field(c) for c in cols])
        return schema

    def _resume_target(self, files: list[Path], position: dict[str, Any]) -> pa.Schema | None:
        """From the footers: the schema of the first file with rows, as the read before took it."""
        for path in files[:position["file_index"]]:
            try:
                with pq.ParquetFile(str(path), pre_buffer=False) as pf:
                    if pf.metadata.num_rows:
                        return self._schema(pf, path)
            except READ_ERRORS as e:
                raise self._explain(e, path) from e
        return None
