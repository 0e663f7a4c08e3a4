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

import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from agent_etl.spec import Task
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


# -- a simulated fleet, to test and benchmark agent selection ------------------------------------


@dataclass
class Profile:
    """How one agent does on one kind of task, hidden from the selector."""

    success: float  # probability that a run succeeds
    rows_per_second: float  # median throughput of a successful run


class SimulatedFleet:
    """Agents whose success and speed on each kind of task are hidden ``profiles``; ``run`` draws
    what happens when an agent runs a task (success with the profile's probability, throughput
    log-normal around its median with ``noise``), as experiences the selector learns from. The
    oracle's choice for a kind is the agent with the best expected rows/s delivered, success x speed.

        fleet = SimulatedFleet.generate(agents=5, kinds=12, seed=1)
        task, descriptor = fleet.task(3)
        choice = (await selector.select([task], fleet.agents, {task.name: descriptor}))[task.name]
        await selector.learn(fleet.run(choice.agent, descriptor))
        right = choice.agent == fleet.oracle(descriptor)
    """

    def __init__(self, agents: list[Any], kinds: list[Any], profiles: dict[tuple[str, int], Profile], *,
                 noise: float = 0.2, seed: int = 0):
        self.agents, self.kinds, self.profiles, self.noise = agents, kinds, profiles, noise
        self._random = random.Random(seed)
        self._index = {d: i for i, d in enumerate(kinds)}
        self._runs = 0

    @classmethod
    def generate(cls, agents: int = 5, kinds: int = 12, *, seed: int = 0, gap: float = 0.15,
                 noise: float = 0.2) -> SimulatedFleet:
        """A fleet of ``agents`` able to run everything, and ``kinds`` kinds of task (source ->
        transforms -> destination). Each agent has a speed, a reliability, and affinities to some
        sources and destinations (near the data, or short of memory for them); on every kind the best
        agent delivers at least ``gap`` more than the second, and the second than the third (so that
        "the best" is well defined, also once the best has degraded)."""
        from agent_etl.agents.selector import AgentInfo
        from agent_etl.memory.descriptor import TaskDescriptor

        r = random.Random(seed)
        sources = ["postgres", "mysql", "csv", "parquet", "s3", "rest", "sqlite", "jsonl"]
        sinks = ["parquet", "postgres", "duckdb", "s3", "mysql"]
        shapes: set[tuple[str, tuple[str, ...], str]] = set()
        while len(shapes) < kinds:
            shapes.add((r.choice(sources), tuple(r.sample(["filter", "sql", "derive"], r.randint(0, 2))),
                        r.choice(sinks)))
        descriptors = [TaskDescriptor("load", d, (s,), (d,), t, rows=1_000_000) for s, t, d in sorted(shapes)]
        fleet = [AgentInfo(f"agent-{i}", capabilities=frozenset({"extract", "transform", "load"}),
                           limits={"concurrency": 4}) for i in range(agents)]
        # speed, reliability, affinity per source/destination: 0.5 is short of memory for it (slow
        # and fails often), 1.8 near it
        traits = {a.id: (r.uniform(0.6, 1.6), r.uniform(0.95, 0.999),
                         {k: r.choice([0.5, 1.0, 1.0, 1.8]) for k in sources + sinks}) for a in fleet}
        profiles: dict[tuple[str, int], Profile] = {}
        for i, d in enumerate(descriptors):
            base = r.uniform(2e4, 5e5)
            for a in fleet:
                speed, reliable, near = traits[a.id]
                s = min(reliable - (0.4 if near[d.sources[0]] == 0.5 else 0.0), 0.999)
                profiles[(a.id, i)] = Profile(max(s, 0.3), base * speed * near[d.sources[0]]
                                              * near[d.destinations[0]] * r.uniform(0.8, 1.25))
            ranked = sorted(fleet, key=lambda a: _goodput(profiles[(a.id, i)]))
            for lower, upper in zip(ranked[-3:], ranked[-2:]):  # the top three stand apart
                low, up = profiles[(lower.id, i)], profiles[(upper.id, i)]
                if _goodput(up) < (1 + gap) * _goodput(low):
                    up.rows_per_second = (1 + gap) * _goodput(low) / up.success
        return cls(fleet, descriptors, profiles, noise=noise, seed=seed)

    def task(self, kind: int, name: str = "t") -> tuple[Task, Any]:
        """A one-task branch of kind ``kind`` and its descriptor."""
        d = self.kinds[kind]
        return Task(name, "load", d.tool, [], {}), d

    def oracle(self, descriptor: Any) -> str:
        i = self._index[descriptor]
        return max(self.agents, key=lambda a: _goodput(self.profiles[(a.id, i)])).id

    def run(self, agent: str, descriptor: Any) -> list[Any]:
        """What happens when ``agent`` runs the task: its experience (one, as a one-task branch)."""
        from agent_etl.memory.experience import Experience

        p = self.profiles[(agent, self._index[descriptor])]
        self._runs += 1
        ok = self._random.random() < p.success
        speed = p.rows_per_second * math.exp(self._random.gauss(0.0, self.noise))
        rows = descriptor.rows or 1_000_000
        return [Experience(run_id=f"sim-{self._runs}", pipeline="simulated", task="t", descriptor=descriptor,
                           agent=agent, status="succeeded" if ok else "failed",
                           duration=rows / speed if ok else 1.0, rows=rows if ok else 0,
                           rows_per_second=speed if ok else 0.0, created_at=float(self._runs))]

    def degrade(self, agent: str, *, success: float = 1.0, speed: float = 1.0, gap: float = 0.15) -> list[int]:
        """From now on ``agent`` succeeds ``success`` times as often and runs ``speed`` times as fast
        on every kind; where that leaves it within ``gap`` of the best other agent, it slows down a
        little more, to ``gap`` below it (so the oracle's choice stays well defined). Returns the
        kinds on which it was the best."""
        was = [i for i, d in enumerate(self.kinds) if self.oracle(d) == agent]
        for i in range(len(self.kinds)):
            p = self.profiles[(agent, i)]
            p.success, p.rows_per_second = p.success * success, p.rows_per_second * speed
            best = max(_goodput(self.profiles[(a.id, i)]) for a in self.agents if a.id != agent)
            if best / (1 + gap) < _goodput(p) < best * (1 + gap):
                p.rows_per_second = best / (1 + gap) / p.success
        return was


def _goodput(p: Profile) -> float:
    return p.success * p.rows_per_second
