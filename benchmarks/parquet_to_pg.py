"""Parquet -> PostgreSQL: our pipeline (parquet extractor -> postgres loader, append into an empty
table) against the server's own binary COPY FROM a file (the anchor) and the peers, each in fresh
processes (median of --repeat; peak RSS from wait4), in the same run.

``--mode replace`` replaces a table holding the 1M rows (``replace_strategy`` auto, which swaps,
and insert), ``--mode merge`` merges into an empty table and merges 1M rows (half updates) into a
table holding 1M (the input and hand-written anchor of ``pg_merge.py``: COPY into TEMP + INSERT ...
ON CONFLICT); each against the server's COPY FROM in the same run: into the empty table without a
key (``anchor``) and into the empty table with the PRIMARY KEY (``anchor_pk``). The state each run
starts from is made, and a CHECKPOINT taken, before its clock.

The data is the 1M-row table of ../shared/bench/pg_1m_rows.sql, created once in schema
`bench_load` and exported once to Parquet (benchmarks/.data/pg_1m_rows.parquet) and to a binary
COPY file on the server. Goals: <= 1.3x the anchor, faster than pgpq + psycopg COPY and ADBC
adbc_ingest, >= 20x faster than pandas.to_sql.

    python benchmarks/parquet_to_pg.py [--repeat 3] [--methods anchor ours loader pgpq adbc pandas] [--rss-rows 10000000]
    python benchmarks/parquet_to_pg.py --mode replace|merge [--repeat 3]

Peers need the bench extra (pgpq, adbc-driver-postgresql, psycopg2-binary for pandas.to_sql:
with psycopg 3, pandas sends numeric columns as text and fails).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import agent_etl  # noqa: F401  (first, as in the CLI: it sets pyarrow's allocator up before pyarrow loads)

import pyarrow as pa
import pyarrow.parquet as pq

URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA = "bench_load"
SQL_FILE = Path(__file__).resolve().parents[2] / "shared" / "bench" / "pg_1m_rows.sql"
DATA = Path(__file__).parent / ".data"
BIN = "/tmp/agent_etl_bench_t.bin"  # written and read by the server
HOME: Path | None = None  # the run store's home of the ours method (benchmarks/data.home(), before the clock)


def connect():
    import psycopg

    return psycopg.connect(URL, autocommit=True)


def prepare() -> Path:
    """The 1M-row table, its Parquet export and its binary COPY file (each made once)."""
    DATA.mkdir(exist_ok=True)
    parquet = DATA / "pg_1m_rows.parquet"
    with connect() as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        if conn.execute(f"SELECT to_regclass('{SCHEMA}.t')").fetchone()[0] is None:
            subprocess.run(["psql", URL, "-q", "-v", "ON_ERROR_STOP=1", "-f", str(SQL_FILE)], check=True,
                           env={**os.environ, "PGOPTIONS": f"-c search_path={SCHEMA}"}, stdout=subprocess.DEVNULL)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.t_load (LIKE {SCHEMA}.t)")  # no PRIMARY KEY
        if not Path(BIN).exists():
            conn.execute(f"COPY {SCHEMA}.t TO '{BIN}' (FORMAT binary)")
    if not parquet.exists():
        export(f"SELECT * FROM {SCHEMA}.t ORDER BY id", parquet)
    return parquet


def export(query: str, path: Path) -> None:
    """A query's rows to Parquet, with numeric(12,2) as decimal128(12,2)."""
    import adbc_driver_postgresql.dbapi as adbc

    with adbc.connect(URL) as conn, conn.cursor() as cur:
        cur.execute(query)
        table = cur.fetch_arrow_table()
    cols = [c.cast(pa.decimal128(12, 2)) if f.name == "amount" else
            (c.storage if isinstance(c.type, pa.ExtensionType) else c) for f, c in zip(table.schema, table.columns)]
    pq.write_table(pa.table(cols, names=table.column_names), path)


# -- the methods, each run in its own process ------------------------------------------------------

def run_anchor(parquet: Path, table: str) -> None:
    with connect() as conn:
        conn.execute(f"COPY {table} FROM '{BIN}' (FORMAT binary)")


def spec(parquet: Path, table: str, extra: str = "") -> str:
    """The pipeline, its batch size the default's, set: left open, tuning (agents.tuning) would try
    another one in every run from the runs before it in the kept home (800k-row batches in one run
    tonight, the first batch then 0.6 s later), and the runs would not measure one thing."""
    return (f'version: 1\nname: parquet_to_pg\ndefaults: {{batch_size: 100000}}\nconnections:\n  pg: {{url: "{URL}"}}\n'
            f'extract:\n  src: {{tool: parquet, path: "{parquet}"}}\n'
            f'load:\n  out: {{input: src, tool: postgres, connection: pg, table: {table}{extra}}}\n')


def run_ours(parquet: Path, table: str, extra: str = "") -> None:
    from agent_etl import AgentCoordinator, Pipeline

    result = asyncio.run(AgentCoordinator(home=HOME).run(Pipeline.from_text(spec(parquet, table, extra))))
    assert result.ok, result


def run_loader(parquet: Path, table: str) -> None:
    """The postgres loader alone (agent_etl.testing), fed by ParquetFile.iter_batches: no runtime."""
    from agent_etl.testing import build, tool_context

    async def batches():
        it = pq.ParquetFile(parquet).iter_batches(batch_size=100_000)
        while (batch := await asyncio.to_thread(next, it, None)) is not None:
            yield batch

    async def load() -> None:
        ctx = tool_context(tempfile.mkdtemp(), connections={"pg": {"url": URL}})
        try:
            await build("loader", "postgres", {"connection": "pg", "table": table}, ctx).load(batches())
        finally:
            await ctx.resources.aclose()

    asyncio.run(load())


def run_pgpq(parquet: Path, table: str) -> None:
    import pgpq

    f = pq.ParquetFile(parquet)
    encoder = pgpq.ArrowToPostgresBinaryEncoder(f.schema_arrow)
    with connect() as conn, conn.cursor().copy(f"COPY {table} FROM STDIN (FORMAT binary)") as copy:
        copy.write(encoder.write_header())
        for batch in f.iter_batches(batch_size=100_000):
            copy.write(encoder.write_batch(batch))
        copy.write(encoder.finish())


def run_adbc(parquet: Path, table: str) -> None:
    import adbc_driver_postgresql.dbapi as adbc

    f = pq.ParquetFile(parquet)
    reader = pa.RecordBatchReader.from_batches(f.schema_arrow, f.iter_batches(batch_size=100_000))
    schema, name = table.split(".")
    with adbc.connect(URL) as conn, conn.cursor() as cur:
        cur.adbc_ingest(name, reader, mode="append", db_schema_name=schema)
        conn.commit()


def run_pandas(parquet: Path, table: str) -> None:
    import pandas as pd
    import sqlalchemy

    engine = sqlalchemy.create_engine(URL.replace("postgresql://", "postgresql+psycopg2://"))
    schema, name = table.split(".")
    pd.read_parquet(parquet).to_sql(name, engine, schema=schema, if_exists="append", index=False, chunksize=10_000)
    engine.dispose()


def run_replace(parquet: Path, table: str, strategy: str = "auto") -> None:
    run_ours(parquet, table, f", mode: replace, replace_strategy: {strategy}")


def run_merge(parquet: Path, table: str) -> None:
    run_ours(parquet, table, ", mode: merge, key: [id]")


def run_merge_anchor(parquet: Path, table: str) -> None:
    from pg_merge import run_anchor as hand_written

    hand_written(parquet, table)


METHODS = {"anchor": run_anchor, "ours": run_ours, "loader": run_loader, "pgpq": run_pgpq, "adbc": run_adbc,
           "pandas": run_pandas, "replace": run_replace, "merge": run_merge, "merge_anchor": run_merge_anchor}
LABELS = {"anchor": "server COPY FROM file (FORMAT binary) - anchor", "ours": "agent-etl parquet -> postgres (append)",
          "loader": "postgres loader alone (no runtime)",
          "pgpq": "pgpq encoder + psycopg COPY", "adbc": "ADBC adbc_ingest", "pandas": "pandas.to_sql chunksize 10000"}


def fresh(method: str, parquet: Path, table: str, *extra: str, script: str = __file__,
          empty: bool = True, setup: Callable[[Any], None] | None = None) -> tuple[float, float]:
    """(seconds, peak RSS MB) of one method of ``script`` in a new process; the table is emptied
    first, or ``setup(connection)`` makes the state the run starts from."""
    if empty or setup is not None:
        with connect() as conn:
            if setup is not None:
                setup(conn)
            else:
                conn.execute(f"TRUNCATE {table}")
            # each load writes ~120 MB of WAL: without this, the server's own checkpoints land in
            # whichever runs cross max_wal_size, and the spread between runs doubles
            conn.execute("CHECKPOINT")
    # Through sh, which forks: a process started straight from this one would start its peak RSS
    # count from this process's size (Linux carries it over exec).
    done = subprocess.run(["sh", "-c", '"$@"; exit $?', "sh", sys.executable, script, "--child", method,
                           str(parquet), table, *extra], check=False, stdout=subprocess.PIPE, text=True)
    assert done.returncode == 0, f"{method} failed"
    secs, kb = done.stdout.strip().splitlines()[-1].split()
    return float(secs), float(kb) / 1024


def _preload(method: str) -> None:
    """Imports happen before the clock for every method: a fixed cost per process, not throughput.
    pandas is among them because pyarrow imports it at its first ``pa.array`` (about 0.5 s);
    agent-etl's own start-up is what ``cli_startup.py`` and a trivial ``agent-etl run`` show."""
    import pandas  # noqa: F401
    import psycopg  # noqa: F401

    if method in ("ours", "loader", "replace", "merge"):  # every method that runs agent-etl
        from data import home, import_runtime

        import_runtime("agent_etl.tools.extractors.files", "agent_etl.tools.loaders.postgres")
        global HOME
        HOME = home()


def child(method: str, parquet: str, table: str, *extra: str, methods: dict | None = None) -> None:
    import resource

    _preload(method)
    t = time.perf_counter()
    (methods or METHODS)[method](Path(parquet), table, *extra)
    print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def bigger(parquet: Path, rows: int) -> Path:
    """The 1M-row file repeated (row group by row group) up to ``rows`` rows."""
    path = DATA / f"pg_rows_{rows}.parquet"
    if not path.exists():
        base = pq.ParquetFile(parquet)
        with pq.ParquetWriter(path, base.schema_arrow) as w:
            for _ in range(rows // base.metadata.num_rows):
                for i in range(base.num_row_groups):
                    w.write_table(base.read_row_group(i))
    return path


def main(repeat: int, methods: list[str], rss_rows: int | None) -> None:
    parquet = prepare()
    table = f"{SCHEMA}.t_load"
    rows = pq.ParquetFile(parquet).metadata.num_rows
    results: dict[str, tuple[float, float]] = {}
    for method in methods:
        runs = [fresh(method, parquet, table) for _ in range(repeat)]
        with connect() as conn:
            got = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        assert got == rows, f"{method}: {got} rows loaded, expected {rows}"
        results[method] = (statistics.median(r[0] for r in runs), max(r[1] for r in runs))
    anchor = results.get("anchor", (None,))[0]
    print(f"\n{rows:,} rows Parquet -> PostgreSQL (median of {repeat} fresh processes)")
    print(f"{'method':<50} {'s':>7} {'x anchor':>9} {'peak RSS MB':>12}")
    for method, (secs, mb) in results.items():
        ratio = f"{secs / anchor:.2f}" if anchor else "-"
        print(f"{LABELS[method]:<50} {secs:7.2f} {ratio:>9} {mb:12.0f}")
    if "ours" in results:
        ours = results["ours"][0]
        for peer, goal in (("anchor", "goal <= 1.3"), ("pgpq", "goal < 1"), ("adbc", "goal < 1")):
            if peer in results:
                print(f"ours / {peer}: {ours / results[peer][0]:.2f}   ({goal})")
                if "loader" in results:
                    print(f"  loader alone / {peer}: {results['loader'][0] / results[peer][0]:.2f}")
        if "pandas" in results:
            print(f"pandas / ours: {results['pandas'][0] / ours:.1f}x   (goal >= 20)")
    if rss_rows:
        big = bigger(parquet, rss_rows)
        secs, mb = fresh("ours", big, table)
        base_mb = results["ours"][1] if "ours" in results else fresh("ours", parquet, table)[1]
        print(f"ours, {rss_rows:,} rows: {secs:.2f} s, peak RSS {mb:.0f} MB = {mb / base_mb:.2f}x the 1M-row peak "
              f"({base_mb:.0f} MB)   (goal <= 2)")
        with connect() as conn:
            conn.execute(f"TRUNCATE {table}")


# -- replace and merge ----------------------------------------------------------------------------

def filled(table: str, pk: bool) -> Callable[[Any], None]:
    """Setup: ``table`` holding the 1M rows (with the PRIMARY KEY if ``pk``), then a CHECKPOINT."""
    def setup(conn: Any) -> None:
        if conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] != 1_000_000:
            conn.execute(f"TRUNCATE {table}")
            conn.execute(f"COPY {table} FROM '{BIN}' (FORMAT binary)")
        conn.execute(f"VACUUM ANALYZE {table}")
        conn.execute("CHECKPOINT")
    conn_make(table, pk)
    return setup


def emptied(table: str, pk: bool) -> Callable[[Any], None]:
    def setup(conn: Any) -> None:
        conn.execute(f"TRUNCATE {table}")
        conn.execute("CHECKPOINT")
    conn_make(table, pk)
    return setup


def conn_make(table: str, pk: bool) -> None:
    with connect() as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (LIKE {SCHEMA}.t{' INCLUDING ALL' if pk else ''})")


def main_mode(mode: str, repeat: int, rss_rows: int | None = None) -> None:
    """Each case: (label, method, extra argv, table, setup, parquet, rows expected after). With
    ``rss_rows``, one case runs once more on that many rows (the 1M-row file repeated) for its peak
    RSS: replace by swap into the table without a key (the rows repeat its ids), or the merge into
    the 1M rows."""
    parquet = prepare()
    plain, keyed = f"{SCHEMA}.t_load", f"{SCHEMA}.t_pk"
    cases = [("anchor: server COPY FROM file into an empty table", "anchor", (), plain, emptied(plain, False),
              parquet, 1_000_000),
             ("anchor_pk: the same, into an empty table with the PRIMARY KEY", "anchor", (), keyed,
              emptied(keyed, True), parquet, 1_000_000),
             ("append into the empty table without a key (reference)", "ours", (), plain, emptied(plain, False),
              parquet, 1_000_000)]
    if mode == "replace":
        cases += [(f"replace ({s}) 1M rows holding 1M{', PRIMARY KEY' if t == keyed else ''}", "replace", (s,), t,
                   filled(t, t == keyed), parquet, 1_000_000) for t in (plain, keyed) for s in ("auto", "insert")]
    else:
        from pg_merge import inputs, reset

        merge_in = inputs()
        big = f"{SCHEMA}.t_merge"
        cases += [("append into the empty table with the PRIMARY KEY (reference)", "ours", (), keyed,
                   emptied(keyed, True), parquet, 1_000_000),
                  ("merge into an empty table with the PRIMARY KEY", "merge", (), keyed, emptied(keyed, True),
                   parquet, 1_000_000),
                  ("merge_anchor: COPY into TEMP + INSERT ON CONFLICT, 1M into 1M", "merge_anchor", (), big,
                   lambda conn: (reset(big), conn.execute("CHECKPOINT")), merge_in, 1_500_000),
                  ("merge 1M rows (half updates) into 1M, PRIMARY KEY", "merge", (), big,
                   lambda conn: (reset(big), conn.execute("CHECKPOINT")), merge_in, 1_500_000)]
    # round after round of every case: a change of the machine's load (2 shared cores) touches all alike
    runs: list[list[tuple[float, float]]] = [[] for _ in cases]
    for _ in range(repeat):
        for i, (label, method, extra, table, setup, data, rows) in enumerate(cases):
            runs[i].append(fresh(method, data, table, *extra, setup=setup))
            with connect() as conn:
                got = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            assert got == rows, f"{label}: {got} rows, expected {rows}"
    results = [(case[0], [r[0] for r in rs], max(r[1] for r in rs)) for case, rs in zip(cases, runs)]
    anchor, anchor_pk = statistics.median(results[0][1]), statistics.median(results[1][1])
    print(f"\n--mode {mode}, 1M rows (median of {repeat} fresh processes; spread min-max); load: {os.getloadavg()}")
    print(f"{'case':<66} {'s':>6} {'spread':>11} {'x anchor':>9} {'x anchor_pk':>12} {'peak RSS MB':>12}")
    for label, secs, mb in results:
        med = statistics.median(secs)
        print(f"{label:<66} {med:6.2f} {min(secs):5.2f}-{max(secs):<5.2f} {med / anchor:9.2f} {med / anchor_pk:12.2f} "
              f"{mb:12.0f}")
    if mode == "merge":
        empty = statistics.median(results[-3][1]) / anchor_pk
        print(f"merge into an empty table / anchor_pk: {empty:.2f}   (goal <= 1.3)")
        ratio = statistics.median(results[-1][1]) / statistics.median(results[-2][1])
        print(f"merge 1M into 1M / hand-written anchor: {ratio:.2f}   (goal <= 1.0)")
    if rss_rows:  # replace by swap (the table without a key: the rows repeat the 1M ids), or merge into 1M
        i = len(cases) - (4 if mode == "replace" else 1)
        label, method, extra, table, setup = cases[i][:5]
        secs, mb = fresh(method, bigger(parquet, rss_rows), table, *extra, setup=setup)
        label = label.replace("1M rows (half updates)", "1M rows (its ids again and again: all updates)")
        print(f"{label.replace('1M rows', f'{rss_rows:,} rows', 1)}: {secs:.2f} s, peak RSS {mb:.0f} MB "
              f"({mb / results[i][2]:.2f}x the 1M runs' {results[i][2]:.0f} MB)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:])
        sys.exit(0)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mode", choices=["append", "replace", "merge"], default="append")
    ap.add_argument("--methods", nargs="+", default=list(METHODS)[:6], choices=list(METHODS)[:6])
    ap.add_argument("--rss-rows", type=int, default=None, help="also measure our peak RSS for this many rows")
    args = ap.parse_args()
    if args.mode == "append":
        main(args.repeat, args.methods, args.rss_rows)
    else:
        main_mode(args.mode, args.repeat, args.rss_rows)
