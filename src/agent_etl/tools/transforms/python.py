"""Call a user's Python function on every batch: function: "module:function".

The module is imported with the pipeline's directory first on sys.path, so a transforms.py
next to pipeline.yaml works with function: "transforms:clean". The function gets a
pa.Table (format: arrow), a pandas DataFrame (format: pandas) or a polars DataFrame (format: polars,
zero-copy from Arrow; the polars extra) per batch and returns a Table, RecordBatch, pandas or polars
DataFrame (or anything with __arrow_c_stream__), or None to drop the batch. async def functions are
awaited on the event loop.

Each batch is handled on its own, so a run can resume, and loads commit in units, in the middle of
the stream. A function that keeps state from one batch to the next (a running total, rows held
back) must say so with ``stateful: true``: then loads below it commit once, at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import inspect
import re
import sys
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, field_validator

from agent_etl.tools.base import Transform, ToolConfig
from agent_etl.tools.transforms.inputs import skip_empty, tool_error

_import_lock = threading.Lock()  # sys.path is process-wide: two imports must not interleave their edits


class Python(Transform):
    """Apply a Python function module:function to each batch (as Arrow, pandas or polars)."""

    class Config(ToolConfig):
        """Apply a Python function module:function to each batch (as Arrow, pandas or polars)."""

        function: str = Field(description="module:function, the module next to the pipeline or importable")
        format: Literal["arrow", "pandas", "polars"] = Field(
            "arrow", description="what the function gets: a pa.Table, a pandas or a polars DataFrame")
        stateful: bool = Field(False, description="the function carries state from one batch to the next")

        @field_validator("function")
        @classmethod
        def _target(cls, value: str) -> str:
            if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", value):
                raise ValueError(f"function must be module:function, e.g. transforms:clean, not {value!r}")
            return value

        @field_validator("format")
        @classmethod
        def _installed(cls, value: str) -> str:
            if value == "polars" and not _importable("polars"):
                raise ValueError("format: polars needs the polars extra: pip install 'agent-etl[polars]'")
            return value

    @classmethod
    def streams(cls, options: dict[str, Any]) -> bool:
        return not options.get("stateful", False)

    async def run(self, inputs: dict[str, AsyncIterator[pa.RecordBatch]]) -> AsyncIterator[pa.RecordBatch]:
        fn = await asyncio.to_thread(self._resolve)
        (stream,) = inputs.values()

        async def outputs() -> AsyncIterator[pa.RecordBatch]:
            async for batch in stream:
                if inspect.iscoroutinefunction(fn):
                    result = await self._call_async(fn, batch)
                else:
                    result = await asyncio.to_thread(self._call, fn, batch)
                for out in self._batches(result):
                    yield out

        async with contextlib.aclosing(skip_empty(outputs())) as batches:
            async for out in batches:
                yield out

    def _resolve(self) -> Callable[..., Any]:
        target = self.config.function
        module_name, _, attr = target.partition(":")
        base = str(self.ctx.base_dir)
        with _import_lock:
            sys.path.insert(0, base)
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as e:
                if e.name is None or not (module_name == e.name or module_name.startswith(e.name + ".")):
                    raise self._broken(e, module_name, base) from e  # the module imports something missing
                raise tool_error(self, f"cannot import {target!r}: {e}",
                                 f"put {module_name.replace('.', '/')}.py next to the pipeline ({base}) "
                                 "or install the package that provides it") from e
            except Exception as e:  # the module's own code failed while importing
                raise self._broken(e, module_name, base) from e
            finally:
                sys.path.remove(base)  # the first one, ours; the module's own imports already ran
        fn: Any = module
        for part in attr.split("."):
            fn = getattr(fn, part, None)
            if fn is None:
                names = sorted(n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_"))
                raise tool_error(self, f"{target!r}: module {module_name!r} has no function {attr!r}",
                                 f"functions it has: {', '.join(names) or 'none'}")
        if not callable(fn):
            raise tool_error(self, f"{target!r} is a {type(fn).__name__}, not a function",
                             "point function: at a callable that takes a table and returns one")
        return fn

    def _broken(self, e: Exception, module_name: str, base: str) -> Exception:
        return tool_error(self, f"importing {self.config.function!r} failed: {type(e).__name__}: {e}",
                          f"fix the module {module_name!r}; run `python -c \"import {module_name}\"` "
                          f"in {base} to see the traceback")

    def _arg(self, batch: pa.RecordBatch) -> Any:
        table = pa.Table.from_batches([batch])
        if self.config.format == "polars":
            import polars as pl

            return pl.from_arrow(table, rechunk=False)  # one chunk per column: its buffers, not a copy
        return table.to_pandas() if self.config.format == "pandas" else table

    def _call(self, fn: Callable[..., Any], batch: pa.RecordBatch) -> Any:
        try:
            return fn(self._arg(batch))
        except Exception as e:
            raise self._raised(e) from e

    async def _call_async(self, fn: Callable[..., Any], batch: pa.RecordBatch) -> Any:
        arg = await asyncio.to_thread(self._arg, batch)
        try:
            return await fn(arg)
        except Exception as e:
            raise self._raised(e) from e

    def _raised(self, e: Exception) -> Exception:
        kind = {"pandas": "a pandas DataFrame", "polars": "a polars DataFrame"}.get(self.config.format,
                                                                                   "a pyarrow.Table")
        return tool_error(self, f"{self.config.function} raised {type(e).__name__}: {e}",
                          f"fix the function; it gets {kind} per batch and returns a table or None")

    def _batches(self, result: Any) -> list[pa.RecordBatch]:
        if result is None:
            return []
        if isinstance(result, pa.RecordBatch):
            return [result]
        if isinstance(result, pa.Table):
            return result.to_batches() or [pa.RecordBatch.from_pylist([], schema=result.schema)]
        pd = sys.modules.get("pandas")
        if pd is not None and isinstance(result, pd.DataFrame):
            # a named index (a groupby key) is data; an unnamed one is just row numbers
            if any(n is not None for n in result.index.names):
                result = result.reset_index()
            try:
                table = pa.Table.from_pandas(result, preserve_index=False).replace_schema_metadata(None)
            except (pa.ArrowException, ValueError, TypeError) as e:
                raise tool_error(self, f"{self.config.function} returned a DataFrame Arrow cannot hold: {e}",
                                 "give each column one type (no mixed objects)") from e
            return self._batches(table)
        pl = sys.modules.get("polars")
        if pl is not None and isinstance(result, pl.DataFrame):
            return self._batches(result.to_arrow())  # the frame's buffers; strings as large_string
        if hasattr(result, "__arrow_c_stream__"):
            return self._batches(pa.table(result))
        raise tool_error(self, f"{self.config.function} returned {type(result).__name__}",
                         "return a pyarrow.Table, pyarrow.RecordBatch, a pandas or polars DataFrame, or None")


def _importable(module: str) -> bool:
    """``module`` can be imported (looked up without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # sys.modules[module] is None: imports of it are blocked
        return False
