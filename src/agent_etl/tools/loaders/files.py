"""File loaders: CSV, JSON Lines and Parquet (one file, or a hive-partitioned directory).

A load is one commit unit (``takes_units()`` is false: a file is replaced whole): batches are
written (in a worker thread) to a temporary name next to the target, ``.<name>.tmp-<run_id>``,
which replaces the target only after the input stream ended cleanly and ``ctx.prepare(True)`` let
it (the sibling loads of the same input are ready too). If the stream raises - an upstream failure,
a failed quality gate, a cancellation - or ``prepare`` does (``SiblingFailed``), the temporary
output is deleted and an existing target is left as it was.

The checkpoint of the load is a manifest next to the target, ``.<name>.checkpoint.json``::

    {"run_id": ..., "task": ..., "rows": ..., "position": {...}, "committed_at": "2024-05-31T12:00:00+00:00"}

written to a temporary name and renamed right after the data's own rename, on the event loop
thread, so no cancellation lands between the two. ``committed()`` reads it back (for the run and
task of the context only, and only while the output itself is there); ``mark()`` reads the
incremental mark of a source from it (for the task, from any run). A crash of the process between
the two renames leaves the new data with the old manifest: a resumed run then finds no checkpoint
of its own and loads again; as a file load is a replace (the whole output is rewritten from the
same input), that gives the same result.

The writers of the formats are in ``file_writers`` (the S3 loader writes with them too); the
manifest helpers here (``manifest_body``, ``committed_in``, ``mark_in``) serve both.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import Field

from agent_etl.exceptions import ToolError
from agent_etl.tools.base import Loader, ToolConfig, ToolContext
from agent_etl.tools.capabilities import FILE
from agent_etl.tools.flat_columns import check_flat
from agent_etl.tools.folders import make_folder_for
from agent_etl.tools.loaders.file_writers import (CSVOutput, Dictionary, JSONLinesOutput, ParquetOutput,
                                                 PartitionedOutput, local_part, parquet_part)

WRITE_ERRORS = (pa.ArrowException, OSError)


class FileLoaderConfig(ToolConfig):
    """Options shared by the file loaders."""

    path: str = Field(min_length=1, description="the output file")


class FileLoader(Loader):
    """Base of the file loaders: temp output, atomic swap, cleanup on failure, one commit."""

    fmt: ClassVar[str] = ""
    Config = FileLoaderConfig
    capabilities = FILE

    def _directory(self, target: Path) -> bool:
        """Whether the output is a directory (swapped as a whole) rather than one file."""
        if target.is_dir():
            raise ToolError(f"task {self.ctx.task!r}: {target} is a directory; give the {self.fmt} loader a "
                            "file name as path")
        return False

    def _writer(self, tmp: Path, schema: pa.Schema, name: str, as_dir: bool) -> Any:
        """Open a writer on ``tmp`` (in a worker thread): ``write(batch)``, ``close()``, ``abort()``."""
        raise NotImplementedError

    def _empty(self, tmp: Path, as_dir: bool) -> None:
        """Write the output of a stream that had no batch at all."""
        if as_dir:
            tmp.mkdir()
        else:
            tmp.write_bytes(b"")

    def _fail(self, name: str, error: Exception) -> ToolError:
        return ToolError(f"task {self.ctx.task!r}: cannot write {self.fmt} output {name}: {error}; check that "
                         f"the directory is writable and the column types suit {self.fmt}")

    async def committed(self) -> dict[str, Any] | None:
        return await asyncio.to_thread(_committed, self.ctx, self.ctx.path(self.config.path))

    async def mark(self, source: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(read_mark, self.ctx, manifest_path(self.ctx.path(self.config.path)), source)

    async def load(self, batches: AsyncIterator[pa.RecordBatch]) -> int:
        target = self.ctx.path(self.config.path)
        as_dir = self._directory(target)
        name = str(target)
        tmp = target.with_name(f".{target.name}.tmp-{self.ctx.run_id}")
        old = target.with_name(f".{target.name}.old-{self.ctx.run_id}")
        manifest = manifest_path(target)
        manifest_tmp = manifest.with_name(f"{manifest.name}.tmp-{self.ctx.run_id}")
        await asyncio.to_thread(_prepare, target, tmp, old, manifest_tmp, self.ctx.task)
        lock = threading.Lock()
        # One thread for all writes: each thread keeps its own allocator cache, so spreading writes over
        # the default executor's threads makes the resident memory several times larger.
        pool = ThreadPoolExecutor(1, thread_name_prefix="agent-etl-write")
        loop = asyncio.get_running_loop()
        opened: list[Any] = []  # filled in the thread, so a writer opened as we are cancelled is still closed
        schema, rows = None, 0

        def call(fn: Callable[..., Any], *args: Any) -> Any:
            def locked() -> Any:
                with lock:  # cleanup takes the lock, so it never runs under a write still in its thread
                    try:
                        return fn(*args)
                    except WRITE_ERRORS as e:
                        raise self._fail(name, e) from e

            return loop.run_in_executor(pool, locked)

        try:
            async for batch in batches:
                if schema is None:
                    schema = batch.schema
                    await call(lambda: opened.append(self._writer(tmp, schema, name, as_dir)))
                await call(opened[0].write, same_schema(batch, schema, self.ctx.task, name))
                rows += batch.num_rows
            await call(opened[0].close if opened else partial(self._empty, tmp, as_dir))
            await self.ctx.prepare(True)  # the siblings are ready too, or this raises and nothing is swapped
            # The manifest and the renames on the loop thread: a cancellation cannot land between them.
            _write_manifest(manifest_tmp, self.ctx, rows)
            moved = _swap(tmp, target, old)
            os.replace(manifest_tmp, manifest)
        except BaseException:
            with lock:  # blocks for at most the one write that may still be running
                for writer in opened:
                    with suppress(Exception):  # the error that brought us here is the one to report
                        writer.abort()
            _remove(tmp)
            _remove(manifest_tmp)
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        await self.ctx.commit(rows)
        if moved:
            await asyncio.to_thread(_remove, old)
        return rows


def _prepare(target: Path, tmp: Path, old: Path, manifest_tmp: Path, task: str) -> None:
    make_folder_for(target, task)
    _remove(tmp)  # left by an earlier attempt of the same run
    _remove(old)
    _remove(manifest_tmp)


def manifest_path(target: Path) -> Path:
    """Where the checkpoint manifest of an output file or directory is: ``.<name>.checkpoint.json``."""
    return target.with_name(f".{target.name}.checkpoint.json")


def manifest_body(ctx: ToolContext, rows: int, **extra: Any) -> dict[str, Any]:
    """The checkpoint manifest of a file or object load (``extra``: what else the destination keeps)."""
    return {"run_id": ctx.run_id, "task": ctx.task, "rows": rows, "position": ctx.source_position(),
            "committed_at": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"), **extra}


def manifest_text(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, default=str) + "\n"


def _write_manifest(path: Path, ctx: ToolContext, rows: int) -> None:
    path.write_text(manifest_text(manifest_body(ctx, rows)), encoding="utf-8")


def committed_in(ctx: ToolContext, text: str | None) -> dict[str, Any] | None:
    """``Loader.committed()`` from a manifest's text: its rows and position, when it is the one
    ``ctx``'s run and task wrote (None if it is missing, unreadable or another run's)."""
    try:
        body = json.loads(text) if text is not None else None
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("run_id") != ctx.run_id or body.get("task") != ctx.task:
        return None
    return {"rows": int(body.get("rows") or 0), "commits": 1, "position": body.get("position") or {}}


def mark_in(ctx: ToolContext, text: str | None, source: str) -> dict[str, Any] | None:
    """``Loader.mark()`` from a manifest's text: ``position[source]["mark"]``, when ``ctx``'s task wrote
    it (in any run); None if it is missing, unreadable, another task's or has no mark."""
    try:
        body = json.loads(text) if text is not None else None
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("task") != ctx.task or not isinstance(body.get("position"), dict):
        return None
    held = body["position"].get(source)
    return held["mark"] if isinstance(held, dict) and isinstance(held.get("mark"), dict) else None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None


def read_manifest(ctx: ToolContext, path: Path) -> dict[str, Any] | None:
    """``Loader.committed()`` of a file load: the manifest's rows and position, when it is the one
    ``ctx``'s run and task wrote (None if it is missing, unreadable or another run's)."""
    return committed_in(ctx, _read_text(path))


def _committed(ctx: ToolContext, target: Path) -> dict[str, Any] | None:
    """``read_manifest`` of the output's manifest, None when the output itself is gone (deleted since)."""
    if not target.exists():
        return None
    return read_manifest(ctx, manifest_path(target))


def read_mark(ctx: ToolContext, path: Path, source: str) -> dict[str, Any] | None:
    """``Loader.mark()`` of a file load: ``position[source]["mark"]`` of the manifest, when ``ctx``'s
    task wrote it (in any run); None if it is missing, unreadable, another task's or has no mark."""
    return mark_in(ctx, _read_text(path), source)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _swap(tmp: Path, target: Path, old: Path) -> bool:
    """Put ``tmp`` in place of ``target``; a directory target is renamed aside first (deleted later)."""
    if tmp.is_dir() and target.exists():
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError:
            os.replace(old, target)
            raise
        return True
    os.replace(tmp, target)
    return False


def same_schema(batch: pa.RecordBatch, schema: pa.Schema, task: str, name: str) -> pa.RecordBatch:
    """A file has one schema: later batches are cast to the first one's."""
    if batch.schema.equals(schema):
        return batch
    new = [n for n in batch.schema.names if n not in schema.names]
    if new:  # a file's columns are fixed by its first batch: never drop data without a word
        raise ToolError(f"task {task!r}: a batch for {name} has column(s) {', '.join(map(repr, new))} that the "
                        f"first batch did not have ({', '.join(schema.names)}); a file has one schema: "
                        "fix the columns upstream (a source's pinned schema, or a select/cast step)")
    try:
        return batch.select(schema.names).cast(schema)
    except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ToolError(f"task {task!r}: a batch for {name} has columns {batch.schema} where the first had "
                        f"{schema} ({e}); cast the columns upstream so every batch has one schema") from e


class CSVLoaderConfig(FileLoaderConfig):
    """Write one CSV file."""

    delimiter: str = Field(",", min_length=1, max_length=1, description="the character between fields")
    header: bool = Field(True, description="write the column names as the first line")


class CSVLoader(FileLoader):
    """Write a CSV file (with a header line), replaced atomically when the stream ends."""

    fmt = "csv"
    Config = CSVLoaderConfig
    config: CSVLoaderConfig

    def _writer(self, tmp: Path, schema: pa.Schema, name: str, as_dir: bool) -> CSVOutput:
        check_flat(schema, self.fmt, self.ctx.task, name)
        options = pacsv.WriteOptions(include_header=self.config.header, delimiter=self.config.delimiter)
        return CSVOutput(tmp, schema, options)


class JSONLLoader(FileLoader):
    """Write a JSON Lines file (one object per line), replaced atomically when the stream ends.

    Dates and timestamps are written as ISO-like strings, NaN and Infinity as null.
    """

    fmt = "jsonl"
    Config = FileLoaderConfig

    def _writer(self, tmp: Path, schema: pa.Schema, name: str, as_dir: bool) -> JSONLinesOutput:
        return JSONLinesOutput(tmp, schema)


MAX_OPEN_PARTITIONS = 256  # partition files open at once; more close all and later rows start part-<n+1>


class ParquetLoaderConfig(FileLoaderConfig):
    """Write a Parquet file, or a hive-partitioned directory of them with partition_by."""

    path: str = Field(min_length=1, description="the output file, or a directory (ends in / or partition_by set)")
    compression: Literal["zstd", "snappy", "lz4", "gzip", "brotli", "none"] = Field(
        "zstd", description="the codec of the column chunks")
    row_group_size: int = Field(1_048_576, ge=1,
                                description="rows per row group (fewer past 64 MiB of data, or when partitioned)")
    partition_by: list[str] = Field(default_factory=list, description="columns to partition a directory by")
    dictionary: Literal["auto", "all", "none"] | list[str] = Field(
        "auto", description="dictionary-encoded columns: auto (those that repeat), all, none, or a list")


class ParquetLoader(FileLoader):
    """Write a Parquet file, or a hive-partitioned directory with partition_by; replaced atomically.

    A path ending in / (or an existing directory) without partition_by gets ``part-0.parquet``.
    Compression defaults to zstd: as fast to write as snappy here and about 30% smaller. A stream
    without any batch writes an empty Parquet file with no columns (or an empty directory).
    """

    fmt = "parquet"
    Config = ParquetLoaderConfig
    config: ParquetLoaderConfig

    def _directory(self, target: Path) -> bool:
        as_dir = bool(self.config.partition_by) or self.config.path.endswith(("/", os.sep)) or target.is_dir()
        if as_dir and target.is_file():
            raise ToolError(f"task {self.ctx.task!r}: {target} is a file, but this output is a directory "
                            "(partition_by or a path ending in /); give a directory path or remove the file")
        return as_dir

    def _writer(self, tmp: Path, schema: pa.Schema, name: str, as_dir: bool) -> Any:
        c, compression = self.config, self.config.compression
        dictionary = Dictionary(c.dictionary)
        if isinstance(c.dictionary, list) and (missing := [col for col in c.dictionary if col not in schema.names]):
            raise ToolError(f"task {self.ctx.task!r}: dictionary names {missing}, which {name} does not have "
                            f"(its columns: {schema.names}); fix dictionary")
        if c.partition_by:
            missing = [col for col in c.partition_by if col not in schema.names]
            if missing or len(c.partition_by) == len(schema.names):
                raise ToolError(f"task {self.ctx.task!r}: partition_by {c.partition_by} for {name}: "
                                + (f"no column {missing} in {schema.names}" if missing else
                                   "leaves no column to write") + "; fix partition_by")
            tmp.mkdir()
            make = partial(parquet_part, compression=compression, row_group_size=c.row_group_size,
                           dictionary=dictionary)
            return PartitionedOutput(local_part(tmp, make), schema, c.partition_by, ".parquet", c.row_group_size,
                                MAX_OPEN_PARTITIONS)
        if as_dir:
            tmp.mkdir()
            return ParquetOutput(tmp / "part-0.parquet", schema, compression, c.row_group_size, dictionary)
        return ParquetOutput(tmp, schema, compression, c.row_group_size, dictionary)

    def _empty(self, tmp: Path, as_dir: bool) -> None:
        if as_dir:
            tmp.mkdir()
        else:
            pq.write_table(pa.table({}), str(tmp))
