"""Peak RSS of reading Parquet, alone and in a Parquet -> PostgreSQL load, at 1M and 10M rows
(issue 18: under 400 MB at any size, flat as rows grow), with rows/s.

Each measurement runs in a fresh process (started through ``sh``, which forks, so the peak does
not start from this process's size); its peak RSS is the kernel's (``wait4`` rusage).

- ``anchor``: pyarrow's own ``ParquetFile(path).iter_batches(100_000)``, defaults (no agent-etl code
  but ``import agent_etl``, which sets the allocator up as the CLI does);
- ``reader``: our Parquet extractor's read (``files._parquet_file`` + ``_row_batches``), batches dropped;
- ``load``: ``agent-etl run`` of a Parquet -> PostgreSQL pipeline, ``mode: append`` into an empty table.

The 10M-row file is the 1M-row export of ``../shared/bench/pg_1m_rows.sql`` (made by
``parquet_to_pg.py``'s ``prepare``) written 10 times, row group by row group, under
``benchmarks/.data`` or ``$AGENT_ETL_BENCH_DATA``; nothing is downloaded.

    python benchmarks/parquet_memory.py [--rows 1000000 10000000] [--repeat 3] [--methods anchor reader load]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import agent_etl  # noqa: F401  (first, as in the CLI: it sets pyarrow's allocator up before pyarrow loads)

import pyarrow.parquet as pq

DATA = Path(os.environ.get("AGENT_ETL_BENCH_DATA", Path(__file__).parent / ".data"))
URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA = "bench_parquet_memory"
CLI = str(Path(sys.executable).parent / "agent-etl")
BATCH = 100_000


def parquet(rows: int) -> Path:
    """The 1M-row file repeated up to ``rows`` rows (made once)."""
    base = DATA / "pg_1m_rows.parquet"
    if not base.exists():
        sys.path.insert(0, str(Path(__file__).parent))
        from parquet_to_pg import prepare

        base = prepare()
    n = pq.ParquetFile(base).metadata.num_rows
    if rows == n:
        return base
    path = DATA / f"pg_rows_{rows}.parquet"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        src = pq.ParquetFile(base)
        with pq.ParquetWriter(tmp, src.schema_arrow) as w:
            for _ in range(rows // n):
                for i in range(src.num_row_groups):
                    w.write_table(src.read_row_group(i))
        tmp.rename(path)
    return path


# -- the methods, each in its own process ---------------------------------------------------------

def run_anchor(path: Path) -> int:
    rows = 0
    for b in pq.ParquetFile(path).iter_batches(batch_size=BATCH):
        rows += b.num_rows
    return rows


def run_reader(path: Path) -> int:
    from agent_etl.tools.extractors.files import _parquet_file, _row_batches

    rows = 0
    with _parquet_file(path) as pf:
        for b in _row_batches(pf, 0, pf.metadata.num_row_groups, BATCH, None):
            rows += b.num_rows
    return rows


METHODS = {"anchor": run_anchor, "reader": run_reader}


def child(method: str, path: str) -> None:
    import agent_etl.tools.extractors.files  # noqa: F401  (imports before the clock)

    t = time.perf_counter()
    rows = METHODS[method](Path(path))
    print(rows, time.perf_counter() - t)


def spec(path: Path, table: str) -> str:
    return (f'version: 1\nname: parquet_memory\nconnections:\n  pg: {{url: "{URL}"}}\n'
            f'extract:\n  src: {{tool: parquet, path: "{path}"}}\n'
            f'load:\n  out: {{input: src, tool: postgres, connection: pg, table: {table}}}\n')


def fresh(method: str, path: Path, rows: int) -> tuple[float, float]:
    """(rows/s, peak RSS MB) of one run in a new process."""
    if method == "load":
        import psycopg

        table = f"{SCHEMA}.t"
        with psycopg.connect(URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            conn.execute(f"CREATE SCHEMA {SCHEMA}")
            conn.execute("CHECKPOINT")
        work = DATA / "parquet_memory"
        work.mkdir(parents=True, exist_ok=True)
        (work / "p.yaml").write_text(spec(path, table))
        argv = [CLI, "run", "p.yaml", "--quiet"]
        env = {**os.environ, "AGENT_ETL_HOME": str(work / ".agent-etl")}
    else:
        work, env = None, os.environ
        argv = [sys.executable, __file__, "--child", method, str(path)]
    out_file = DATA / f"parquet_memory.{os.getpid()}.out"
    t = time.perf_counter()
    with out_file.open("w") as out:
        proc = subprocess.Popen(["sh", "-c", '"$@"; exit $?', "sh", *argv], cwd=work, env=env, stdout=out)
        _, status, usage = os.wait4(proc.pid, 0)
    secs = time.perf_counter() - t
    text = out_file.read_text()
    out_file.unlink()
    assert os.waitstatus_to_exitcode(status) == 0, f"{method} failed"
    if method == "load":
        with psycopg.connect(URL, autocommit=True) as conn:
            got = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            conn.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
    else:
        got, secs = int(text.split()[0]), float(text.split()[1])
    assert got == rows, f"{method}: {got} rows, expected {rows}"
    return rows / secs, usage.ru_maxrss / 1024


def main(sizes: list[int], repeat: int, methods: list[str]) -> None:
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for rows in sizes:
        path = parquet(rows)
        for method in methods:
            results[method, rows] = [fresh(method, path, rows) for _ in range(repeat)]
    print(f"\nParquet read and Parquet -> PostgreSQL, {repeat} fresh processes each; load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'method':<8} {'rows':>11} {'peak RSS MB (min-max)':>22} {'rows/s median (min-max)':>32}")
    for (method, rows), runs in results.items():
        mb = [r[1] for r in runs]
        rate = [r[0] for r in runs]
        print(f"{method:<8} {rows:>11,} {f'{min(mb):.0f}-{max(mb):.0f}':>22} "
              f"{f'{statistics.median(rate):,.0f} ({min(rate):,.0f}-{max(rate):,.0f})':>32}")
    for method in methods:
        if (method, sizes[0]) in results and (method, sizes[-1]) in results and len(sizes) > 1:
            small = max(r[1] for r in results[method, sizes[0]])
            big = max(r[1] for r in results[method, sizes[-1]])
            print(f"{method}: peak at {sizes[-1]:,} rows / at {sizes[0]:,} rows = {big / small:.2f}x"
                  + ("   (goal: < 400 MB, flat)" if method == "load" else ""))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        sys.exit(0)
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--methods", nargs="+", default=["anchor", "reader", "load"])
    args = ap.parse_args()
    main(args.rows, args.repeat, args.methods)
