"""Merge 1M rows (half updates of existing keys, half new keys) into a PostgreSQL table holding 1M
rows with a PRIMARY KEY: our pipeline (parquet -> postgres, mode: merge, key: [id]) against a
hand-written anchor (server COPY of the same rows from a binary file into a TEMP table, then
INSERT ... ON CONFLICT (id) DO UPDATE, in one transaction), each in fresh processes (median of
--repeat), in the same run, alternating (each first in every other round). The target is rebuilt
before every run, outside the timed region, and a CHECKPOINT follows.

    python benchmarks/pg_merge.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import agent_etl  # noqa: F401  (first, as in the CLI: it sets pyarrow's allocator up before pyarrow loads)

from parquet_to_pg import DATA, SCHEMA, URL, child, connect, export, fresh, prepare, run_ours

MERGE_BIN = "/tmp/agent_etl_bench_merge.bin"
COLUMNS = ["id", "big", "txt", "amount", "score", "flag", "ts", "d", "category", "maybe"]


def inputs() -> Path:
    """The merge input: ids 500,001..1,500,000 with changed values, as Parquet and as a server file."""
    parquet = DATA / "pg_merge_input.parquet"
    with connect() as conn:
        if conn.execute(f"SELECT to_regclass('{SCHEMA}.merge_in')").fetchone()[0] is None:
            conn.execute(f"CREATE TABLE {SCHEMA}.merge_in AS SELECT id + 500000 AS id, big + 1 AS big, txt, "
                         f"amount + 1 AS amount, score, NOT flag AS flag, ts, d, category, maybe FROM {SCHEMA}.t")
        conn.execute(f"COPY {SCHEMA}.merge_in TO '{MERGE_BIN}' (FORMAT binary)")
    if not parquet.exists():
        export(f"SELECT * FROM {SCHEMA}.merge_in ORDER BY id", parquet)
    return parquet


def reset(table: str) -> None:
    with connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} (LIKE {SCHEMA}.t INCLUDING ALL)")
        conn.execute(f"INSERT INTO {table} SELECT * FROM {SCHEMA}.t")
        conn.execute(f"VACUUM ANALYZE {table}")
        # the rebuild and the last merge wrote ~1 GB of WAL: without this, the server's own
        # checkpoints land in whichever timed runs cross max_wal_size (+-12% run to run)
        conn.execute("CHECKPOINT")


def run_anchor(parquet: Path, table: str) -> None:
    import psycopg

    rest = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])
    with psycopg.connect(URL) as conn:
        conn.execute(f"CREATE TEMP TABLE s ON COMMIT DROP AS SELECT * FROM {table} WITH NO DATA")
        conn.execute(f"COPY s FROM '{MERGE_BIN}' (FORMAT binary)")
        conn.execute(f"INSERT INTO {table} SELECT * FROM s ON CONFLICT (id) DO UPDATE SET {rest}")


def run_merge(parquet: Path, table: str) -> None:
    run_ours(parquet, table, ", mode: merge, key: [id]")


def main(repeat: int) -> None:
    prepare()
    parquet = inputs()
    table = f"{SCHEMA}.t_merge"
    runs: dict[str, list[tuple[float, float]]] = {"anchor": [], "ours": []}
    for i in range(repeat):  # alternating, each first in every other round: the load's drift hits both alike
        for name in ("anchor", "ours") if i % 2 == 0 else ("ours", "anchor"):
            reset(table)
            runs[name].append(fresh(name, parquet, table, script=__file__, empty=False))
            with connect() as conn:
                count, updated = conn.execute(f"SELECT count(*), count(*) FILTER (WHERE id > 500000 AND id <= 1000000 "
                                              f"AND NOT flag = (id % 2 = 0)) FROM {table}").fetchone()
            assert (count, updated) == (1_500_000, 500_000), (name, count, updated)
    results = {name: (statistics.median(r[0] for r in rs), max(r[1] for r in rs)) for name, rs in runs.items()}
    pairs = sorted(o[0] / a[0] for a, o in zip(runs["anchor"], runs["ours"]))
    (a, _), (o, o_mb) = results["anchor"], results["ours"]
    print(f"\nmerge 1M rows (500k updates, 500k inserts) into 1M rows with a PRIMARY KEY (median of {repeat})")
    print(f"anchor: COPY FROM file into TEMP + INSERT ... ON CONFLICT   {a:6.2f} s")
    print(f"agent-etl parquet -> postgres mode: merge                  {o:6.2f} s   peak RSS {o_mb:.0f} MB")
    print(f"ratio ours / anchor: {o / a:.2f}; per round {' '.join(f'{r:.2f}' for r in pairs)} "
          f"(median {statistics.median(pairs):.2f})")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:], methods={"anchor": run_anchor, "ours": run_merge})
        sys.exit(0)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    main(ap.parse_args().repeat)
