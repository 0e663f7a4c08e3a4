"""Peak RSS of a CSV -> Parquet pipeline run by the CLI, for growing inputs (goal: < 400 MB at 10M
rows, and flat as rows grow). Each size runs in a fresh `agent-etl run` process; its peak RSS comes
from the kernel (wait4 rusage).

import agent_etl  # noqa: F401  (first, as in the CLI: it sets pyarrow's allocator up before pyarrow loads)

    python benchmarks/peak_rss.py [--rows 1000000 10000000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data import csv_file, csv_to_parquet_spec

CLI = str(Path(sys.executable).parent / "agent-etl")


def peak_mb(rows: int) -> tuple[float, float]:
    work = Path(tempfile.mkdtemp())
    (work / "p.yaml").write_text(csv_to_parquet_spec(csv_file(rows), "out.parquet"))
    t = time.perf_counter()
    proc = subprocess.Popen([CLI, "run", "p.yaml", "--quiet"], cwd=work, stdout=subprocess.DEVNULL,
                            env={**os.environ, "AGENT_ETL_HOME": str(work / ".agent-etl")})
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return usage.ru_maxrss / 1024, time.perf_counter() - t


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    args = ap.parse_args()
    base = None
    for rows in args.rows:
        mb, secs = peak_mb(rows)
        base = base or mb
        print(f"{rows:>12,} rows: peak RSS {mb:6.0f} MB  ({mb / base:4.2f}x the first)  {secs:6.1f} s   goal < 400 MB")
