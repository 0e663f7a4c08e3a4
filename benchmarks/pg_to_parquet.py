"""PostgreSQL -> Parquet: our pipeline against raw binary COPY (the anchor) and peers, in one run.

    python benchmarks/pg_to_parquet.py [--rows 1000000 10000000] [--repeat 3] [--methods anchor,ours,...]
                                       [--alternatives] [--compression snappy] [--partitions 2]

The table is ../shared/bench/pg_1m_rows.sql (generated with N rows for other sizes) in schema
``bench_pg_<rows>`` of database ``test``, created once. Every method runs in a fresh process
(median of ``--repeat``), timed from before it connects until its output is written; peak RSS is
the child's, from the kernel. Methods:

  anchor    psycopg 3 ``COPY t TO STDOUT (FORMAT binary)``, chunks discarded
  ours      ``agent-etl`` pipeline postgres -> parquet (AgentCoordinator, the real runtime)
  duckdb    DuckDB 1.4.4 postgres scanner -> Parquet   (venv $BENCH_PEERS/duckdb14)
  dlt       dlt ``sql_table`` backend=pyarrow -> Parquet files  (venv $BENCH_PEERS/dlt)
  pandas    ``pandas.read_sql`` (SQLAlchemy, psycopg 3) -> ``to_parquet``
with --alternatives also (the designs measured for the extractor):
  ours_read our extractor alone, batches discarded (decoding without the Parquet writer)
  adbc      ADBC PostgreSQL driver record batches -> streaming ParquetWriter
  csv       psycopg COPY (FORMAT csv) -> ``pyarrow.csv.open_csv`` streaming -> ParquetWriter
  connectorx connectorx -> Arrow (2 partitions on id) -> ``pq.write_table``

Peer venvs: ``bash benchmarks/peers/setup.sh``. Goals (issue 4): ours <= 1.3x the anchor, faster
than DuckDB's scanner, >= 3x faster than dlt (pyarrow), >= 5x faster than pandas.read_sql; the
10M-row peak RSS at most 2x the 1M-row one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import agent_etl  # noqa: F401  (first, as in the CLI: it sets pyarrow's allocator up before pyarrow loads)
except ImportError:  # the duckdb and dlt venvs run this file too; they inherit the parent's setting
    pass

DSN = "postgresql://postgres@127.0.0.1:5432/test"
SQL = Path(__file__).resolve().parents[2] / "shared" / "bench" / "pg_1m_rows.sql"
PEERS = Path(os.environ.get("BENCH_PEERS", Path(__file__).resolve().parent / ".data" / "peers"))
MAIN = ["anchor", "ours", "duckdb", "dlt", "pandas"]
ALTERNATIVES = ["ours_read", "adbc", "csv", "connectorx"]
PARTITIONS = int(os.environ.get("BENCH_PG_PARTITIONS", "1"))  # ours and ours_read: block partitions
PYTHON = {"duckdb": PEERS / "duckdb14" / "bin" / "python", "dlt": PEERS / "dlt" / "bin" / "python"}


# -- the table ---------------------------------------------------------------------------------------

def ensure_table(rows: int) -> str:
    import psycopg

    schema = f"bench_pg_{rows}"
    with psycopg.connect(DSN, autocommit=True) as conn:
        have = conn.execute("SELECT c.reltuples FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE n.nspname = %s AND c.relname = 't'", (schema,)).fetchone()
        if have is None or abs(have[0] - rows) > rows / 100:  # reltuples is ANALYZE's estimate
            print(f"creating {schema}.t ({rows:,} rows) ...", flush=True)
            text = SQL.read_text().replace("generate_series(1, 1000000)", f"generate_series(1, {rows})")
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            conn.execute(f'SET search_path TO "{schema}"')
            for statement in text.split(";\n"):  # one by one: VACUUM cannot run in a multi-statement block
                if statement.strip() and not all(line.startswith("--") for line in statement.strip().splitlines()):
                    conn.execute(statement)
        conn.execute(f'SELECT count(*) FROM "{schema}".t')  # warm the cache
    return schema


# -- the methods (each runs in a child process; imports happen before the clock starts) ---------------

def run_anchor(schema: str, out: Path, compression: str) -> int:
    import psycopg

    t = time.perf_counter()
    with psycopg.connect(DSN) as conn, conn.cursor().copy(f"COPY {schema}.t TO STDOUT (FORMAT binary)") as copy:
        for _ in copy:
            pass
    return t


def run_ours(schema: str, out: Path, compression: str) -> float:
    import asyncio

    import psycopg  # noqa: F401  (the driver is imported before the clock, as in the anchor)
    import pandas  # noqa: F401  (pyarrow imports it at its first pa.array: a library import, ~0.5 s)
    import pyarrow.compute  # noqa: F401  (imported by the runtime anyway; not part of the read)

    from data import home, import_runtime  # our own imports, before the clock like the driver's

    from agent_etl import AgentCoordinator, Pipeline

    import_runtime("agent_etl.tools.extractors.postgres", "agent_etl.tools.loaders.files")

    spec = (f"version: 1\nname: pg_to_parquet\nconnections:\n  pg: {{url: \"{DSN}\"}}\n"
            f"extract:\n  src: {{tool: postgres, connection: pg, table: {schema}.t, partitions: {PARTITIONS}}}\n"
            f"load:\n  out: {{input: src, tool: parquet, path: \"{out}\", compression: {compression}}}\n")
    pipeline = Pipeline.from_text(spec)
    coordinator = AgentCoordinator(home=home())
    t = time.perf_counter()
    result = asyncio.run(coordinator.run(pipeline))
    assert result.ok, result
    return t


def run_ours_read(schema: str, out: Path, compression: str) -> float:
    import asyncio

    import psycopg  # noqa: F401
    import pyarrow.compute  # noqa: F401

    from agent_etl.testing import build, tool_context

    async def read() -> None:
        ctx = tool_context(out.parent, connections={"pg": {"url": DSN}})
        tool = build("extractor", "postgres", {"connection": "pg", "table": f"{schema}.t", "partitions": PARTITIONS},
                     ctx)
        async for _ in tool.batches():
            pass
        await ctx.resources.aclose()

    t = time.perf_counter()
    asyncio.run(read())
    return t


def run_duckdb(schema: str, out: Path, compression: str) -> float:
    import duckdb

    ext = next(Path(duckdb.__file__).parent.parent.glob("duckdb_ext/extensions/*/*/postgres_scanner.duckdb_extension"))
    con = duckdb.connect()
    con.execute(f"INSTALL '{ext}'")
    con.execute("LOAD postgres")
    t = time.perf_counter()
    con.execute("ATTACH 'dbname=test host=127.0.0.1 port=5432 user=postgres' AS pg (TYPE postgres, READ_ONLY)")
    con.execute(f"COPY (SELECT * FROM pg.{schema}.t) TO '{out}' (FORMAT parquet, COMPRESSION {compression})")
    return t


def run_dlt(schema: str, out: Path, compression: str) -> float:
    os.environ["DLT_DATA_DIR"] = str(out.parent / "dlt_data")
    os.environ["NORMALIZE__PARQUET_NORMALIZER__COMPRESSION"] = compression
    import dlt
    from dlt.sources.sql_database import sql_table

    t = time.perf_counter()
    source = sql_table(credentials="postgresql+psycopg2://postgres@127.0.0.1:5432/test", table="t", schema=schema,
                       backend="pyarrow")
    pipeline = dlt.pipeline(pipeline_name="bench", pipelines_dir=str(out.parent / "dlt_pipelines"),
                            destination=dlt.destinations.filesystem(bucket_url=out.parent.as_uri() + "/dlt_out"),
                            dataset_name="bench")
    info = pipeline.run(source, loader_file_format="parquet")
    info.raise_on_failed_jobs()
    return t


def run_pandas(schema: str, out: Path, compression: str) -> float:
    import pandas as pd
    import sqlalchemy

    t = time.perf_counter()
    engine = sqlalchemy.create_engine(DSN.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        df = pd.read_sql(f"SELECT * FROM {schema}.t", conn)
    df.to_parquet(out, compression=compression)
    return t


def run_adbc(schema: str, out: Path, compression: str) -> float:
    import adbc_driver_postgresql.dbapi as adbc
    import pyarrow.parquet as pq

    t = time.perf_counter()
    with adbc.connect(DSN) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {schema}.t")
        reader = cur.fetch_record_batch()
        with pq.ParquetWriter(out, reader.schema, compression=compression) as w:
            for batch in reader:
                w.write_batch(batch)
    return t


def run_csv(schema: str, out: Path, compression: str) -> float:
    import io

    import psycopg
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    types = {"id": pa.int32(), "big": pa.int64(), "txt": pa.string(), "amount": pa.decimal128(12, 2),
             "score": pa.float64(), "flag": pa.bool_(), "ts": pa.timestamp("us"), "d": pa.date32(),
             "category": pa.string(), "maybe": pa.int32()}

    class CopyFile(io.RawIOBase):  # COPY chunks as a file for pyarrow's streaming CSV reader
        def __init__(self, copy):
            self.chunks, self.rest = iter(copy), b""

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:
            while len(self.rest) < len(b):
                parts = [self.rest]
                size = len(self.rest)
                for chunk in self.chunks:
                    parts.append(chunk)
                    size += len(chunk)
                    if size >= len(b):
                        break
                else:
                    self.rest = b"".join(parts)
                    break
                self.rest = b"".join(parts)
            n = min(len(b), len(self.rest))
            b[:n], self.rest = self.rest[:n], self.rest[n:]
            return n

    t = time.perf_counter()
    with psycopg.connect(DSN) as conn, conn.cursor().copy(f"COPY {schema}.t TO STDOUT (FORMAT csv)") as copy:
        reader = pacsv.open_csv(io.BufferedReader(CopyFile(copy), 1 << 20),
                                read_options=pacsv.ReadOptions(column_names=list(types), block_size=8 << 20),
                                convert_options=pacsv.ConvertOptions(column_types=types, true_values=["t"],
                                                                     false_values=["f"]))
        with pq.ParquetWriter(out, reader.schema, compression=compression) as w:
            for batch in reader:
                w.write_batch(batch)
    return t


def run_connectorx(schema: str, out: Path, compression: str) -> float:
    import connectorx as cx
    import pyarrow.parquet as pq

    t = time.perf_counter()
    table = cx.read_sql(DSN, f"SELECT * FROM {schema}.t", return_type="arrow", partition_on="id", partition_num=2)
    pq.write_table(table, out, compression=compression)
    return t


def child(method: str, schema: str, out: Path, compression: str) -> None:
    start = globals()[f"run_{method}"](schema, out, compression)
    print(json.dumps({"seconds": time.perf_counter() - start}))


# -- the parent --------------------------------------------------------------------------------------

def measure(method: str, schema: str, compression: str) -> tuple[float, float] | str:
    python = PYTHON.get(method, Path(sys.executable))
    if not python.exists():
        return f"skipped: {python} missing (bash benchmarks/peers/setup.sh)"
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "out.parquet"
        proc = subprocess.Popen([str(python), __file__, "--child", method, "--schema", schema, "--out", str(out),
                                 "--compression", compression], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=work)
        _, status, usage = os.wait4(proc.pid, 0)
        stdout, stderr = proc.stdout.read(), proc.stderr.read()
        if os.waitstatus_to_exitcode(status) != 0:
            return "failed: " + (stderr.strip().splitlines() or ["?"])[-1][:200]
        return json.loads(stdout.strip().splitlines()[-1])["seconds"], usage.ru_maxrss / 1024


def main(rows_list: list[int], repeat: int, methods: list[str], compression: str) -> None:
    peaks: dict[int, float] = {}
    for rows in rows_list:
        schema = ensure_table(rows)
        times: dict[str, list[float]] = {m: [] for m in methods}
        rss: dict[str, list[float]] = {m: [] for m in methods}
        notes: dict[str, str] = {}
        for _ in range(repeat):  # interleaved, so that load changes hit every method alike
            for m in methods:
                if m in notes:
                    continue
                got = measure(m, schema, compression)
                if isinstance(got, str):
                    notes[m] = got
                    continue
                times[m].append(got[0])
                rss[m].append(got[1])
        anchor = statistics.median(times["anchor"]) if times.get("anchor") else None
        print(f"\n{rows:,} rows PostgreSQL -> Parquet ({compression}), median of {repeat} fresh processes")
        print(f"{'method':<12} {'s':>7} {'x anchor':>9} {'peak RSS MB':>12}   all runs (s)")
        for m in methods:
            if m in notes:
                print(f"{m:<12} {notes[m]}")
                continue
            med = statistics.median(times[m])
            ratio = f"{med / anchor:.2f}" if anchor else "-"
            print(f"{m:<12} {med:7.2f} {ratio:>9} {max(rss[m]):12.0f}   {' '.join(f'{x:.2f}' for x in times[m])}")
        if times.get("ours"):
            peaks[rows] = max(rss["ours"])
            ours = statistics.median(times["ours"])
            for m, goal in (("anchor", "<= 1.3x the anchor"), ("duckdb", "faster than DuckDB"),
                            ("dlt", ">= 3x faster than dlt"), ("pandas", ">= 5x faster than pandas")):
                if times.get(m):
                    other = statistics.median(times[m])
                    print(f"  ours vs {m:<7} {ours / other:5.2f}x the time ({other / ours:5.2f}x faster)   "
                          f"goal: {goal}")
    if len(peaks) > 1:
        first = min(peaks)
        for rows, mb in sorted(peaks.items()):
            print(f"ours peak RSS at {rows:,} rows: {mb:.0f} MB = {mb / peaks[first]:.2f}x the {first:,}-row peak "
                  "(goal <= 2x)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--methods", default=",".join(MAIN))
    ap.add_argument("--alternatives", action="store_true", help="also measure " + ", ".join(ALTERNATIVES))
    ap.add_argument("--compression", default="snappy", choices=["snappy", "zstd"])
    ap.add_argument("--partitions", type=int, default=1,
                    help="ours and ours_read read the table in this many block ranges (partitions: N)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--schema", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.schema, Path(args.out), args.compression)
    else:
        os.environ["BENCH_PG_PARTITIONS"] = str(args.partitions)  # the children read it
        chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
        main(args.rows, args.repeat, chosen + (ALTERNATIVES if args.alternatives else []), args.compression)
