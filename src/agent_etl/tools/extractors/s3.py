"""The s3 extractor: CSV, JSON Lines, JSON and Parquet objects named by ``s3://bucket/prefix/glob``.

The formats are read by the file extractors' own code (``files``), so options, types, errors and
positions are those of the csv/jsonl/json/parquet tools: the format's options go next to the S3
ones (``delimiter``, ``column_types``, ``columns``...). What differs is where the bytes come from:
the objects are listed in key order (``s3.listing``), small ones fetched whole several at once
ahead of the reader, large ones read by ranged GETs or streamed (``s3.objects``); ``.gz``, ``.zst``
and ``.bz2`` objects are decompressed as they are read (``compression`` to say so when the name
does not). A position names the object (``file``: its ``s3://`` URL, ``file_index``) and the
place in it, so a run resumes after the last committed batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import cache
from typing import Any, ClassVar, Literal

import boto3  # noqa: F401  (the s3 extra: a missing one is named when the tool is looked up)
import pyarrow as pa
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from agent_etl.exceptions import ToolError
from agent_etl.tools.base import Extractor, ToolConfig, ToolContext
from agent_etl.tools.extractors.file_config import FileConfig
from agent_etl.tools.extractors.file_extractor import FileExtractor, by_size
from agent_etl.tools.extractors.file_source import FileRef, Source
from agent_etl.tools.extractors.files import CSVExtractor, JSONExtractor, JSONLExtractor, ParquetExtractor
from agent_etl.tools.s3.client import S3Client, connect, explain
from agent_etl.tools.s3.hive import partition_values, with_partitions, without
from agent_etl.tools.s3.listing import Listed, resolve_objects
from agent_etl.tools.s3.objects import CODECS, Prefetch, S3Object
from agent_etl.tools.s3.options import S3Options, format_problems
from agent_etl.tools.s3.url import parse_url

FORMATS: dict[str, type[FileExtractor]] = {"csv": CSVExtractor, "jsonl": JSONLExtractor, "json": JSONExtractor,
                                           "parquet": ParquetExtractor}
S3_KEYS = frozenset({"url", "endpoint_url", "region", "profile", "anonymous", "connection", "format",
                     "compression", "concurrency", "whole_object_max", "hive_partitioning"})


def format_of(url: str, given: str | None) -> str | None:
    """``given``, or the format the URL's name says (``*.csv.gz`` is csv), or None."""
    if given:
        return given
    name = url.rsplit("/", 1)[-1].lower()
    for suffix in CODECS:
        name = name.removesuffix(suffix)
    for fmt, cls in FORMATS.items():
        if name.endswith(tuple(s for s in cls.suffixes if s.count(".") == 1)):
            return fmt
    return None


class S3ExtractorConfig(S3Options):
    """Read objects from S3 (or an S3-compatible server); the format's options are given alongside."""

    model_config = ConfigDict(extra="allow", frozen=True)
    format: Literal["csv", "jsonl", "json", "parquet"] | None = Field(
        None, description="default: from the url's suffix (.csv, .csv.gz, .jsonl, .json, .parquet...)")
    compression: Literal["auto", "none", "gzip", "zstd", "bz2"] = Field(
        "auto", description="auto: from each object's suffix (.gz, .zst, .bz2)")
    concurrency: int = Field(8, ge=1, le=64, description="objects fetched at once, ahead of the reader")
    whole_object_max: int = Field(64 << 20, ge=0, description="objects up to this many bytes are fetched whole "
                                  "(one GET); larger ones are streamed or read by ranges")
    hive_partitioning: bool = Field(False, description="add the key's name=value folders as string columns")
    _format: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _format_options(self) -> S3ExtractorConfig:
        fmt = format_of(self.url, self.format)
        if fmt is None:
            raise ValueError(f"cannot tell the format of {self.url!r} from its name; set format: csv, jsonl, json "
                             "or parquet")
        cls = FORMATS[fmt].Config
        try:
            self._format = cls.model_validate({**(self.model_extra or {}), "path": self.url})
        except ValidationError as e:
            raise ValueError(format_problems(e, fmt, cls, S3_KEYS)) from None
        return self

    def format_config(self) -> tuple[str, ToolConfig]:
        return format_of(self.url, self.format), self._format


class S3Reading:
    """What turns a file extractor into an S3 one: the objects of the URL instead of local files,
    and S3 errors explained as such. Mixed in before the format's extractor class."""

    ctx: ToolContext
    config: FileConfig  # the format's options (``partitions`` among them)
    fmt: str
    suffixes: tuple[str, ...]

    def __init__(self, config: ToolConfig, ctx: ToolContext, s3: S3ExtractorConfig):
        super().__init__(config, ctx)  # type: ignore[call-arg]
        self._s3 = s3
        self._client: S3Client | None = None
        self._prefetch: Prefetch | None = None
        self._partition_names: list[str] | None = None
        self._opening = False  # inside _opened (one worker thread opens at a time)

    def _listed(self) -> list[Listed]:
        """The objects the URL names, in key order (one listing)."""
        suffixes = tuple(dict.fromkeys(self.suffixes + tuple(f"{s}{c}" for s in self.suffixes for c in CODECS)))
        self._client = connect(self.ctx, self._s3)
        return resolve_objects(self._client, parse_url(self._s3.url), suffixes, self.fmt, self.ctx.task)

    async def split(self) -> list[dict[str, Any]]:
        """The objects in ``partitions`` groups of about equal size (as a file source's files,
        ``by_size``), listed once: what the copies of the branch read, one group each, in a run
        spread over workers. A group is its objects' keys and sizes, in key order (``objects``)."""
        def groups() -> list[dict[str, Any]]:
            listed = {o.key: o.size for o in self._listed()}
            parts = by_size([(size, key) for key, size in listed.items()], self.config.partitions)
            return [{"objects": [[key, listed[key]] for key in g]} for g in parts]

        return await asyncio.to_thread(groups)

    def _files(self) -> list[FileRef]:
        s3 = self._s3
        fixed = self.ctx.partition  # a copy of a partitioned read: its group of objects, as split listed them
        if fixed is not None and "objects" in fixed:
            listed = [Listed(key, int(size)) for key, size in fixed["objects"]]
        else:
            listed = self._listed()
        client = self._client = connect(self.ctx, s3)  # the run's client: one per endpoint
        url = parse_url(s3.url)
        self._prefetch = Prefetch(client, s3.concurrency, s3.whole_object_max, max(2 * s3.whole_object_max, 1))
        objects = [S3Object(client, url.bucket, o.key, o.size, i, s3.compression, self._prefetch)
                   for i, o in enumerate(listed)]
        self._prefetch.add(objects)
        return objects  # type: ignore[return-value]

    def _translated(self, error: BaseException, path: Any) -> BaseException:
        found = explain(error, self.ctx.task, str(path), self._client) if self._client is not None else None
        return found if found is not None else error

    def _partitions(self, path: Any) -> dict[str, str | None]:
        """The hive partition values of an object (none unless ``hive_partitioning``); every object
        of the read must have the same partition names."""
        if not self._s3.hive_partitioning:
            return {}
        values = partition_values(path.key)
        if self._partition_names is None:
            self._partition_names = list(values)
        elif list(values) != self._partition_names:
            raise ToolError(f"task {self.ctx.task!r}: {path} has the partition folders {list(values)}, but the "
                            f"objects before it {self._partition_names}; read the datasets in separate steps")
        return values

    def _opened(self, open_: Any, path: Any, target: pa.Schema | None, *more: Any) -> Source | None:
        """``open_`` (the format's own open) with S3 errors explained and the partition columns added."""
        if self._opening:  # the format's _open_at calling _open: the outer call does all this
            return open_(path, target, *more)
        self._opening = True
        try:
            values = self._partitions(path)
            source = open_(path, without(target, list(values)), *more)
        except ToolError:
            raise
        except Exception as e:
            error = self._translated(e, path)
            if error is e:
                raise
            raise error from None
        finally:
            self._opening = False
        return with_partitions(source, values, str(path), self.ctx.task) if source is not None and values else source

    def _open(self, path: FileRef, target: pa.Schema | None) -> Source | None:
        return self._opened(super()._open, path, target)  # type: ignore[misc]

    def _open_at(self, path: FileRef, target: pa.Schema | None, position: dict[str, Any]) -> Source | None:
        return self._opened(super()._open_at, path, target, position)  # type: ignore[misc]

    def _resume_target(self, files: list[FileRef], position: dict[str, Any]) -> pa.Schema | None:
        try:
            target = super()._resume_target(files, position)  # type: ignore[misc]
        except Exception as e:
            error = self._translated(e, files[position["file_index"]])
            if error is e:
                raise
            raise error from None
        if target is not None and self._s3.hive_partitioning:  # a Parquet footer's: the partitions are not in it
            names = list(partition_values(files[0].key))  # type: ignore[union-attr]
            target = pa.schema([*target, *(pa.field(n, pa.string()) for n in names if n not in target.names)])
        return target

    def _explain(self, error: Exception, path: FileRef) -> Any:
        found = explain(error, self.ctx.task, str(path), self._client) if self._client is not None else None
        return found if found is not None else super()._explain(error, path)  # type: ignore[misc]

    async def batches(self) -> AsyncIterator[pa.RecordBatch]:
        try:
            async for batch in super().batches():  # type: ignore[misc]
                yield batch
        finally:
            if self._prefetch is not None:
                await asyncio.to_thread(self._prefetch.close)


@cache
def reader_class(fmt: str) -> type[FileExtractor]:
    base = FORMATS[fmt]
    return type(f"S3{base.__name__}", (S3Reading, base), {"__module__": __name__})


class S3Extractor(Extractor):
    """Read CSV, JSON Lines, JSON or Parquet objects from S3 by key, prefix or glob (gzip/zstd too)."""

    Config = S3ExtractorConfig
    config: S3ExtractorConfig
    split_into: ClassVar[str] = "group of objects of about equal size"  # what a copy reads (agents.partition_plan)

    def __init__(self, config: S3ExtractorConfig, ctx: ToolContext):
        super().__init__(config, ctx)
        fmt, options = config.format_config()
        self.reader = reader_class(fmt)(options, ctx, config)

    def batches(self) -> AsyncIterator[pa.RecordBatch]:
        return self.reader.batches()

    async def split(self) -> list[dict[str, Any]]:
        """The copies' groups of objects, for a run spread over workers (``S3Reading.split``)."""
        return await self.reader.split()

    def position(self) -> dict[str, Any] | None:
        return self.reader.position()

    def resumable(self) -> bool:
        return self.reader.resumable()

    def resume_from(self, position: dict[str, Any]) -> None:
        self.reader.resume_from(position)

    @property
    def skipped_rows(self) -> int:
        """CSV rows dropped by ``bad_rows: skip``."""
        return getattr(self.reader, "skipped_rows", 0)
