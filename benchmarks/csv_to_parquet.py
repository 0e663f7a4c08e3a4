"""1M-row CSV -> Parquet through a pipeline, against pyarrow.csv.read_csv -> pyarrow.parquet.write_table
on the same file with the same compression, in the same run (goal: <= 1.3x).

    python benchmarks/csv_to_parquet.py [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import agent_etl  # noqa: F401  (first, as in the CLI: it sets pyarrow's allocator up before pyarrow loads)

import pyarrow.csv as pv
import pyarrow.parquet as pq
from data import csv_file, csv_to_parquet_spec

from agent_etl import AgentCoordinator, Pipeline



def anchor(src: Path, dst: Path, compression: str) -> float:
    t = time.perf_counter()
    pq.write_table(pv.read_csv(src), dst, compression=compression)
    return time.perf_counter() - t


async def ours(src: Path, dst: Path, home: Path) -> float:
    t = time.perf_counter()
    result = await AgentCoordinator(home=home).run(Pipeline.from_text(csv_to_parquet_spec(src, str(dst))))
    elapsed = time.perf_counter() - t
    assert result.ok, result
    return elapsed


def main(rows: int, repeat: int) -> None:
    src = csv_file(rows)
    work = Path(tempfile.mkdtemp())
    asyncio.run(ours(src, work / "warm.parquet", work / ".agent-etl"))
    compression = pq.ParquetFile(work / "warm.parquet").metadata.row_group(0).column(0).compression.lower()
    a, b = [], []
    for i in range(repeat):
        b.append(anchor(src, work / f"anchor{i}.parquet", compression))
        a.append(asyncio.run(ours(src, work / f"ours{i}.parquet", work / ".agent-etl")))
    a_med, b_med = statistics.median(a), statistics.median(b)
    assert pq.read_metadata(work / "ours0.parquet").num_rows == rows
    print(f"{rows:,} rows CSV -> Parquet ({compression}): pipeline {a_med:.2f} s   "
          f"pyarrow read_csv+write_table {b_med:.2f} s   ratio {a_med / b_med:.2f}x   goal <= 1.3x")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    main(args.rows, args.repeat)
