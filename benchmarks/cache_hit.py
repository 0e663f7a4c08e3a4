"""Result cache: time to the first batch of a cached extract (goal < 1 ms for a 100k-row result),
next to the same extract read from its source in the same run (the anchor), and the whole result.

Sources: a 100k-row CSV file and SQLite table (always), and a PostgreSQL query (when it is
reachable). For each: the uncached extract (the tool's ``batches()``), then the cached one through
``agent_etl.cache.cached`` as the ETL agent calls it (key: stat of the source files, hash), from
the disk tier (Arrow IPC, memory-mapped; the memory tier emptied before each round) and from the
memory tier. The page cache is warm: the IPC file was just written, as on a machine that re-runs.

    python benchmarks/cache_hit.py [--rows 100000] [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from agent_etl.cache import ResultCache, cached
from agent_etl.cache import store as cache_store
from agent_etl.testing import build, tool_context

PG = "postgresql://postgres@127.0.0.1:5432/test"


def table(rows: int) -> pa.Table:
    return pa.table({"id": pa.array(range(rows), pa.int64()), "amount": [i * 0.25 for i in range(rows)],
                     "name": [f"name-{i % 977}" for i in range(rows)], "qty": [i % 13 for i in range(rows)],
                     "flag": [i % 2 == 0 for i in range(rows)]})


async def first_and_all(make) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    it = make()
    first = await anext(it)
    t1 = time.perf_counter()
    rows = first.num_rows
    async for b in it:
        rows += b.num_rows
    return t1 - t0, time.perf_counter() - t0, rows


async def measure(name: str, tool: str, options: dict, connection: dict | None, base: Path, rounds: int) -> None:
    ctx = tool_context(base, task="bench", batch_size=100_000,
                       connections={"db": connection} if connection else {})
    cache = ResultCache(base / ".agent-etl")
    cache.clear()

    def source():
        return build("extractor", tool, options, ctx).batches()

    def through_cache():
        return cached(cache, tool=tool, options=options, connection=connection, base_dir=base, ttl=3600,
                      read=source, details={}, meta={"task": "bench"})

    uncached = [await first_and_all(source) for _ in range(rounds)]
    _, _, rows = await first_and_all(through_cache)  # stores it
    disk, memory = [], []
    for _ in range(rounds):
        cache_store._memory.clear()
        disk.append(await first_and_all(through_cache))
        memory.append(await first_and_all(through_cache))
    med = lambda xs, i: statistics.median(x[i] for x in xs) * 1000  # noqa: E731
    p95 = lambda xs, i: sorted(x[i] for x in xs)[int(0.95 * (len(xs) - 1))] * 1000  # noqa: E731
    print(f"\n{name}: {rows:,} rows, median (p95) ms over {rounds} rounds")
    print(f"  {'':<22}{'first batch':>20}{'whole result':>20}{'anchor / ours (first)':>24}")
    a = med(uncached, 0)
    for label, xs in (("uncached (anchor)", uncached), ("cached, disk tier", disk), ("cached, memory tier", memory)):
        print(f"  {label:<22}{med(xs, 0):>11.3f} ({p95(xs, 0):>6.3f}){med(xs, 1):>12.2f} ({p95(xs, 1):>6.2f})"
              f"{a / med(xs, 0):>23.0f}x")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    data = table(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        pacsv.write_csv(data, base / "data.csv")
        await measure("csv file", "csv", {"path": "data.csv"}, None, base, args.rounds)
        con = sqlite3.connect(base / "src.db")
        con.execute("create table t(id integer primary key, amount real, name text, qty integer, flag boolean)")
        con.executemany("insert into t values (?, ?, ?, ?, ?)", zip(*[c.to_pylist() for c in data.columns]))
        con.commit()
        con.close()
        await measure("sqlite table", "sqlite", {"connection": "db", "table": "t"}, {"url": "sqlite:///src.db"},
                      base, args.rounds)
        try:
            import psycopg

            with psycopg.connect(PG, autocommit=True, connect_timeout=3) as conn:
                conn.execute("drop table if exists bench_cache_hit")
                conn.execute("create table bench_cache_hit (id bigint primary key, amount float8, name text, "
                             "qty int, flag bool)")
                with conn.cursor().copy("copy bench_cache_hit from stdin") as cp:
                    for row in zip(*[c.to_pylist() for c in data.columns]):
                        cp.write_row(row)
        except Exception as e:  # noqa: BLE001 - the server is optional here
            print(f"\npostgres skipped: {e}")
            return
        try:
            await measure("postgres query", "postgres", {"connection": "db", "query": "select * from bench_cache_hit"},
                          {"url": PG}, base, args.rounds)
        finally:
            with psycopg.connect(PG, autocommit=True) as conn:
                conn.execute("drop table bench_cache_hit")


if __name__ == "__main__":
    asyncio.run(main())
