"""Checks plus streaming profile against the same numbers computed directly, on one Arrow table.

Three ways over a table of N rows x 8 columns (ints, floats, strings, a bool, a timestamp, a
nullable int), all in this process and this run:

- ours: a QualityGate with six checks (not_null x2, range, regex, accepted_values, unique) and
  profiling on, fed 64k-row batches (what a pipeline does);
- pyarrow: the same checks and an exact profile per column written directly in pyarrow.compute
  (null_count, count_distinct, min_max, mean, stddev, quantile, value_counts top-10) plus a
  NumPy histogram of each numeric column; whole columns, no streaming;
- duckdb: DuckDB's approximate profile query over the Arrow table, for reference.

    python benchmarks/quality_profile.py                 # 1M rows: seconds and ratios (best of 3)
    python benchmarks/quality_profile.py --rows 10000000 # streams 10M rows: peak RSS vs 1M

With --rows above 1M only our streaming profile runs (batches are generated one at a time, so
the table never exists); each size runs in a fresh process and the peak RSS of both is printed.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import agent_etl  # noqa: F401  (first, as in the CLI: it sets pyarrow's allocator up before pyarrow loads)

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BATCH = 65_536
CATS = np.array(["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"])
SPEC = """\
version: 1
name: bench_quality
extract:
  t: {tool: csv, path: unused.csv}
quality:
  - input: t
    on_failure: warn
    checks:
      - not_null: [id, maybe]
      - range: {column: amount, min: 0, max: 900000}
      - regex: {column: txt, pattern: "^t[0-9]+$"}
      - accepted_values: {column: category, values: [alpha, beta, gamma, delta, epsilon, zeta, eta]}
      - unique: [id]
"""


def batch(start: int, n: int, rng: np.random.Generator) -> pa.RecordBatch:
    ids = np.arange(start + 1, start + n + 1)
    return pa.record_batch({
        "id": ids,
        "txt": pa.array(np.char.add("t", (ids * 7919 % 1_000_003).astype(str))),
        "amount": np.round(rng.random(n) * 1_000_000, 2),
        "score": rng.lognormal(3, 1, n),
        "flag": ids % 2 == 0,
        "ts": pa.array(np.datetime64("2020-01-01T00:00:00") + (ids * 37).astype("timedelta64[s]")),
        "category": pa.array(CATS[ids % 8]),
        "maybe": pa.array(ids % 100_000, mask=(ids % 20 == 0)),
    })


def batches(rows: int):
    rng = np.random.default_rng(42)
    for start in range(0, rows, BATCH):
        yield batch(start, min(BATCH, rows - start), rng)


def ours(stream) -> tuple[float, dict, dict]:
    from agent_etl.quality.gate import QualityGate
    from agent_etl.spec import Pipeline

    home = Path(tempfile.mkdtemp())
    group = Pipeline.from_text(SPEC, base_dir=home).spec.quality[0]
    t = time.perf_counter()
    gate = QualityGate(group, run_id="bench", home=home)
    for b in stream:
        gate.validate(b)
    report = gate.finish()
    return time.perf_counter() - t, report.to_dict(), gate.profile


def pyarrow_exact(table: pa.Table) -> tuple[float, dict]:
    t = time.perf_counter()
    checks = {
        "not_null": table["id"].null_count + table["maybe"].null_count,
        "range": pc.sum(pc.fill_null(pc.or_(pc.less(table["amount"], 0), pc.greater(table["amount"], 900000)),
                                     False)).as_py(),
        "regex": pc.sum(pc.invert(pc.match_substring_regex(table["txt"], "^t[0-9]+$"))).as_py(),
        "accepted_values": pc.sum(pc.invert(pc.is_in(table["category"], value_set=pa.array(CATS[:7])))).as_py(),
        "unique": len(table) - pc.count_distinct(table["id"]).as_py(),
    }
    profile = {}
    for name in table.column_names:
        col = table[name]
        p = {"nulls": col.null_count, "distinct": pc.count_distinct(col).as_py()}
        mm = pc.min_max(col)
        p["min"], p["max"] = mm["min"].as_py(), mm["max"].as_py()
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            p["mean"], p["std"] = pc.mean(col).as_py(), pc.stddev(col, ddof=1).as_py()
            p["quantiles"] = pc.quantile(col, q=[0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]).to_pylist()
            p["histogram"] = np.histogram(pc.drop_null(col).to_numpy(), bins=30)[0].tolist()
        if pa.types.is_string(col.type) or pa.types.is_boolean(col.type):
            vc = pc.value_counts(col)
            p["top"] = vc.take(pc.array_sort_indices(vc.field("counts"), order="descending")[:10]).to_pylist()
            if pa.types.is_string(col.type):
                lengths = pc.utf8_length(col)
                p["length"] = pc.min_max(lengths).as_py(), pc.mean(lengths).as_py()
        profile[name] = p
    return time.perf_counter() - t, {"checks": checks, "profile": profile}


def duckdb_approx(table: pa.Table) -> float:
    import duckdb

    con = duckdb.connect()
    con.register("t", table)
    parts = []
    for f in table.schema:
        c = f'"{f.name}"'
        parts += [f"count({c})", f"approx_count_distinct({c})", f"min({c})", f"max({c})"]
        if pa.types.is_integer(f.type) or pa.types.is_floating(f.type):
            parts += [f"avg({c})", f"stddev_samp({c})", f"approx_quantile({c}, [0.01,0.05,0.25,0.5,0.75,0.95,0.99])"]
    t = time.perf_counter()
    con.execute(f"select {', '.join(parts)} from t").fetchall()
    return time.perf_counter() - t


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stream_only(rows: int) -> None:
    """Child process: our gate over generated batches; prints seconds and peak RSS as JSON."""
    secs, _, profile = ours(batches(rows))
    print(json.dumps({"rows": rows, "seconds": secs, "peak_mb": peak_mb(), "profiled": profile["rows"]}))


def compare(rows: int, repeat: int) -> None:
    table = pa.Table.from_batches(list(batches(rows)))
    whole = table.combine_chunks()  # pyarrow and DuckDB get contiguous columns: their best case
    ours(table.slice(0, BATCH).to_batches())  # imports and first-use costs out of the timing
    t_ours = t_pa = t_duck = float("inf")
    for _ in range(repeat):  # interleaved, best of each: a busy machine slows all three alike
        secs, report, profile = ours(table.to_batches(max_chunksize=BATCH))
        t_ours = min(t_ours, secs)
        secs, exact = pyarrow_exact(whole)
        t_pa = min(t_pa, secs)
        t_duck = min(t_duck, duckdb_approx(whole))
    failed = {c["label"]: c["failed_rows"] for c in report["checks"]}
    print(f"{rows:,} rows x {table.num_columns} columns, {BATCH:,}-row batches, best of {repeat}")
    print(f"  failures  ours {failed}\n            pyarrow {exact['checks']}")
    for name in ("id", "txt", "score"):
        c, e = profile["columns"][name], exact["profile"][name]
        print(f"  {name:6} distinct ours {c['distinct']:,} (exact: {c['distinct_exact']}) vs {e['distinct']:,}; "
              f"median ours {(c['quantiles'] or {}).get('0.5')} vs {(e.get('quantiles') or [None] * 4)[3]}")
    print(f"  ours: checks + streaming profile   {t_ours:6.2f} s   {t_ours / t_pa:4.2f}x pyarrow   (goal <= 1.5x)")
    print(f"  pyarrow.compute exact, per column  {t_pa:6.2f} s   1.00x")
    print(f"  DuckDB approximate profile query   {t_duck:6.2f} s   {t_duck / t_pa:4.2f}x pyarrow")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="timings per method (the best is printed)")
    ap.add_argument("--stream-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stream_only:
        stream_only(args.rows)
    elif args.rows > 1_000_000:
        runs = []
        for rows in (1_000_000, args.rows):
            out = subprocess.run([sys.executable, __file__, "--rows", str(rows), "--stream-only"],
                                 capture_output=True, text=True, check=True).stdout
            runs.append(json.loads(out))
        for r in runs:
            print(f"  {r['rows']:>12,} rows streamed: {r['seconds']:6.2f} s, peak RSS {r['peak_mb']:6.0f} MB")
        print(f"  peak RSS {runs[1]['peak_mb'] / runs[0]['peak_mb']:.2f}x for {runs[1]['rows'] / runs[0]['rows']:.0f}x "
              "the rows (flat memory: close to 1)")
    else:
        compare(args.rows, args.repeat)
