"""Quality checks on 1M rows x 8 columns in Arrow: our gate vs the same work in pyarrow.compute and pandas.

The six checks of ../shared/bench/quality-anchors.md - not_null on 2 columns, range, regex,
accepted_values, unique(id) - on a generated, seeded table with known failures:

- ``gate``: ``QualityGate.validate`` over 64k-row batches + ``finish``, ``on_failure: quarantine``
  (good rows returned, bad rows with their reasons written to the default quarantine Parquet file);
- ``pyarrow``: the same masks written directly in pyarrow.compute (nulls filled before OR-ing; the
  unique mask by a stable NumPy sort), then the filter into good and bad tables (the quarantine split);
- ``pandas``: the same masks and split on a DataFrame (conversion from Arrow not timed).

Every variant must find the same failing rows; the script prints seconds (best of --repeat) and the
ratio to pyarrow, all from the same run. Great Expectations runs in its own venv, as a subprocess
(benchmarks/peers/ge.sh sets it up; skipped with a note when it is not there).

    python benchmarks/quality_checks.py [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import agent_etl  # noqa: F401  (first, as in the CLI: it sets pyarrow's allocator up before pyarrow loads)

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BATCH = 65_536
STATUSES = ["paid", "open", "void", "refunded"]
ACCEPTED = ["paid", "open", "refunded"]
EMAIL = r"[a-z0-9._]+@[a-z0-9]+\.[a-z]{2,}"
CHECKS = f"""\
- not_null: [customer_id, amount]
- range: {{column: amount, min: 0, max: 10000}}
- regex: {{column: email, pattern: "{EMAIL.replace(chr(92), chr(92) * 2)}"}}
- accepted_values: {{column: status, values: [{", ".join(ACCEPTED)}]}}
- unique: [id]
"""


def make_table(rows: int, seed: int = 42) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = np.arange(rows, dtype=np.int64)
    dup = rng.choice(rows, rows // 1000, replace=False)
    ids[dup] = rng.integers(0, rows, len(dup))
    user = np.char.add("user", (rng.integers(0, 100_000, rows)).astype(str))
    email = np.char.add(user, np.where(rng.random(rows) < 0.01, "example.com", "@example.com"))
    return pa.table({
        "id": ids,
        "customer_id": pa.array(rng.integers(0, 50_000, rows), mask=rng.random(rows) < 0.01),
        "amount": pa.array(np.round(rng.lognormal(3, 1, rows) * np.where(rng.random(rows) < 0.01, -1, 1), 2),
                           mask=rng.random(rows) < 0.01),
        "email": email,
        "status": rng.choice(np.array(STATUSES), rows, p=[0.6, 0.3, 0.01, 0.09]),
        "country": rng.choice(np.array(["DE", "FR", "US", "JP", "BR"]), rows),
        "created_at": pa.array(np.datetime64("2024-01-01") + rng.integers(0, 10**9, rows).astype("timedelta64[s]")),
        "qty": rng.integers(1, 20, rows).astype(np.int32),
    })


class Discard:
    """A quarantine sink that drops the bad rows: the gate's own cost, without writing Parquet."""

    where = "nowhere"

    def write(self, table: pa.Table) -> None:
        pass

    def close(self) -> None:
        pass


def gate_variant(table: pa.Table, home: Path, sink: object = None) -> tuple[int, int]:
    from agent_etl.quality.gate import QualityGate
    from agent_etl.spec import QualityGroup

    fields = {"input": "orders", "on_failure": "quarantine", "checks": _checks()}
    if "profile" in QualityGroup.model_fields:
        fields["profile"] = False  # checks only; benchmarks/quality_profile measures profiling
    gate = QualityGate(QualityGroup.model_validate(fields), run_id=f"bench-{time.monotonic_ns()}", home=home,
                       sink=sink)
    good = 0
    for batch in table.to_batches(max_chunksize=BATCH):
        out = gate.validate(batch)
        good += 0 if out is None else out.num_rows
    report = gate.finish()
    return good, report.rows_quarantined


def pyarrow_variant(table: pa.Table) -> tuple[int, int]:
    def filled(mask):
        return pc.fill_null(mask, False)

    amount = table["amount"]
    masks = [
        pc.or_(pc.is_null(table["customer_id"]), pc.is_null(amount)),
        filled(pc.or_(pc.less(amount, 0), pc.greater(amount, 10000))),
        filled(pc.invert(pc.match_substring_regex(table["email"], f"^(?:{EMAIL})$"))),
        filled(pc.invert(pc.is_in(table["status"], value_set=pa.array(ACCEPTED)))),
        pa.chunked_array([_repeats(table["id"].to_numpy())]),
    ]
    bad = masks[0]
    for m in masks[1:]:
        bad = pc.or_(bad, m)
    good_t, bad_t = table.filter(pc.invert(bad)), table.filter(bad)
    return good_t.num_rows, bad_t.num_rows


def _repeats(ids: np.ndarray) -> np.ndarray:
    order = np.argsort(ids, kind="stable")
    s = ids[order]
    dup = np.zeros(len(ids), dtype=bool)
    dup[order[1:]] = s[1:] == s[:-1]
    return dup


def pandas_variant(df) -> tuple[int, int]:
    bad = (df["customer_id"].isna() | df["amount"].isna() | (df["amount"] < 0) | (df["amount"] > 10000)
           | ~df["email"].str.fullmatch(EMAIL) | ~df["status"].isin(ACCEPTED) | df.duplicated(subset=["id"]))
    return len(df[~bad]), len(df[bad])


def _checks() -> list[dict]:
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(CHECKS)


def measure(variants: dict[str, object], repeat: int) -> dict[str, tuple[float, float, tuple[int, int]]]:
    """Best wall and CPU seconds of each variant; the variants take turns, so a busy spell on a shared
    machine hits them alike rather than one of them."""
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    result: dict[str, tuple[int, int]] = {}
    for _ in range(repeat):
        for name, fn in variants.items():
            w, c = time.perf_counter(), time.process_time()
            result[name] = fn()
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)
    return {name: (min(wall[name]), min(cpu[name]), result[name]) for name in variants}


def ge_variant(path: Path) -> str:
    python = Path(os.environ.get("BENCH_PEERS", Path(__file__).resolve().parent / ".data" / "peers")) / "ge" / "bin" / "python"
    if not python.exists():
        return f"skipped: no Great Expectations venv at {python.parent.parent} (run benchmarks/peers/ge.sh)"
    script = Path(__file__).parent / "peers" / "ge_checks.py"
    out = subprocess.run([str(python), str(script), str(path)], capture_output=True, text=True, check=False)
    return out.stdout.strip() or f"failed: {out.stderr.strip()[-300:]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    table = make_table(args.rows)
    df = table.to_pandas()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        results = measure({
            "pyarrow.compute masks + good/bad filter": lambda: pyarrow_variant(table),
            "agent-etl QualityGate, quarantine mode": lambda: gate_variant(table, home),
            "  same, bad rows discarded (no Parquet write)": lambda: gate_variant(table, home, Discard()),
            "pandas masks + good/bad split": lambda: pandas_variant(df),
        }, args.repeat)
        counts = {r for *_, r in results.values()}
        assert len(counts) == 1, f"the variants disagree on the failing rows: {results}"
        (good, bad), = counts
        wall0, cpu0, _ = results["pyarrow.compute masks + good/bad filter"]
        print(f"{args.rows:,} rows x {table.num_columns} columns; six checks; {bad:,} bad rows, {good:,} good")
        print(f"{'method':44} {'wall s':>7} {'x pyarrow':>10} {'cpu s':>7} {'x pyarrow':>10}")
        for name, (wall, cpu, _) in results.items():
            print(f"{name:44} {wall:7.3f} {wall / wall0:10.2f} {cpu:7.3f} {cpu / cpu0:10.2f}")
        import pyarrow.parquet as pq

        path = home / "table.parquet"
        pq.write_table(table, path)
        print(textwrap.shorten(f"Great Expectations: {ge_variant(path)}", 400))


if __name__ == "__main__":
    sys.exit(main())
