"""Helpers to test your own tools and pipelines with pytest.

    from agent_etl.testing import run_transform
    out = await run_transform("filter", {"where": "amount > 0"}, {"orders": table}, base_dir=tmp_path)

Tools run exactly as in a pipeline (config validated by the tool's model, batches streamed), only
without the agents around them.

A loader's commit units (``tools.base``, ``Loader``) can be driven by hand: ``units`` says after
which batch a unit ends (``ctx.commit_due()``), ``prepare`` stands for the sibling loads at each
commit (``await ctx.prepare(final)``; raise ``SiblingFailed`` in it to see the unit rolled back),
and ``ctx.commits`` lists the rows of each unit the loader reported committed::

    due = iter([False, True, False])  # a unit ends after the second batch
    finals = []

    async def prepare(final):
        finals.append(final)

    ctx = tool_context(tmp_path, connections=..., units=lambda: next(due), prepare=prepare)
    loader = build("loader", "postgres", {"connection": "pg", "table": "t"}, ctx)
    await loader.load(stream(table, batch_size=1000))
    assert ctx.commits == [2000, 1000] and finals == [False, True]
    assert (await loader.committed())["commits"] == 2
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from agent_etl.tools.base import Extractor, Tool, ToolContext
from agent_etl.tools.registry import Registry, default_registry


def tool_context(base_dir: str | Path, *, task: str = "test", run_id: str = "test-run", batch_size: int = 100_000,
                 connections: dict[str, dict[str, Any]] | None = None, state: Any = None,
                 position: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
                 units: Callable[[], bool] | None = None,
                 prepare: Callable[[bool], Awaitable[None]] | None = None) -> ToolContext:
    """A context for running a tool alone.

    ``state`` is what ``ctx.load_state()`` returns, and what the tool saves with ``ctx.save_state``
    is in ``ctx.saved_state`` afterwards; ``position`` is what ``ctx.source_position()`` returns (a
    loader's upstream position; a function to have it move as the stream does). ``units`` is asked
    by ``ctx.commit_due()`` after each batch a loader writes (None: the load is one unit), and
    ``prepare`` is awaited by ``ctx.prepare(final)`` before each commit (None: no sibling to wait
    for). The rows of each commit the tool reports (``ctx.commit(rows)``) are in ``ctx.commits``."""
    base = Path(base_dir)
    if position is None:
        position_source = None
    elif callable(position):
        position_source = position
    else:
        position_source = lambda: dict(position)  # noqa: E731
    ctx = ToolContext(run_id=run_id, task=task, base_dir=base, home=base / ".agent-etl", batch_size=batch_size,
                      connections=connections or {}, state_loader=lambda: state,
                      position_source=position_source, unit_source=units, prepare_hook=prepare)
    ctx.state_hook = lambda value: setattr(ctx, "saved_state", value)
    ctx.commits = []

    async def committed(rows: int) -> None:
        ctx.commits.append(rows)

    ctx.commit_hook = committed
    return ctx


async def stream(data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch],
                 batch_size: int | None = None) -> AsyncIterator[pa.RecordBatch]:
    """An async stream of record batches, as a tool receives its input."""
    if isinstance(data, pa.RecordBatch):
        data = [data]
    if isinstance(data, pa.Table):
        data = data.to_batches(max_chunksize=batch_size)
    for batch in data:
        yield batch


async def read_positions(extractor: Extractor) -> tuple[list[pa.RecordBatch], list[dict[str, Any] | None]]:
    """Every batch of ``extractor`` and its ``position()`` after each (what a commit there would record,
    and ``resume_from`` takes), closing what the read held (``ctx.resources``) at the end."""
    batches, positions = [], []
    try:
        async for b in extractor.batches():
            batches.append(b)
            positions.append(extractor.position())
    finally:
        await extractor.ctx.resources.aclose()
    return batches, positions


async def collect(batches: AsyncIterator[pa.RecordBatch]) -> pa.Table:
    got = [b async for b in batches]
    return pa.Table.from_batches(got) if got else pa.table({})


def build(kind: str, tool: str | type[Tool], options: dict[str, Any], ctx: ToolContext,
          registry: Registry | None = None) -> Any:
    cls = (registry or default_registry()).get(kind, tool) if isinstance(tool, str) else tool
    return cls(cls.Config.model_validate(options), ctx)


async def run_extractor(tool: str | type[Tool], options: dict[str, Any], *, base_dir: str | Path,
                        registry: Registry | None = None, **ctx: Any) -> pa.Table:
    return await collect(build("extractor", tool, options, tool_context(base_dir, **ctx), registry).batches())


async def run_transform(tool: str | type[Tool], options: dict[str, Any], inputs: dict[str, pa.Table], *,
                        base_dir: str | Path, registry: Registry | None = None, **ctx: Any) -> pa.Table:
    t = build("transform", tool, options, tool_context(base_dir, **ctx), registry)
    return await collect(t.run({name: stream(table) for name, table in inputs.items()}))


async def run_loader(tool: str | type[Tool], options: dict[str, Any], table: pa.Table, *, base_dir: str | Path,
                     registry: Registry | None = None, **ctx: Any) -> int:
    return await build("loader", tool, options, tool_context(base_dir, **ctx), registry).load(stream(table))
