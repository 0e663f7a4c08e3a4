"""What the transforms share about their inputs: one message format for every user-caused failure
(``tool_error``), columns a step names that the input lacks (``missing_columns``), and empty batches
dropped without losing the schema (``skip_empty``)."""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator

import pyarrow as pa

from agent_etl.exceptions import ToolError
from agent_etl.tools.base import Tool


def tool_error(tool: Tool, message: str, hint: str | None = None) -> ToolError:
    head = f"task {tool.ctx.task!r} ({tool.name or type(tool).__name__.lower()}): "
    return ToolError(head + message + (f"\n    hint: {hint}" if hint else ""))


async def skip_empty(stream: AsyncIterator[pa.RecordBatch]) -> AsyncIterator[pa.RecordBatch]:
    """Drop empty batches; if nothing had rows, still yield one empty batch so downstream sees the schema."""
    empty = None
    sent = False
    try:
        async for batch in stream:
            if batch.num_rows:
                sent = True
                yield batch
            else:
                empty = batch
    finally:
        if hasattr(stream, "aclose"):  # a consumer that stops early closes the whole chain now, not at GC
            await stream.aclose()
    if not sent and empty is not None:
        yield empty


def missing_columns(tool: Tool, wanted: list[str], schema: pa.Schema, what: str = "column") -> None:
    names = schema.names
    missing = [c for c in wanted if c not in names]
    if not missing:
        return
    close = difflib.get_close_matches(missing[0], names, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"the input has: {', '.join(names)}"
    listed = ", ".join(repr(c) for c in missing)
    raise tool_error(tool, f"{what}{'s' if len(missing) > 1 else ''} {listed} not in the input", hint)
