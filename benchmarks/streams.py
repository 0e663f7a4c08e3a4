"""Streams in one run, each method against its raw-client anchor (connector-anchors.md, "Streams"):

- redis_read:  a Redis stream of N JSON records -> Parquet. Ours: `redis_stream` (consumer group,
  acked after commit) -> `parquet`. Anchor: redis-py XREADGROUP count=1000 -> orjson -> from_pylist
  -> ParquetWriter, one XACK per batch (~126k/s). Goal >= 120k records/s.
- redis_write: Parquet -> a Redis stream. Ours: `parquet` -> `redis_stream` (pipelined XADD).
  Anchor: redis-py sync pipeline, 1,000 XADD per execute, orjson payloads (~90k/s). Goal >= 85k/s.
- nats_publish: Parquet -> JetStream. Ours: `parquet` -> `nats` (batched publish, async publish acks,
  Nats-Msg-Id per row). Anchor: nats-py `js.publish_async`, 500 in flight (~41k/s). Goal >= 40k/s.
- nats_read: a JetStream stream of N records -> Parquet. Ours: `nats` (durable pull consumer, AckAll
  after commit) -> `parquet`. Anchor: nats-py `pull_subscribe` + `fetch(1000)`, ack of the last
  message (~21.5k/s). Goal >= 100k records/s.

Each method runs in a fresh process (its peak RSS: VmHWM, read by the process at its end); ours through the agent
runtime (AgentCoordinator.run of a pipeline file), timed around the run. Goal: peak RSS <= 400 MB.
The servers share the machine's cores: compare the ratios of one run.

    python benchmarks/streams.py [--records 1000000] [--cases redis_read,redis_write,nats_publish,nats_read]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REDIS = "redis://127.0.0.1:6379/0"
NATS = "nats://127.0.0.1:4222"
GOALS = {"redis_read": 120_000, "redis_write": 85_000, "nats_publish": 40_000, "nats_read": 100_000}


def record(i: int) -> dict:
    return {"id": i, "name": f"user{i}", "score": i * 0.25, "active": i % 3 == 0, "city": f"city{i % 500}"}


def parquet_source(path: Path, n: int) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    ids = pa.array(range(n), pa.int64())
    text = pc.cast(ids, pa.string())
    pq.write_table(pa.table({"id": ids, "name": pc.binary_join_element_wise("user", text, ""),
                             "score": pc.multiply(pc.cast(ids, pa.float64()), 0.25),
                             "active": pc.equal(pc.remainder(ids, 3), 0) if hasattr(pc, "remainder")
                             else pa.array([i % 3 == 0 for i in range(n)]),
                             "city": pc.binary_join_element_wise("city", pc.cast(pc.subtract(ids, pc.multiply(
                                 pc.divide(ids, 500), 500)), pa.string()), "")}), path, row_group_size=100_000)


def redis_seed(stream: str, n: int) -> None:
    import orjson
    import redis

    r = redis.Redis.from_url(REDIS)
    r.delete(stream)
    for start in range(0, n, 10_000):
        pipe = r.pipeline(transaction=False)
        for i in range(start, min(n, start + 10_000)):
            pipe.execute_command("XADD", stream, "*", "data", orjson.dumps(record(i)))
        pipe.execute()
    r.close()


async def nats_stream(name: str, seed: int) -> None:
    import nats
    import orjson
    from nats.js.api import StreamConfig

    nc = await nats.connect(NATS, pending_size=64 << 20)
    js = nc.jetstream()
    try:
        await js.delete_stream(name)
    except Exception:  # noqa: BLE001 - not there
        pass
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"]))
    if seed:
        inbox = nc.new_inbox()
        acked = 0
        done = asyncio.Event()

        async def on_ack(msg):
            nonlocal acked
            acked += 1
            if acked >= seed:
                done.set()

        await nc.subscribe(inbox + ".*", cb=on_ack, pending_msgs_limit=-1, pending_bytes_limit=-1)
        for i in range(seed):
            await nc.publish(f"{name}.in", orjson.dumps(record(i)), reply=f"{inbox}.{i}")
            if i % 20_000 == 19_999:
                await nc.flush()
                while acked < i - 10_000:
                    await asyncio.sleep(0.01)
        await nc.flush()
        await asyncio.wait_for(done.wait(), 120)
    await nc.close()


async def nats_drop(name: str) -> int:
    import nats

    nc = await nats.connect(NATS)
    js = nc.jetstream()
    try:
        count = (await js.stream_info(name)).state.messages
        await js.delete_stream(name)
    finally:
        await nc.close()
    return count


# --- the methods, each run in a child process: prints seconds on its last line ----------------------

def ours(case: str, work: Path, stream: str) -> float:
    from agent_etl.agents.coordinator import AgentCoordinator

    if case == "redis_read":
        extract = f'{{tool: redis_stream, url: "{REDIS}", stream: {stream}, group: bench, create_group: true, idle_seconds: 0.2}}'
        load = "{input: src, tool: parquet, path: out.parquet}"
    elif case == "nats_read":
        extract = f'{{tool: nats, url: "{NATS}", stream: {stream}, durable: bench, idle_seconds: 0.2}}'
        load = "{input: src, tool: parquet, path: out.parquet}"
    elif case == "redis_write":
        extract = "{tool: parquet, path: in.parquet}"
        load = f'{{input: src, tool: redis_stream, url: "{REDIS}", stream: {stream}}}'
    else:
        extract = "{tool: parquet, path: in.parquet}"
        load = f'{{input: src, tool: nats, url: "{NATS}", stream: {stream}, subject: {stream}.in}}'
    (work / "p.yaml").write_text(f"version: 1\nname: bench_{case}\nextract:\n  src: {extract}\nload:\n  dst: {load}\n")

    async def main() -> float:
        async with AgentCoordinator(home=work / ".agent-etl") as c:
            t = time.perf_counter()
            result = await c.run(work / "p.yaml")
            took = time.perf_counter() - t
            assert result.exit_code == 0, result
            return took

    return asyncio.run(main())


def anchor_redis_read(work: Path, stream: str) -> float:
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq
    import redis

    r = redis.Redis.from_url(REDIS)
    r.xgroup_create(stream, "anchor", id="0")
    t = time.perf_counter()
    writer = None
    while True:
        reply = r.xreadgroup("anchor", "c", {stream: ">"}, count=1000)
        if not reply:
            break
        entries = reply[0][1]
        batch = pa.RecordBatch.from_pylist([orjson.loads(f[b"data"]) for _, f in entries])
        if writer is None:
            writer = pq.ParquetWriter(work / "anchor.parquet", batch.schema)
        writer.write_batch(batch)
        r.xack(stream, "anchor", *[e[0] for e in entries])
    writer.close()
    return time.perf_counter() - t


def anchor_redis_write(work: Path, stream: str) -> float:
    import orjson
    import pyarrow.parquet as pq
    import redis

    r = redis.Redis.from_url(REDIS)
    t = time.perf_counter()
    for batch in pq.ParquetFile(work / "in.parquet").iter_batches(100_000):
        rows = batch.to_pylist()
        for start in range(0, len(rows), 1000):
            pipe = r.pipeline(transaction=False)
            for row in rows[start:start + 1000]:
                pipe.xadd(stream, {"data": orjson.dumps(row)})
            pipe.execute()
    return time.perf_counter() - t


def anchor_nats_publish(work: Path, stream: str) -> float:
    import nats
    import orjson
    import pyarrow.parquet as pq

    async def main() -> float:
        nc = await nats.connect(NATS, pending_size=64 << 20)
        js = nc.jetstream()
        t = time.perf_counter()
        for batch in pq.ParquetFile(work / "in.parquet").iter_batches(100_000):
            futures = []
            for row in batch.to_pylist():
                futures.append(await js.publish_async(f"{stream}.in", orjson.dumps(row)))
                if len(futures) >= 500:
                    await asyncio.gather(*futures)
                    futures = []
            await asyncio.gather(*futures)
        took = time.perf_counter() - t
        await nc.close()
        return took

    return asyncio.run(main())


def anchor_nats_read(work: Path, stream: str) -> float:
    import nats
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq
    from nats.js.api import AckPolicy, ConsumerConfig

    async def main() -> float:
        nc = await nats.connect(NATS, pending_size=64 << 20)
        js = nc.jetstream()
        total = (await js.stream_info(stream)).state.messages
        sub = await js.pull_subscribe(f"{stream}.>", durable="anchor", stream=stream,
                                      config=ConsumerConfig(ack_policy=AckPolicy.ALL, max_ack_pending=-1))
        t = time.perf_counter()
        writer, got = None, 0
        while got < total:
            msgs = await sub.fetch(1000, timeout=5)
            got += len(msgs)
            batch = pa.RecordBatch.from_pylist([orjson.loads(m.data) for m in msgs])
            if writer is None:
                writer = pq.ParquetWriter(work / "anchor.parquet", batch.schema)
            writer.write_batch(batch)
            await msgs[-1].ack()
        writer.close()
        took = time.perf_counter() - t
        await nc.close()
        return took

    return asyncio.run(main())


ANCHORS = {"redis_read": anchor_redis_read, "redis_write": anchor_redis_write, "nats_publish": anchor_nats_publish,
           "nats_read": anchor_nats_read}


def child(method: str, case: str, work: Path, stream: str) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--case", case, "--work", str(work), "--stream", stream]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, _ = os.wait4(proc.pid, 0)
    stdout, stderr = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{method} {case} failed:\n{stderr[-3000:]}")
    rss, seconds = stdout.strip().splitlines()[-1].split()
    return {"s": float(seconds), "rss": float(rss)}


def run_case(case: str, n: int, work: Path) -> list[tuple[str, dict]]:
    out = []
    for method in ("anchor", "ours"):
        stream = f"bench_{case}_{method}_{uuid.uuid4().hex[:6]}"
        if case.startswith("nats"):
            stream = stream.upper()
        if case == "redis_read":
            redis_seed(stream, n)
        elif case.startswith("nats"):
            asyncio.run(nats_stream(stream, n if case == "nats_read" else 0))
        try:
            got = child(method, case, work, stream)
            # check what was moved
            if case.endswith("read"):
                import pyarrow.parquet as pq

                name = "anchor.parquet" if method == "anchor" else "out.parquet"
                got["rows"] = pq.read_metadata(work / name).num_rows
            elif case == "redis_write":
                import redis

                got["rows"] = redis.Redis.from_url(REDIS).xlen(stream)
        finally:
            if case.startswith("redis"):
                import redis

                redis.Redis.from_url(REDIS).delete(stream)
            else:
                count = asyncio.run(nats_drop(stream))
                if case == "nats_publish":
                    got["rows"] = count
        out.append((method, got))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--cases", default="redis_read,redis_write,nats_publish,nats_read")
    ap.add_argument("--child")
    ap.add_argument("--case")
    ap.add_argument("--work")
    ap.add_argument("--stream")
    a = ap.parse_args()
    if a.child:
        work = Path(a.work)
        took = ours(a.case, work, a.stream) if a.child == "ours" else ANCHORS[a.case](work, a.stream)
        # this process's own peak (VmHWM): the kernel's ru_maxrss keeps the parent's from before exec
        hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
        print(hwm / 1024, took)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        parquet_source(work / "in.parquet", a.records)
        print(f"{a.records:,} records; load average {os.getloadavg()[0]:.2f}")
        print(f"{'case':<13} {'method':<7} {'s':>7} {'records/s':>11} {'rows':>9} {'RSS MB':>7}  ratio / goal")
        for case in a.cases.split(","):
            results = dict(run_case(case, a.records, work))
            for method, r in results.items():
                rate = a.records / r["s"]
                note = ""
                if method == "ours":
                    ratio = r["s"] / results["anchor"]["s"]
                    note = (f"{ratio:.2f}x anchor's time; {'meets' if rate >= GOALS[case] else 'MISSES'} "
                            f">= {GOALS[case]:,}/s; RSS {'ok' if r['rss'] <= 400 else 'OVER'} (<= 400 MB)")
                print(f"{case:<13} {method:<7} {r['s']:>7.2f} {rate:>11,.0f} {r.get('rows', 0):>9,} {r['rss']:>7.0f}  "
                      f"{note}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
