"""Parquet -> MariaDB through the runtime, against the MariaDB client's own fastest load, same run.

The Parquet file is the benchmark table of mysql_to_parquet.py (1M rows x 10 columns by default).

- anchor: ``mariadb --local-infile -e "LOAD DATA LOCAL INFILE 'prepared.tsv' INTO TABLE ..."`` into an
  empty table with the same definition as the one our loader creates (the TSV is prepared untimed)
- ours: ``AgentCoordinator().run`` of a spec parquet -> mysql, ``mode: replace`` (staging table,
  RENAME swap), in a fresh process; peak RSS is that process's

    python benchmarks/parquet_to_mysql.py [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import agent_etl  # noqa: F401  (first, as in the CLI: it sets pyarrow's allocator up before pyarrow loads)

from mysql_to_parquet import CLIENT, SPEC, URL, client, ensure_table, timed

LOAD_SPEC = """\
version: 1
name: bench_parquet_to_mysql
connections:
  maria: {{url: "{url}"}}
extract:
  lake:
    tool: parquet
    path: {src}
load:
  t:
    input: lake
    tool: mysql
    connection: maria
    table: {table}
    mode: replace
"""


def prepare(rows: int, work: Path) -> tuple[Path, Path]:
    """The Parquet file (written by our mysql -> parquet pipeline) and the anchor's TSV of it."""
    import pyarrow as pa
    import pyarrow.csv as pv
    import pyarrow.parquet as pq

    from agent_etl import AgentCoordinator, Pipeline

    src, tsv = work / "t.parquet", work / "t.tsv"
    spec = SPEC.format(url=URL, table=ensure_table(rows), out=src)
    assert asyncio.run(AgentCoordinator(home=work / ".agent-etl").run(Pipeline.from_text(spec))).ok
    table = pq.read_table(src)
    table = table.set_column(5, "flag", table["flag"].cast(pa.int8()))
    pv.write_csv(table, tsv, pv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none",
                                             null_string="\\N"))
    return src, tsv


def child(src: str, table: str) -> None:
    from agent_etl import AgentCoordinator, Pipeline

    from data import home

    pipeline = Pipeline.from_text(LOAD_SPEC.format(url=URL, src=src, table=table))
    at = home()
    t = time.perf_counter()
    result = asyncio.run(AgentCoordinator(home=at).run(pipeline))
    assert result.ok, result
    print(f"{time.perf_counter() - t:.4f}")


def main(rows: int, repeat: int) -> None:
    work = Path(tempfile.mkdtemp())
    src, tsv = prepare(rows, work)
    me = [sys.executable, __file__, "--child", str(src), "t_load"]
    timed(me)  # warm-up: creates t_load, whose definition the anchor's table copies
    ours, anchor, rss = [], [], []
    for _ in range(repeat):
        client("DROP TABLE IF EXISTS t_anchor; CREATE TABLE t_anchor LIKE t_load")
        wall, _, _ = timed([*CLIENT, "--local-infile=1", "-e", f"LOAD DATA LOCAL INFILE '{tsv}' INTO TABLE t_anchor"])
        anchor.append(wall)
        _, mb, out = timed(me)
        ours.append(float(out.split()[-1]))
        rss.append(mb)
    counts = client("SELECT (SELECT COUNT(*) FROM t_load), (SELECT COUNT(*) FROM t_anchor), "
                    "(SELECT COUNT(*) FROM t_load WHERE maybe IS NULL)").split()
    assert counts == [str(rows), str(rows), str(rows // 20)], counts
    a, o = statistics.median(anchor), statistics.median(ours)
    print(f"{rows:,} rows Parquet -> MariaDB (median of {repeat} fresh processes)")
    print(f"  {'LOAD DATA LOCAL INFILE of a TSV (mariadb client, anchor)':58s} {a:6.2f} s  1.00x anchor")
    print(f"  {'agent-etl parquet -> mysql, mode: replace':58s} {o:6.2f} s  {o / a:5.2f}x anchor  "
          f"peak RSS {max(rss):5.0f} MB")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:4])
        sys.exit(0)
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    main(args.rows, args.repeat)
