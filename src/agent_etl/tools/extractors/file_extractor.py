"""The base of the file extractors: the files a path names, read in name order with the first
file's schema, and the positions a read resumes from (what they hold is in ``file_position``)."""

from __future__ import annotations

import asyncio
import glob
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pyarrow as pa

from agent_etl.exceptions import ToolError
from agent_etl.stream import slices
from agent_etl.tools.base import Extractor, ToolContext
from agent_etl.tools.extractors.file_config import FileConfig
from agent_etl.tools.extractors.file_position import schema_of, schema_text, skipping
from agent_etl.tools.extractors.file_source import READ_ERRORS, FileRef, Source, read_ahead

T = TypeVar("T")


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


def conform(batch: pa.RecordBatch, target: pa.Schema, path: FileRef, first: FileRef, task: str) -> pa.RecordBatch:
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


def by_size(sized: list[tuple[int, T]], n: int) -> list[list[T]]:
    """``(size, name)`` pairs in ``n`` groups (as many as there are names, if fewer) of about equal
    total size: the largest first, each into the group with the fewest bytes (of those, the fewest
    names: a group of empty files still gets one); each group in name order. Every name is in
    exactly one group, and no group is empty."""
    n = min(n, len(sized))
    taken: list[list[T]] = [[] for _ in range(n)]
    sizes = [0] * n
    for size, name in sorted(sized, key=lambda x: (-x[0], x[1])):
        i = min(range(n), key=lambda j: (sizes[j], len(taken[j]), j))
        taken[i].append(name)
        sizes[i] += size
    return [sorted(g) for g in taken]  # type: ignore[type-var]


class FileExtractor(Extractor):
    """Base of the file extractors: resolving the path, one schema for all files, positions, resume."""

    fmt: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]] = ()
    Config = FileConfig
    split_into: ClassVar[str] = "group of files of about equal size"  # what a copy reads (agents.partition_plan)
    # whether a position past the first file carries the first file's schema (parquet reads footers)
    schema_in_position: ClassVar[bool] = True

    def __init__(self, config: FileConfig, ctx: ToolContext):
        super().__init__(config, ctx)
        self._file: FileRef | None = None
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

    def _files(self) -> list[FileRef]:
        """The files to read, in the order every read takes (called in a worker thread): those of
        the path, or the group of them a copy of a partitioned read was given (``split``)."""
        fixed = self.ctx.partition
        if fixed is not None and "files" in fixed:
            return [Path(f) for f in fixed["files"]]
        return resolve(self.ctx, self.config.path, self.suffixes, self.fmt)

    async def split(self) -> list[dict[str, Any]]:
        """The files in ``partitions`` groups of about equal size (``by_size``): what the copies of
        the branch read, one group each, in a run spread over workers."""
        def groups() -> list[dict[str, Any]]:
            files = resolve(self.ctx, self.config.path, self.suffixes, self.fmt)
            return [{"files": [str(f) for f in g]} for g in by_size([(f.stat().st_size, f) for f in files],
                                                                    self.config.partitions)]

        return await asyncio.to_thread(groups)

    def _open(self, path: FileRef, target: pa.Schema | None) -> Source | None:
        """Open ``path`` in a worker thread (None skips an empty file); ``target`` is the first file's schema."""
        raise NotImplementedError

    def _open_at(self, path: FileRef, target: pa.Schema | None, position: dict[str, Any]) -> Source | None:
        """Open ``path`` where ``position`` (in this file) left off; by default: its rows after ``file_rows``."""
        source = self._open(path, target)
        return None if source is None else skipping(source, position["file_rows"], path, self.ctx.task)

    def _resume_target(self, files: list[FileRef], position: dict[str, Any]) -> pa.Schema | None:
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

    def _check(self, files: list[FileRef], position: dict[str, Any]) -> int:
        index, name = position["file_index"], position["file"]
        if not isinstance(index, int) or not 0 <= index < len(files) or str(files[index]) != name:
            now = (f"file #{index} is now {files[index]}" if isinstance(index, int) and 0 <= index < len(files)
                   else f"it now names {len(files)} file(s)")
            raise ToolError(f"task {self.ctx.task!r}: cannot resume the {self.fmt} read: the position is in file "
                            f"#{index} {name} of path {self.config.path!r}, but {now}; the file list changed since "
                            "the position was taken (a file added, removed or renamed before it), so the rows after "
                            "the position are not known: restore the files, or start the read anew")
        return index

    def _explain(self, error: Exception, path: FileRef) -> ToolError:
        return ToolError(f"task {self.ctx.task!r}: cannot read {self.fmt} file {path}: {error}; "
                         f"check that it is a valid {self.fmt} file")

    def _known_columns(self, source: Source, path: FileRef) -> Source:
        unknown = sorted(set(getattr(self.config, "column_types", {})) - set(source.schema.names))
        if unknown:
            source.close()
            raise ToolError(f"task {self.ctx.task!r}: column_types names {unknown}, which {path} does not have "
                            f"(its columns: {source.schema.names}); fix the names in column_types")
        return source

    async def batches(self) -> AsyncIterator[pa.RecordBatch]:
        files = await asyncio.to_thread(self._files)
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
            async for batch, mark in read_ahead(source, lambda e, p=path: self._explain(e, p)):
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
