"""Soak: PIPELINES pipelines running concurrently in one process, each started again as soon as it
ends, for a bounded time, through the public API (one ``AgentCoordinator``). RSS is sampled every
``--every`` seconds; the goal is a flat curve: no growth after warm-up.

Each pipeline reads a CSV, filters it, derives a column with SQL, checks it with a quality gate that
quarantines bad rows, and loads a Parquet file and a SQLite table (replace), with the run store on.
The anchor is the RSS after warm-up (the first ``--warmup`` fraction of the time): printed are the
curve, the growth from the anchor to the end (MB and ratio), and the slope of a least-squares line
through the samples after warm-up (MB per minute).

    python benchmarks/soak.py [--pipelines 50] [--seconds 120] [--rows 5000] [--every 5] [--warmup 0.25]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import agent_etl  # noqa: F401  (first, as in the CLI: it sets pyarrow's allocator up before pyarrow loads)

from agent_etl import AgentCoordinator, Pipeline

SPEC = """\
version: 1
name: soak_{i}
connections:
  wh: {{url: "sqlite:///out/{i}/wh.db"}}
extract:
  orders: {{tool: csv, path: {data}}}
transform:
  - {{name: paid, input: orders, tool: filter, where: "status = 'paid'"}}
  - {{name: priced, input: paid, tool: sql, query: "select id, amount, amount * 1.2 as gross, status from paid"}}
quality:
  - input: priced
    checks: [{{range: {{column: amount, min: 0}}}}, {{not_null: [id]}}]
    on_failure: quarantine
load:
  lake: {{input: priced, tool: parquet, path: out/{i}/orders.parquet}}
  wh: {{input: priced, tool: sqlite, connection: wh, table: orders, mode: replace}}
"""


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def write_data(path: Path, rows: int) -> None:
    statuses = ("paid", "paid", "paid", "refunded", "pending")
    lines = ["id,amount,status"] + [f"{i},{-1 if i % 97 == 5 else (i * 7) % 500}.25,{statuses[i % 5]}"
                                    for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")


async def soak(pipelines: int, seconds: float, rows: int, every: float, warmup: float) -> None:
    root = Path(tempfile.mkdtemp(prefix="agent-etl-soak-"))
    data = root / "orders.csv"
    write_data(data, rows)
    specs = []
    for i in range(pipelines):
        (root / "out" / str(i)).mkdir(parents=True)
        (root / f"p{i}.yaml").write_text(SPEC.format(i=i, data=data))
        specs.append(root / f"p{i}.yaml")
    samples: list[tuple[float, float, int]] = []  # (seconds since start, RSS MB, runs finished)
    done = failed = 0
    start = time.monotonic()
    stop_at = start + seconds
    try:
        async with AgentCoordinator(home=root / ".agent-etl") as coordinator:
            async def loop(spec: Path) -> None:
                nonlocal done, failed
                pipeline = Pipeline.from_yaml(spec)
                while time.monotonic() < stop_at:
                    result = await coordinator.run(pipeline)
                    done += 1
                    failed += not result.ok

            async def sample() -> None:
                while True:
                    samples.append((time.monotonic() - start, rss_mb(), done))
                    await asyncio.sleep(every)

            sampler = asyncio.create_task(sample())
            await asyncio.gather(*(loop(s) for s in specs))
            sampler.cancel()
            samples.append((time.monotonic() - start, rss_mb(), done))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    elapsed = time.monotonic() - start
    print(f"{pipelines} pipelines, {rows:,} rows each, {elapsed:.0f} s: {done} runs ({done / elapsed:.1f} runs/s), "
          f"{failed} failed")
    print(f"{'t (s)':>7} {'RSS (MB)':>9} {'runs':>6}")
    for t, mb, n in samples:
        print(f"{t:7.1f} {mb:9.1f} {n:6d}")
    after = [(t, mb) for t, mb, _ in samples if t >= warmup * seconds]
    if len(after) >= 2:
        anchor, end = after[0][1], after[-1][1]
        slope = statistics.linear_regression([t for t, _ in after], [mb for _, mb in after]).slope * 60
        print(f"after warm-up ({warmup:.0%} of the time): RSS {anchor:.1f} MB -> {end:.1f} MB, growth "
              f"{end - anchor:+.1f} MB (ratio {end / anchor:.3f}), slope {slope:+.2f} MB/min; "
              f"peak {max(mb for _, mb in after):.1f} MB; at start {samples[0][1]:.1f} MB")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--pipelines", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--every", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument("--warmup", type=float, default=0.25, help="fraction of the time counted as warm-up")
    args = ap.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    asyncio.run(soak(args.pipelines, args.seconds, args.rows, args.every, args.warmup))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
