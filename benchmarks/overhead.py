"""Runtime overhead per task step, against a bare asyncio chain doing the same no-op work.

A pipeline of one extractor, STEPS no-op transforms and one loader moves BATCHES tiny batches,
with the run store on (SQLite). The anchor is the same chain written by hand: STEPS+2 coroutines
joined by bounded asyncio queues. Overhead per step = (ours - anchor) / (STEPS + 2) for one batch
(task set-up: planning, assignment over the bus, tool construction, store rows), and
(ours - anchor) / ((STEPS + 2) * BATCHES) per batch passing a step. Goal: <= 100 us per step.

Per commit: what the audit trail adds to a loader's commit. ``RunStore.checkpoint`` (the
checkpoint row plus its hash-chained audit record, one transaction) against the same checkpoint
row written alone, as the store did before the audit trail (``--commits``, in the same run).

    python benchmarks/overhead.py [--steps 50] [--batches 2000] [--commits 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import agent_etl  # noqa: F401  (first, as in the CLI: it sets pyarrow's allocator up before pyarrow loads)

import pyarrow as pa

from agent_etl import AgentCoordinator, Pipeline
from agent_etl.tools.base import BatchTransform, Extractor, Loader, ToolConfig
from agent_etl.tools.registry import Registry

BATCH = pa.record_batch({"x": pa.array([1, 2, 3])})


class Ticks(Extractor):
    """Yields the same tiny batch n times."""

    class Config(ToolConfig):
        n: int

    async def batches(self):
        for _ in range(self.config.n):
            yield BATCH


class Noop(BatchTransform):
    """Passes batches through."""

    def apply(self, batch):
        return batch


class Drop(Loader):
    """Counts and forgets."""

    async def load(self, batches):
        rows = 0
        async for b in batches:
            rows += b.num_rows
        await self.ctx.commit(rows)
        return rows


def spec(steps: int, batches: int) -> str:
    lines = ["version: 1", "name: overhead", "extract:", f"  src: {{tool: ticks, n: {batches}}}", "transform:"]
    prev = "src"
    for i in range(steps):
        lines.append(f"  - {{name: s{i}, input: {prev}, tool: noop}}")
        prev = f"s{i}"
    lines += ["load:", f"  out: {{input: {prev}, tool: drop}}"]
    return "\n".join(lines)


async def ours(coordinator: AgentCoordinator, pipeline: Pipeline) -> float:
    t = time.perf_counter()
    result = await coordinator.run(pipeline)
    elapsed = time.perf_counter() - t
    assert result.ok, result
    return elapsed


async def bare(steps: int, batches: int) -> float:
    t = time.perf_counter()
    queues = [asyncio.Queue(4) for _ in range(steps + 1)]
    end = object()

    async def source() -> None:
        for _ in range(batches):
            await queues[0].put(BATCH)
        await queues[0].put(end)

    async def step(i: int) -> None:
        while (b := await queues[i].get()) is not end:
            await queues[i + 1].put(b)
        await queues[i + 1].put(end)

    async def sink() -> int:
        rows = 0
        while (b := await queues[-1].get()) is not end:
            rows += b.num_rows
        return rows

    await asyncio.gather(source(), *(step(i) for i in range(steps)), sink())
    return time.perf_counter() - t


def commits(n: int, repeat: int) -> None:
    """Checkpoint + audit record (ours) against the checkpoint row alone (anchor), n commits each."""
    from agent_etl.store.runs import RunStore, _insert_many
    from agent_etl.store.schema import checkpoints

    home = Path(tempfile.mkdtemp())
    store = RunStore.at(home)
    position = {"src": {"rows": 0, "offset": 0}}

    def alone(i: int) -> None:
        with store.engine.begin() as conn:
            _insert_many(conn, checkpoints, [{"run_id": "anchor", "pipeline": "p", "task": "out",
                                              "position": position, "rows": 100, "created_at": time.time()}])

    def audited(i: int) -> None:
        store.checkpoint("ours", "p", "out", position, 100)

    ours_all, bare_all = [], []
    for _ in range(repeat):
        for f, out in ((alone, bare_all), (audited, ours_all)):
            t = time.perf_counter()
            for i in range(n):
                f(i)
            out.append((time.perf_counter() - t) / n)
    assert not store.verify("ours")[0].problem
    store.close()
    for stat, f in (("median", statistics.median), ("best", min)):
        a, b = f(ours_all), f(bare_all)
        print(f"{'per commit (' + str(n) + ' commits)':<28} {stat:<6} ours {a * 1e6:8.1f} us   checkpoint alone "
              f"{b * 1e6:7.1f} us   ratio {a / b:5.2f}x   audit record {(a - b) * 1e6:6.1f} us per commit")


async def main(steps: int, batches: int, repeat: int, store: bool = True) -> None:
    registry = Registry()
    registry.register("extractor", "ticks", Ticks)
    registry.register("transform", "noop", Noop)
    registry.register("loader", "drop", Drop)
    home = Path(tempfile.mkdtemp()) / ".agent-etl"
    tasks = steps + 2
    async with AgentCoordinator(registry=registry, home=home, **({} if store else {"store": False})) as c:
        for label, n in (("task set-up (1 batch)", 1), (f"per batch ({batches} batches)", batches)):
            p = Pipeline.from_text(spec(steps, n), registry=registry)
            await ours(c, p)  # warm up
            a_all = [await ours(c, p) for _ in range(repeat)]
            b_all = [await bare(steps, n) for _ in range(repeat)]
            units = tasks * n
            for stat, f in (("median", statistics.median), ("best", min)):
                a, b = f(a_all), f(b_all)
                print(f"{label:<28} {stat:<6} ours {a * 1e3:8.1f} ms   bare asyncio {b * 1e3:7.1f} ms   "
                      f"ratio {a / b:5.1f}x   overhead {(a - b) / units * 1e6:6.1f} us per step"
                      + ("" if n > 1 else f" ({tasks} tasks, run store {'on' if store else 'off'})"))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batches", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--no-store", action="store_true", help="run without the run store, to see its share")
    ap.add_argument("--commits", type=int, default=5000, help="commits for the per-commit audit cost (0: skip)")
    args = ap.parse_args()
    asyncio.run(main(args.steps, args.batches, args.repeat, store=not args.no_store))
    if args.commits:
        commits(args.commits, max(3, args.repeat // 3))
