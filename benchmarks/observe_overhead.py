"""What the observability hooks of issue 17 cost a run: the events kept in the run store, the
OpenTelemetry spans (a no-op provider, as when the otel extra is installed but nothing exports),
the monitor's metrics and the log context, per task of a 52-task chain (1 batch) and per batch-step.

The anchor is the same runtime in the same process with those hooks short-circuited (events not
recorded, no tracer); runs alternate between the two, so load drifts hit both.

    python benchmarks/observe_overhead.py [--steps 50] [--batches 500] [--repeat 15]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import overhead  # noqa: E402  (its tools and spec: the same chain)

from agent_etl import AgentCoordinator, Pipeline  # noqa: E402
from agent_etl.agents import coordinator as coordinator_module  # noqa: E402
from agent_etl.observe import tracing  # noqa: E402
from agent_etl.tools.registry import Registry  # noqa: E402


def hooks(on: bool, saved: dict) -> None:
    if on:
        tracing._tracer = saved["tracer"]
        coordinator_module.AgentCoordinator._record_event = saved["record"]
    else:
        tracing._tracer = False
        coordinator_module.AgentCoordinator._record_event = lambda self, ev: None


async def main(steps: int, batches: int, repeat: int) -> None:
    registry = Registry()
    registry.register("extractor", "ticks", overhead.Ticks)
    registry.register("transform", "noop", overhead.Noop)
    registry.register("loader", "drop", overhead.Drop)
    tracing.tracer()
    saved = {"tracer": tracing._tracer, "record": coordinator_module.AgentCoordinator._record_event}
    home = Path(tempfile.mkdtemp()) / ".agent-etl"
    tasks = steps + 2
    async with AgentCoordinator(registry=registry, home=home) as c:
        for label, n in (("task set-up (1 batch)", 1), (f"per batch ({batches} batches)", batches)):
            p = Pipeline.from_text(overhead.spec(steps, n), registry=registry)
            times: dict[bool, list[float]] = {True: [], False: []}
            for on in (True, False):
                hooks(on, saved)
                await overhead.ours(c, p)  # warm up
            for _ in range(repeat):
                for on in (True, False):
                    hooks(on, saved)
                    t = time.perf_counter()
                    await overhead.ours(c, p)
                    times[on].append(time.perf_counter() - t)
            hooks(True, saved)
            a, b = statistics.median(times[True]), statistics.median(times[False])
            units = tasks * n
            print(f"{label:<26} median with hooks {a * 1e3:8.1f} ms   without {b * 1e3:8.1f} ms   ratio {a / b:5.2f}x"
                  f"   cost {(a - b) / units * 1e6:6.1f} us per {'task' if n == 1 else 'batch-step'}")
        stored = c.store.events.read(c.store.list_runs(1)[0]["run_id"])
        print(f"events kept per run of {tasks} tasks and {batches} batches: {len(stored)}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batches", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    asyncio.run(main(args.steps, args.batches, args.repeat))
