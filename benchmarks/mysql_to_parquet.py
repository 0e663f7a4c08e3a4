"""MariaDB -> Parquet through the runtime, against the MariaDB client's own fastest read, same run.

The table has the shape of ../shared/bench/pg_1m_rows.sql (int PK, bigint, text, decimal(12,2),
double, bool, datetime, date, category, nullable int), built once in database ``agent_etl_bench``
with MariaDB's sequence engine. Each side runs in fresh processes (median of --repeat); peak RSS
is the process's (our pipeline) or the client's (anchor).

- anchor: ``mariadb --batch --quick -e 'select * from t' > /dev/null`` (rows formatted, discarded)
- raw floor: connectorx Arrow stream of ``select * from t``, batches discarded
- ours: ``AgentCoordinator().run`` of a spec mysql -> parquet

    python benchmarks/mysql_to_parquet.py [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import agent_etl  # noqa: F401  (first, as in the CLI: it sets pyarrow's allocator up before pyarrow loads)

DATABASE = "agent_etl_bench"
URL = f"mysql://root@127.0.0.1:3306/{DATABASE}"
CLIENT = ["mariadb", "-h127.0.0.1", "-uroot", DATABASE]

TABLE = """
DROP TABLE IF EXISTS {t};
CREATE TABLE {t} (
  id INT PRIMARY KEY, big BIGINT NOT NULL, txt VARCHAR(20) NOT NULL, amount DECIMAL(12,2) NOT NULL,
  score DOUBLE NOT NULL, flag BOOLEAN NOT NULL, ts DATETIME(6) NOT NULL, d DATE NOT NULL,
  category VARCHAR(16) NOT NULL, maybe INT NULL);
SET @seed = RAND(42);
INSERT INTO {t} SELECT seq, (seq * 2654435761) % 9000000000000, SUBSTR(MD5(seq), 1, 20), ROUND(RAND() * 1000000, 2),
  RAND() * 1000, seq % 2 = 0, TIMESTAMP '2020-01-01 00:00:00' + INTERVAL (seq * 37) SECOND,
  DATE '2020-01-01' + INTERVAL (seq % 1500) DAY,
  ELT(1 + seq % 8, 'alpha','beta','gamma','delta','epsilon','zeta','eta','theta'),
  IF(seq % 20 = 0, NULL, seq % 100000) FROM seq_1_to_{rows};
ANALYZE TABLE {t};
"""

SPEC = """\
version: 1
name: bench_mysql_to_parquet
connections:
  maria: {{url: "{url}"}}
extract:
  t:
    tool: mysql
    connection: maria
    table: {table}
load:
  lake:
    input: t
    tool: parquet
    path: {out}
"""


def client(sql: str, *extra: str) -> str:
    return subprocess.run([*CLIENT, "-N", *extra, "-e", sql], check=True, capture_output=True, text=True).stdout


def ensure_table(rows: int) -> str:
    """The benchmark table of ``rows`` rows (created once, reused while its row count matches)."""
    name = f"t_{rows}"
    subprocess.run(["mariadb", "-h127.0.0.1", "-uroot", "-e", f"CREATE DATABASE IF NOT EXISTS {DATABASE}"], check=True)
    have = client(f"SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{DATABASE}' "
                  f"AND TABLE_NAME = '{name}'").strip()
    if have == "1" and client(f"SELECT COUNT(*) FROM {name}").strip() == str(rows):
        return name
    print(f"building {name} ({rows:,} rows) ...", flush=True)
    subprocess.run(CLIENT, input=TABLE.format(t=name, rows=rows), check=True, text=True, capture_output=True)
    return name


def timed(cmd: list[str], **kw) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and stdout of a fresh process."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=kw.pop("stdout", subprocess.PIPE), text=True, **kw)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, cmd
    return time.perf_counter() - t, usage.ru_maxrss / 1024, out


def child(kind: str, table: str, out: str) -> None:
    """Runs in the fresh process: imports first, then the timed work (connection set-up included)."""
    import asyncio

    if kind == "ours":
        from agent_etl import AgentCoordinator, Pipeline

        pipeline = Pipeline.from_text(SPEC.format(url=URL, table=table, out=out))
        from data import home

        at = home()
        t = time.perf_counter()
        result = asyncio.run(AgentCoordinator(home=at).run(pipeline))
        assert result.ok, result
    else:
        import connectorx as cx

        t = time.perf_counter()
        for _ in cx.read_sql(URL, f"select * from {table}", return_type="arrow_stream", batch_size=100_000):
            pass
    print(f"{time.perf_counter() - t:.4f}")


def main(rows: int, repeat: int) -> None:
    table = ensure_table(rows)
    work = Path(tempfile.mkdtemp())
    me = [sys.executable, __file__]
    results: dict[str, list[tuple[float, float]]] = {"anchor": [], "connectorx": [], "ours": []}
    for i in range(repeat):
        with open(os.devnull, "w") as null:
            wall, rss, _ = timed([*CLIENT, "--batch", "--quick", "-e", f"select * from {table}"], stdout=null)
        results["anchor"].append((wall, rss))
        for kind in ("connectorx", "ours"):
            _, rss, out = timed([*me, "--child", kind, table, str(work / f"{kind}{i}.parquet")])
            results[kind].append((float(out.split()[-1]), rss))
    import pyarrow.parquet as pq

    assert pq.read_metadata(work / "ours0.parquet").num_rows == rows
    med = {k: statistics.median(s for s, _ in v) for k, v in results.items()}
    rss = {k: max(m for _, m in v) for k, v in results.items()}
    print(f"{rows:,} rows MariaDB -> Parquet (median of {repeat} fresh processes)")
    for k, label in (("anchor", "mariadb --batch --quick > /dev/null (anchor)"),
                     ("connectorx", "connectorx Arrow stream, discarded"), ("ours", "agent-etl mysql -> parquet")):
        print(f"  {label:46s} {med[k]:6.2f} s  {med[k] / med['anchor']:5.2f}x anchor  peak RSS {rss[k]:5.0f} MB")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:5])
        sys.exit(0)
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    main(args.rows, args.repeat)
