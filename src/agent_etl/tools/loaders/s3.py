"""The s3 loader: Parquet, CSV or JSON Lines into S3 (or an S3-compatible server), as one object or a
dataset under a prefix, hive-partitioned by columns with ``partition_by``.

Data is written by the file loaders' writers (``file_writers``: same options, types and output as
the parquet/csv/jsonl tools) into multipart uploads; the load is one commit unit, replaced whole,
and nothing of it is visible until its commit: see ``tools.s3.output`` for the protocol, what a
failure leaves, and the manifest that ``committed()`` and ``mark()`` read back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any, Literal

import boto3  # noqa: F401  (the s3 extra: a missing one is named when the tool is looked up)
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from agent_etl.exceptions import ToolError
from agent_etl.tools.base import Loader, ToolConfig
from agent_etl.tools.capabilities import Capabilities
from agent_etl.tools.flat_columns import check_flat
from agent_etl.tools.loaders.file_writers import (CSVOutput, Dictionary, JSONLinesOutput, PartitionedOutput,
                                                 parquet_part)
from agent_etl.tools.loaders.files import (WRITE_ERRORS, CSVLoaderConfig, FileLoaderConfig, ParquetLoaderConfig,
                                           same_schema, manifest_body)
from agent_etl.tools.s3.client import S3Client, connect, explain
from agent_etl.tools.s3.output import S3Output
from agent_etl.tools.s3.options import S3Options, format_problems
from agent_etl.tools.s3.upload import MIN_PART
from agent_etl.tools.s3.url import parse_url

FORMATS: dict[str, tuple[type[ToolConfig], str]] = {
    "parquet": (ParquetLoaderConfig, ".parquet"), "csv": (CSVLoaderConfig, ".csv"), "jsonl": (FileLoaderConfig, ".jsonl")}
S3_KEYS = frozenset({"url", "endpoint_url", "region", "profile", "anonymous", "connection", "format",
                     "partition_by", "part_size", "compression"})
MAX_OPEN_PARTITIONS = 32  # uploads open at once: each holds up to two parts in memory


CODECS = {"gzip": ".gz", "zstd": ".zst"}  # of CSV and JSON Lines objects


def _name(url: str) -> str:
    name = url.rsplit("/", 1)[-1].lower()
    return next((name.removesuffix(ext) for ext in CODECS.values() if name.endswith(ext)), name)


def format_of(url: str, given: str | None) -> str | None:
    if given:
        return given
    name = _name(url)
    if not name:
        return "parquet"  # a prefix: a dataset, parquet unless said otherwise
    return next((fmt for fmt, (_, suffix) in FORMATS.items() if name.endswith(suffix)), None)


def codec_of(url: str, fmt: str, given: str | None) -> str | None:
    """The codec of a CSV or JSON Lines output: ``compression``, else the url's suffix (.gz, .zst)."""
    if fmt == "parquet":
        return None  # Parquet compresses its pages itself (its own ``compression`` option)
    if given is not None:
        return None if given == "none" else given
    name = url.rsplit("/", 1)[-1].lower()
    return next((codec for codec, ext in CODECS.items() if name.endswith(ext)), None)


class S3LoaderConfig(S3Options):
    """Write Parquet, CSV or JSON Lines to S3; the format's options (compression, delimiter...) alongside."""

    model_config = ConfigDict(extra="allow", frozen=True)
    url: str = Field(min_length=6, description="s3://bucket/key.parquet (one object) or s3://bucket/prefix/ (a dataset)")
    format: Literal["parquet", "csv", "jsonl"] | None = Field(
        None, description="default: from the url's suffix; parquet for a prefix")
    partition_by: list[str] = Field(default_factory=list, description="columns to partition a dataset by (hive style)")
    part_size: int = Field(8 << 20, ge=MIN_PART, le=5 << 30, description="bytes per uploaded part")
    _format: Any = PrivateAttr(None)
    _codec: str | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _format_options(self) -> S3LoaderConfig:
        fmt = format_of(self.url, self.format)
        if fmt is None:
            raise ValueError(f"cannot tell the format of {self.url!r} from its name; set format: parquet, csv or "
                             "jsonl, or end the url in / for a dataset")
        if self.partition_by and not self.url.endswith("/"):
            raise ValueError(f"partition_by writes a dataset under a prefix: end url in / ({self.url}/)")
        cls, extra = FORMATS[fmt][0], dict(self.model_extra or {})
        if fmt != "parquet" and "compression" in extra:  # csv and jsonl objects: the codec of the whole object
            given = extra.pop("compression")
            if given not in ("none", *CODECS):
                raise ValueError(f"compression of a {fmt} output is none, {' or '.join(CODECS)}, not {given!r}")
            self._codec = codec_of(self.url, fmt, given)
        else:
            self._codec = codec_of(self.url, fmt, None)
        try:
            self._format = cls.model_validate({**extra, "path": self.url})
        except ValidationError as e:
            raise ValueError(format_problems(e, fmt, cls, S3_KEYS)) from None
        return self

    def format_config(self) -> tuple[str, Any]:
        return format_of(self.url, self.format), self._format

    def codec(self) -> str | None:
        return self._codec

    def suffix(self) -> str:
        """The name ending of the output's objects: ``.csv.gz``, ``.parquet``..."""
        fmt = format_of(self.url, self.format)
        return FORMATS[fmt][1] + (CODECS[self._codec] if self._codec else "")


class S3Loader(Loader):
    """Write Parquet, CSV or JSON Lines to S3, one object or a (partitioned) dataset, put in place at the commit."""

    # One object appears whole or not at all; a dataset's objects appear one by one during the commit
    # (S3 has no multi-object rename), so a replace is not atomic for readers that list it.
    capabilities = Capabilities(modes=("replace",), checkpoints=True, atomic_replace=False, all_or_nothing=True)
    Config = S3LoaderConfig
    config: S3LoaderConfig

    def _output(self) -> tuple[S3Client, S3Output, str, Any]:
        fmt, options = self.config.format_config()
        url = parse_url(self.config.url)
        client = connect(self.ctx, self.config)
        as_dir = url.key == "" or url.key.endswith("/")
        return client, S3Output(client, url, as_dir, (self.config.suffix(),), self.config.part_size, self.ctx.task), \
            fmt, options

    def _sink(self, output: S3Output, rel: str = "") -> Any:
        """The upload of object ``rel``, compressed on the way when the output is (closing it closes both)."""
        upload, codec = output.open(rel), self.config.codec()
        return pa.CompressedOutputStream(upload, codec) if codec else upload

    def _writer(self, output: S3Output, fmt: str, options: Any, schema: pa.Schema) -> Any:
        name, task, suffix = str(output), self.ctx.task, self.config.suffix()
        by = self.config.partition_by
        if fmt == "csv":
            check_flat(schema, fmt, task, name)
            write = pacsv.WriteOptions(include_header=options.header, delimiter=options.delimiter)
            make: Callable[[Any, pa.Schema], Any] = lambda sink, sch: CSVOutput(sink, sch, write)  # noqa: E731
        elif fmt == "jsonl":
            make = JSONLinesOutput
        else:
            dictionary = Dictionary(options.dictionary)
            make = lambda sink, sch: parquet_part(sink, sch, compression=options.compression,  # noqa: E731
                                                  row_group_size=options.row_group_size, dictionary=dictionary)
        if by:
            missing = [c for c in by if c not in schema.names]
            if missing or len(by) == len(schema.names):
                raise ToolError(f"task {task!r}: partition_by {by} for {name}: "
                                + (f"no column {missing} in {schema.names}" if missing else "leaves no column to write")
                                + "; fix partition_by")
            rows = getattr(options, "row_group_size", 1_048_576)
            return PartitionedOutput(lambda rel, sch: make(self._sink(output, rel), sch), schema, by, suffix, rows,
                                     MAX_OPEN_PARTITIONS)
        return make(self._sink(output, f"part-0{suffix}" if output.as_dir else ""), schema)

    def _empty(self, output: S3Output, fmt: str) -> None:
        """The output of a stream without any batch: an empty object (Parquet: no columns), or an empty dataset."""
        if output.as_dir:
            return
        sink = self._sink(output)
        if fmt == "parquet":
            pq.write_table(pa.table({}), sink)
        sink.close()

    def _fail(self, error: BaseException, output: S3Output, client: S3Client) -> BaseException:
        found = explain(error, self.ctx.task, str(output), client, "write")
        if found is not None:
            return found
        if isinstance(error, WRITE_ERRORS):
            return ToolError(f"task {self.ctx.task!r}: cannot write {output}: {error}; check that the column types "
                             "suit the format")
        return error

    async def load(self, batches: AsyncIterator[pa.RecordBatch]) -> int:
        client, output, fmt, options = await asyncio.to_thread(self._output)
        pool = ThreadPoolExecutor(1, thread_name_prefix="agent-etl-write")  # one thread: see FileLoader.load
        loop = asyncio.get_running_loop()
        opened: list[Any] = []
        schema, rows, name = None, 0, str(output)

        def call(fn: Callable[..., Any], *args: Any) -> Any:
            def translated() -> Any:
                try:
                    return fn(*args)
                except Exception as e:
                    error = self._fail(e, output, client)
                    if error is e:
                        raise
                    raise error from None

            return loop.run_in_executor(pool, translated)

        try:
            await call(output.check)
            async for batch in batches:
                if schema is None:
                    schema = batch.schema
                    await call(lambda: opened.append(self._writer(output, fmt, options, schema)))
                await call(opened[0].write, same_schema(batch, schema, self.ctx.task, name))
                rows += batch.num_rows
            await call(opened[0].close if opened else lambda: self._empty(output, fmt))
            await self.ctx.prepare(True)  # the siblings are ready too, or this raises and nothing is put in place
            commit = call(output.commit, manifest_body(self.ctx, rows))
            try:
                await asyncio.shield(commit)
            except asyncio.CancelledError:  # the requests go on in their thread: let them end, then stop
                with suppress(Exception):
                    await commit
                raise
        except BaseException:
            for writer in opened:
                with suppress(Exception):  # the error that brought us here is the one to report
                    await loop.run_in_executor(pool, writer.abort)
            await asyncio.shield(asyncio.to_thread(output.abort))
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        output.close()
        await self.ctx.commit(rows)
        return rows

    async def committed(self) -> dict[str, Any] | None:
        client, output, _, _ = await asyncio.to_thread(self._output)
        try:
            return await asyncio.to_thread(output.committed, self.ctx)
        finally:
            output.close()

    async def mark(self, source: str) -> dict[str, Any] | None:
        client, output, _, _ = await asyncio.to_thread(self._output)
        try:
            return await asyncio.to_thread(output.mark, self.ctx, source)
        finally:
            output.close()
