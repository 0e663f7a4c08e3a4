"""``mode: replace`` on MariaDB, DuckDB and SQLite: each strategy against the same database's append
and its own bulk path, in one run (issue 18).

Per database, with the 1M-row export of ``../shared/bench/pg_1m_rows.sql`` (10 columns, made by
``parquet_to_pg.py``'s ``prepare``; ``--rows`` takes its first rows), into a table with a primary
key on ``id`` and an index on ``category``:

- ``bulk``: the database's own bulk load into the empty table: MariaDB ``LOAD DATA LOCAL INFILE`` of
  a CSV written before the clock; DuckDB ``INSERT INTO t SELECT * FROM read_parquet(...)``; SQLite
  ``executemany`` of Python tuples made before the clock;
- ``append``: our loader, ``mode: append`` into the empty table;
- ``swap`` / ``insert``: our loader, ``mode: replace`` with that ``replace_strategy`` into the
  table holding the rows already (what a full refresh meets);
- ``auto``: the same with ``replace_strategy: auto``, and the path it took.

The loader runs alone (``agent_etl.testing``), fed by ``ParquetFile.iter_batches`` of 100k rows.
Each method runs ``--repeat`` times (median, min-max); the table is set up before each clock.

    python benchmarks/replace_paths.py [--databases mariadb duckdb sqlite] [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import agent_etl  # noqa: F401  (first, as in the CLI: it sets pyarrow's allocator up before pyarrow loads)

import pyarrow.parquet as pq

DATA = Path(os.environ.get("AGENT_ETL_BENCH_DATA", Path(__file__).parent / ".data"))
MYSQL_URL = os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
WORK = Path(tempfile.mkdtemp(prefix="agent-etl-replace-"))
TABLE = "bench_replace"


def source(rows: int) -> Path:
    base = DATA / "pg_1m_rows.parquet"
    if not base.exists():
        sys.path.insert(0, str(Path(__file__).parent))
        from parquet_to_pg import prepare

        base = prepare()
    if rows >= pq.ParquetFile(base).metadata.num_rows:
        return base
    path = WORK / f"rows_{rows}.parquet"
    pq.write_table(pq.read_table(base).slice(0, rows), path)
    return path


def load(db: str, parquet: Path, mode: str, strategy: str | None = None) -> dict:
    """Our loader alone; returns its details."""
    from agent_etl.testing import build, tool_context

    async def batches():
        it = pq.ParquetFile(parquet).iter_batches(batch_size=100_000)
        while (batch := await asyncio.to_thread(next, it, None)) is not None:
            yield batch

    async def run() -> dict:
        ctx = tool_context(str(WORK), connections={"db": {"url": URLS[db]}})
        options = {"connection": "db", "table": TABLE, "mode": mode}
        if strategy:
            options["replace_strategy"] = strategy
        try:
            tool = build("loader", {"mariadb": "mysql"}.get(db, db), options, ctx)
            await tool.load(batches())
            return tool.details()
        finally:
            await ctx.resources.aclose()

    return asyncio.run(run())


URLS = {"mariadb": MYSQL_URL, "duckdb": f"duckdb:///{WORK / 'bench.duckdb'}", "sqlite": f"sqlite:///{WORK / 'bench.db'}"}


# -- the databases: make the table (empty or full), and the bulk path ------------------------------

class MariaDB:
    def __init__(self, parquet: Path):
        import pymysql
        import pyarrow.csv as pv

        from agent_etl.tools.databases.mysql.types import text_batch

        self.conn = pymysql.connect(host="127.0.0.1", user="root", database="test", local_infile=True,
                                    autocommit=True)
        data, self.targets, self.sets = text_batch(pq.read_table(parquet).combine_chunks().to_batches()[0])
        self.csv = WORK / "bulk.csv"
        pv.write_csv(data, self.csv, pv.WriteOptions(include_header=False, quoting_style="all_valid",
                                                     null_string="NULL"))
        self.parquet = parquet

    def table(self, full: bool) -> None:
        with self.conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
            cur.execute(f"CREATE TABLE {TABLE} (id INT PRIMARY KEY, big BIGINT NOT NULL, txt TEXT NOT NULL, "
                        "amount DECIMAL(12,2) NOT NULL, score DOUBLE NOT NULL, flag BOOLEAN NOT NULL, "
                        "ts DATETIME(6) NOT NULL, d DATE NOT NULL, category VARCHAR(16) NOT NULL, maybe INT, "
                        "INDEX (category)) DEFAULT CHARSET=utf8mb4")
        if full:
            self.bulk()

    def bulk(self) -> None:
        from agent_etl.tools.loaders.mysql import _FORMAT

        sql = f"LOAD DATA LOCAL INFILE %s INTO TABLE {TABLE} {_FORMAT} ({', '.join(self.targets)})"
        if self.sets:
            sql += " SET " + ", ".join(self.sets)
        with self.conn.cursor() as cur:
            cur.execute(sql, (str(self.csv),))

    def count(self) -> int:
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {TABLE}")
            return cur.fetchone()[0]

    def close(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {TABLE}")
        self.conn.close()


class DuckDB:
    def __init__(self, parquet: Path):
        import duckdb

        self.parquet, self.path = parquet, WORK / "bench.duckdb"
        self.duckdb = duckdb

    def _run(self, *sql: str) -> list:
        conn = self.duckdb.connect(str(self.path))
        try:
            out = []
            for s in sql:
                out = conn.execute(s).fetchall()
            return out
        finally:
            conn.close()

    def table(self, full: bool) -> None:
        self._run(f"DROP TABLE IF EXISTS {TABLE}",
                  f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, big BIGINT NOT NULL, txt VARCHAR NOT NULL, "
                  "amount DECIMAL(12,2) NOT NULL, score DOUBLE NOT NULL, flag BOOLEAN NOT NULL, "
                  "ts TIMESTAMP NOT NULL, d DATE NOT NULL, category VARCHAR NOT NULL, maybe INTEGER)",
                  f"CREATE INDEX {TABLE}_category ON {TABLE} (category)", "CHECKPOINT")
        if full:
            self.bulk()

    def bulk(self) -> None:
        self._run(f"INSERT INTO {TABLE} SELECT * FROM read_parquet('{self.parquet}')", "CHECKPOINT")

    def count(self) -> int:
        return self._run(f"SELECT count(*) FROM {TABLE}")[0][0]

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


class SQLite:
    def __init__(self, parquet: Path):
        from agent_etl.tools.databases.sqlite.types import to_params

        table = pq.read_table(parquet).combine_chunks()
        self.rows = list(zip(*[to_params(c.combine_chunks()) for c in table.columns]))
        self.path = WORK / "bench.db"

    def _conn(self):
        import sqlite3

        return sqlite3.connect(self.path)

    def table(self, full: bool) -> None:
        with self._conn() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
            conn.execute(f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, big INTEGER NOT NULL, txt TEXT NOT NULL, "
                         "amount DECIMAL_TEXT(12,2) NOT NULL, score REAL NOT NULL, flag BOOLEAN NOT NULL, "
                         "ts TIMESTAMP NOT NULL, d DATE NOT NULL, category TEXT NOT NULL, maybe INTEGER)")
            conn.execute(f"CREATE INDEX {TABLE}_category ON {TABLE} (category)")
        if full:
            self.bulk()
        with self._conn() as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def bulk(self) -> None:
        with self._conn() as conn:
            conn.executemany(f"INSERT INTO {TABLE} VALUES ({', '.join('?' * 10)})", self.rows)

    def count(self) -> int:
        with self._conn() as conn:
            return conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]

    def close(self) -> None:
        for p in WORK.glob("bench.db*"):
            p.unlink()


DATABASES = {"mariadb": MariaDB, "duckdb": DuckDB, "sqlite": SQLite}


def timed(setup: Callable[[], None], run: Callable[[], object]) -> tuple[float, object]:
    setup()
    t = time.perf_counter()
    out = run()
    return time.perf_counter() - t, out


def measure(db: str, rows: int, repeat: int) -> dict[str, tuple[list[float], str]]:
    parquet = source(rows)
    n = pq.ParquetFile(parquet).metadata.num_rows
    h = DATABASES[db](parquet)
    methods: dict[str, tuple[Callable[[], None], Callable[[], object]]] = {
        "bulk": (lambda: h.table(False), h.bulk),
        "append": (lambda: h.table(False), lambda: load(db, parquet, "append")),
        "swap": (lambda: h.table(True), lambda: load(db, parquet, "replace", "swap")),
        "insert": (lambda: h.table(True), lambda: load(db, parquet, "replace", "insert")),
        "auto": (lambda: h.table(True), lambda: load(db, parquet, "replace", "auto")),
    }
    out: dict[str, tuple[list[float], str]] = {}
    try:
        for name, (setup, run) in methods.items():
            times, details = [], ""
            for _ in range(repeat):
                secs, got = timed(setup, run)
                assert h.count() == n, f"{db} {name}: {h.count()} rows, expected {n}"
                times.append(secs)
                details = (got or {}).get("replace", "") if isinstance(got, dict) else ""
            out[name] = (times, details)
    finally:
        h.close()
    return out


def main(databases: list[str], rows: int, repeat: int) -> None:
    results = {db: measure(db, rows, repeat) for db in databases}
    print(f"\nmode: replace paths, {rows:,} rows into a table with a primary key and an index; median of {repeat} "
          f"(min-max); load average {os.getloadavg()[0]:.1f}")
    print(f"{'database':<9} {'method':<7} {'s':>6} {'(min-max)':>13} {'x bulk':>7} {'x append':>9}  path")
    for db, res in results.items():
        bulk = statistics.median(res["bulk"][0])
        append = statistics.median(res["append"][0])
        for name, (times, details) in res.items():
            med = statistics.median(times)
            print(f"{db:<9} {name:<7} {med:6.2f} {f'({min(times):.2f}-{max(times):.2f})':>13} {med / bulk:7.2f} "
                  f"{med / append:9.2f}  {details}")
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--databases", nargs="+", default=list(DATABASES), choices=list(DATABASES))
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    main(args.databases, args.rows, args.repeat)
