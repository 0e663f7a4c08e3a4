"""Experience memory: add throughput and query latency (k=10, with and without a metadata filter)
at 1k, 10k and 100k experiences, for both backends (issue 14 goal: p95 < 10 ms at 100k).

Anchor, in the same run on the same data: the backend's bare search with the query vector already
computed (numpy: one matrix-vector product and argpartition; chroma: ``collection.query`` with
``query_embeddings``). The ratio is what our layer adds (embedding the descriptor, filters, records).
Descriptors are random but reproducible: 8 source/destination kinds, 0-3 transforms, 1-12 columns,
10^2..10^8 rows.

    python benchmarks/memory_query.py [--sizes 1000 10000 100000] [--backends numpy chroma] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

import numpy as np

from agent_etl.memory import Record, open_memory
from agent_etl.memory.descriptor import TaskDescriptor
from agent_etl.memory.embedding import embed

TOOLS = ["csv", "parquet", "postgres", "mysql", "sqlite", "jsonl", "rest", "s3"]
TRANSFORMS = ["filter", "sql", "derive", "dedupe", "cast"]


def descriptor(i: int) -> TaskDescriptor:
    r = random.Random(i)
    return TaskDescriptor(r.choice(["extract", "transform", "load"]), r.choice(TOOLS), (r.choice(TOOLS),),
                          (r.choice(TOOLS),), tuple(r.sample(TRANSFORMS, r.randint(0, 3))),
                          tuple((f"c{j}", r.choice(["int64", "string", "double"])) for j in range(r.randint(1, 12))),
                          rows=10 ** r.randint(2, 8))


def pct(values: list[float], q: float) -> float:
    return sorted(values)[int(q * (len(values) - 1))] * 1000


def bare(memory, kind: str, vector: np.ndarray, matrix: np.ndarray | None) -> None:
    if kind == "numpy":
        scores = matrix @ vector
        np.argpartition(-scores, 9)[:10]
    else:
        memory._collection.query(query_embeddings=vector[None, :], n_results=10, include=["metadatas", "distances"])


def measure(kind: str, n: int, queries: int) -> dict[str, float]:
    memory = open_memory(kind, tempfile.mkdtemp(prefix="memory-bench-"))
    try:
        records = [Record(f"run{i}/t", descriptor(i).to_json(),
                          {"status": "succeeded" if i % 3 else "failed", "rows": i}) for i in range(n)]
        t = time.perf_counter()
        for start in range(0, n, 5000):
            memory.add(records[start:start + 5000])
        add_rate = n / (time.perf_counter() - t)
        docs = [descriptor(10**9 + i).to_json() for i in range(queries)]
        vectors = embed(docs)
        matrix = memory._vectors if kind == "numpy" else None
        ours, ours_filtered, anchor = [], [], []
        for doc, vec in zip(docs, vectors):
            t = time.perf_counter()
            bare(memory, kind, vec, matrix)
            anchor.append(time.perf_counter() - t)
            t = time.perf_counter()
            memory.query(doc, 10)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            memory.query(doc, 10, where={"status": "succeeded"})
            ours_filtered.append(time.perf_counter() - t)
        return {"add/s": add_rate, "p50": pct(ours, .5), "p95": pct(ours, .95), "filtered p50": pct(ours_filtered, .5),
                "filtered p95": pct(ours_filtered, .95), "anchor p50": pct(anchor, .5), "anchor p95": pct(anchor, .95)}
    finally:
        memory.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--backends", nargs="+", default=["numpy", "chroma"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    print(f"{'backend':<8} {'n':>7} {'round':>5} {'add/s':>9} {'p50 ms':>7} {'p95 ms':>7} {'filt p50':>8} "
          f"{'filt p95':>8} {'bare p50':>8} {'bare p95':>8} {'p50 ratio':>9}")
    for n in args.sizes:
        for round_ in range(1, args.rounds + 1):
            for kind in args.backends:  # interleaved: the shared cores' load touches both alike
                m = measure(kind, n, args.queries)
                print(f"{kind:<8} {n:>7} {round_:>5} {m['add/s']:>9,.0f} {m['p50']:>7.2f} {m['p95']:>7.2f} "
                      f"{m['filtered p50']:>8.2f} {m['filtered p95']:>8.2f} {m['anchor p50']:>8.2f} "
                      f"{m['anchor p95']:>8.2f} {m['p50'] / m['anchor p50']:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
