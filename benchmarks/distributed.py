"""Distributed runs over NATS JetStream (issue 15): three figures, each next to its anchor measured
in the same run.

1. A CPU-bound partitioned source (a pure-Python ``python`` transform over Parquet files, one
   extract with ``partitions: <files>``, into one Parquet dataset): over NATS it runs as one copy
   of its branch per group of files; one ``agent-etl worker`` against two; goal >= 1.8x on a
   2-core machine. The in-process run (``--bus memory``) is printed too: there the partitioned
   source is one task, and everything shares one interpreter.
2. Control-plane overhead per branch: many tiny branches run in process against the same through
   NATS and one worker (the coordinator's CLI start is in both).
3. Time from a worker's SIGKILL to its branch taken by another worker (heartbeat 0.5 s and 1 s),
   and to the reassigned load's first event.

    python benchmarks/distributed.py [--files 4] [--rows 200000] [--tiny 20] [--parts 1,2,3]

Needs NATS with JetStream at 127.0.0.1:4222 (AGENT_ETL_BENCH_NATS). AGENT_ETL_CLI names the
``agent-etl`` to run (default: the one next to this Python).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

CLI = os.environ.get("AGENT_ETL_CLI") or str(Path(sys.executable).parent / "agent-etl")
NATS = os.environ.get("AGENT_ETL_BENCH_NATS", "nats://127.0.0.1:4222")

BURN = '''
import math

import pyarrow as pa


def burn(table):
    """CPU in the interpreter (holds the GIL): a few passes over every value."""
    values = table.column("x").to_pylist()
    out = [0.0] * len(values)
    for _ in range(40):
        out = [math.sqrt(v * v + o + 1.0) for v, o in zip(values, out)]
    return table.append_column("y", pa.array(out))


def pause(table):
    import time

    time.sleep(0.1)
    return table
'''


def cpu_pipeline(files: int) -> str:
    return f"""version: 1
name: cpu_bound
defaults: {{concurrency: 8, batch_size: 20000}}
extract:
  p: {{tool: parquet, path: "data/part*.parquet", partitions: {files}}}
transform:
  - {{name: h, input: p, tool: python, function: 'burn:burn'}}
load:
  o: {{input: h, tool: parquet, path: out/cpu/}}
"""


def tiny_pipeline(n: int) -> str:
    lines = ["version: 1", "name: tiny", "defaults: {concurrency: 8}", "extract:"]
    lines += [f"  c{i}: {{tool: csv, path: tiny.csv}}" for i in range(n)]
    lines += ["load:"] + [f"  o{i}: {{input: c{i}, tool: parquet, path: out/t{i}.parquet}}" for i in range(n)]
    return "\n".join(lines) + "\n"


SLOW = """version: 1
name: slow
defaults: {batch_size: 5000, retries: {initial_delay: 0.1, jitter: false}}
extract:
  s: {tool: parquet, path: data/part0.parquet}
transform:
  - {name: w, input: s, tool: python, function: 'burn:pause'}
load:
  o: {input: w, tool: parquet, path: out/slow.parquet}
"""


def env(folder: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_ETL_")}
    return {**base, "AGENT_ETL_HOME": str(folder / "home"), "AGENT_ETL_MEMORY": "off"}


async def workers(url: str, n: int, folder: Path, heartbeat: float = 1.0) -> list[asyncio.subprocess.Process]:
    procs = []
    for _ in range(n):
        p = await asyncio.create_subprocess_exec(CLI, "worker", "--bus", url, "--heartbeat", str(heartbeat),
                                                 env=env(folder), stderr=asyncio.subprocess.PIPE)
        line = (await p.stderr.readline()).decode()
        assert "ready" in line, line
        procs.append(p)
    return procs


async def stop(procs: list[asyncio.subprocess.Process]) -> None:
    for p in procs:
        if p.returncode is None:
            p.terminate()
    for p in procs:
        await p.wait()


async def run(folder: Path, spec: str, bus: str) -> float:
    started = time.perf_counter()
    p = await asyncio.create_subprocess_exec(CLI, "run", spec, "--bus", bus, "-q", cwd=folder, env=env(folder),
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await p.communicate()
    took = time.perf_counter() - started
    if p.returncode != 0:
        raise SystemExit(f"run {spec} on {bus} failed ({p.returncode}): {err.decode()[-2000:]}")
    return took


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def namespace() -> str:
    return f"{NATS}?namespace=bench-{uuid.uuid4().hex[:8]}"


async def destroy(url: str) -> None:
    from agent_etl.bus import open_bus

    await open_bus(url).destroy()


async def cpu_bound(folder: Path, files: int, rows: int, repeat: int) -> None:
    (folder / "cpu.yaml").write_text(cpu_pipeline(files))
    times: dict[str, list[float]] = {"memory": [], "1 worker": [], "2 workers": []}
    cpu: dict[int, list[list[float]]] = {1: [], 2: []}  # CPU seconds of each worker process, per run
    for _ in range(repeat):
        times["memory"].append(await run(folder, "cpu.yaml", "memory"))
        for n in (1, 2):
            url = namespace()
            procs = await workers(url, n, folder)
            try:
                times[f"{n} worker{'s' if n > 1 else ''}"].append(await run(folder, "cpu.yaml", url))
                cpu[n].append([cpu_seconds(p.pid) for p in procs])
            finally:
                await stop(procs)
                await destroy(url)
            dataset = [pq.read_metadata(f).num_rows for f in sorted((folder / "out" / "cpu").glob("*.parquet"))]
            assert len(dataset) == files and sum(dataset) == files * rows, dataset  # one copy's file per partition
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n1. CPU-bound, one source in {files} partitions (median of {repeat}; load {os.getloadavg()[0]:.1f})")
    for k, v in times.items():
        print(f"   {k:<10} {med[k]:6.2f} s  ({', '.join(f'{x:.2f}' for x in v)})")
    print(f"   speed-up 2 workers / 1 worker: {med['1 worker'] / med['2 workers']:.2f}x (goal >= 1.8x); "
          f"in process / 2 workers: {med['memory'] / med['2 workers']:.2f}x")
    # what the machine's load cannot change: the work done, and how evenly the copies spread it
    for n, runs in cpu.items():
        print(f"   CPU seconds of the worker process(es), {n} worker{'s' if n > 1 else ''}: "
              + "; ".join(" + ".join(f"{s:.1f}" for s in r) for r in runs))


async def overhead(folder: Path, n: int, repeat: int) -> None:
    (folder / "tiny.csv").write_text("id,name\n" + "".join(f"{i},n{i}\n" for i in range(10)))
    (folder / "tiny.yaml").write_text(tiny_pipeline(n))
    url = namespace()
    procs = await workers(url, 1, folder)
    mem, remote = [], []
    try:
        for _ in range(repeat):
            mem.append(await run(folder, "tiny.yaml", "memory"))
            remote.append(await run(folder, "tiny.yaml", url))
    finally:
        await stop(procs)
        await destroy(url)
    m, r = statistics.median(mem), statistics.median(remote)
    print(f"\n2. Control plane, {n} tiny branches (median of {repeat}; load {os.getloadavg()[0]:.1f})")
    print(f"   in process {m:6.2f} s, NATS + 1 worker {r:6.2f} s: {r / m:.2f}x; "
          f"{(r - m) / n * 1000:.0f} ms more per branch")


async def kill_to_resume(folder: Path, heartbeat: float, repeat: int) -> None:
    from agent_etl.bus import open_bus
    from agent_etl.events import BranchTaken, TaskStarted

    (folder / "slow.yaml").write_text(SLOW)
    taken_after, started_after = [], []
    for _ in range(repeat):
        url = namespace()
        procs = await workers(url, 2, folder, heartbeat)
        watch = open_bus(url)
        taken: list[tuple[float, BranchTaken]] = []
        started: list[tuple[float, TaskStarted]] = []
        first = asyncio.Event()
        await watch.listen(BranchTaken, lambda ev: (taken.append((time.perf_counter(), ev)), first.set()))
        await watch.listen(TaskStarted, lambda ev: started.append((time.perf_counter(), ev)))
        try:
            job = asyncio.get_running_loop().create_task(run(folder, "slow.yaml", url))
            await first.wait()
            await asyncio.sleep(1.0)
            victim = taken[0][1].agent
            proc = next(p for p in procs if f"-{p.pid}-" in victim)
            killed = time.perf_counter()
            proc.send_signal(signal.SIGKILL)
            await job
            again = next(t for t, ev in taken if ev.attempt == 2)
            load = next(t for t, ev in started if ev.attempt == 2 and ev.task == "o")
            taken_after.append(again - killed)
            started_after.append(load - killed)
        finally:
            await watch.close()
            await stop(procs)
            await destroy(url)
    print(f"\n3. SIGKILL -> branch taken elsewhere, heartbeat {heartbeat:g} s (median of {repeat}; load "
          f"{os.getloadavg()[0]:.1f}): {statistics.median(taken_after):.2f} s, its load started again "
          f"{statistics.median(started_after):.2f} s (goal < 5 s; anchor: {3 * heartbeat:g} s of missed heartbeats)")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--tiny", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--parts", default="1,2,3", help="which figures to measure, e.g. 1 for the CPU-bound one")
    args = ap.parse_args()
    parts = {int(p) for p in args.parts.split(",")}
    with tempfile.TemporaryDirectory(prefix="agent-etl-dist-") as tmp:
        folder = Path(tmp)
        (folder / "data").mkdir()
        (folder / "burn.py").write_text(BURN)
        for i in range(args.files):
            pq.write_table(pa.table({"id": pa.array(range(args.rows), pa.int64()),
                                     "x": pa.array([float(j % 1000) for j in range(args.rows)])}),
                           folder / "data" / f"part{i}.parquet")
        print(f"agent-etl: {CLI}; {os.cpu_count()} CPUs; load {os.getloadavg()}")
        if 1 in parts:
            await cpu_bound(folder, args.files, args.rows, args.repeat)
        if 2 in parts:
            await overhead(folder, args.tiny, args.repeat)
        for hb in (0.5, 1.0) if 3 in parts else ():
            await kill_to_resume(folder, hb, args.repeat)


if __name__ == "__main__":
    asyncio.run(main())
