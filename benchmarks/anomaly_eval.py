"""Recall and false-positive rate of anomaly detection on a generated history with injected faults.

For each of DATASETS synthetic inputs (each its own pipeline), DAYS daily runs are generated as
real column values: row counts with a trend, a weekly pattern and day-to-day noise; per column null
rates that wander from day to day; numeric columns whose mean has a trend, a weekly pattern and
day-level noise (amounts, scores), integer counts with discrete quantiles, growing ids,
categorical strings and customer ids. Every run is profiled (``--profiler``: by the product's
streaming Profiler over Arrow batches; default: the same statistics computed exactly with NumPy,
with the sketch errors of the Profiler added - 0.14% rank error (one sd) on quantiles, 0.41% on
distinct counts above 100,000 - which is faster; all inputs here stay under 100,000 rows).

Faults are injected into some runs (each run holds at most one), sized like real incidents:

- null_spike: one column's null rate jumps by 9 to 30 percentage points (e.g. 1% -> 10%+);
- row_drop: the run has 30% to 80% fewer rows than it would have had;
- distribution_shift: one numeric column's values shift by 3 to 8 standard deviations of that
  column's mean over the previous four weeks of runs (a shift of 3 sd cannot be caught at 95%
  recall by any per-run test that keeps false positives near 1%: the recall by size is printed);
- schema_drift: a column is dropped, a column is added, or a column changes type.

The detector then runs as the product runs it (``Detector.detect``, as the ``anomaly`` check
calls it): every run is compared with the profiles of the earlier runs that succeeded - faulty runs
never join the history (a caught fault fails its run, with ``on_anomaly: fail``), clean runs
flagged by mistake do (their operator accepts them). Printed: recall per fault type and overall, and the false-positive rate on clean
runs (share of clean runs, past ``min_history``, with at least one anomaly). ``--tune`` sweeps the
z threshold on the given seed. Defaults were tuned on seed 1; report figures on seed 2.

    python benchmarks/anomaly_eval.py [--seed 2] [--datasets 200] [--days 60] [--tune] [--profiler] [--cache DIR]
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from collections import Counter
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import agent_etl  # noqa: F401  (first, as in the CLI: it sets pyarrow's allocator up before pyarrow loads)

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from agent_etl.quality.anomaly import SENSITIVITY, Detector

DAY = 86400.0
START = 1_767_225_600.0  # 2026-01-01T00:00Z
QUANTILES = ("0.01", "0.05", "0.25", "0.5", "0.75", "0.95", "0.99")
FAULTS = ("null_spike", "row_drop", "distribution_shift", "schema_drift")
# fault sizes (uniform in these ranges)
NULL_JUMP = (0.09, 0.30)  # added to the column's null rate
ROW_DROP = (0.30, 0.80)  # share of the rows lost
SHIFT_SD = (3.0, 8.0)  # in standard deviations of the column's mean over the last four weeks of runs
NUMERIC = ("amount", "score")


class Dataset:
    """The hidden parameters of one synthetic input; ``day(d)`` draws one run's columns."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.rows0 = float(np.exp(rng.uniform(np.log(1_000), np.log(30_000))))
        self.rows_trend = rng.choice([0.0, rng.uniform(-0.003, 0.01)])  # per day, relative
        self.rows_week = self._weekly(rng.choice([0.0, rng.uniform(0.1, 0.5)]))  # weekend dip, log scale
        self.rows_noise = rng.uniform(0.02, 0.10)
        self.amount_mu = rng.uniform(2.0, 6.0)
        self.amount_sigma = rng.uniform(0.3, 1.0)
        self.amount_trend = rng.choice([0.0, rng.uniform(-0.002, 0.004)])
        self.amount_week = self._weekly(rng.choice([0.0, rng.uniform(0.05, 0.2)]))
        self.amount_noise = rng.uniform(0.01, 0.05)
        self.score_mean = rng.uniform(-50, 500)
        self.score_sd = rng.uniform(1, 40)
        self.score_noise = rng.uniform(0.02, 0.2) * self.score_sd
        self.qty_lambda = rng.uniform(0.5, 6.0)
        self.n_status = int(rng.integers(3, 7))
        self.status_p = rng.dirichlet(np.ones(self.n_status) * 2)
        self.customers = int(rng.integers(500, 50_000))
        self.null = {c: (0.0 if rng.random() < 0.4 else float(rng.uniform(0.001, 0.05)))
                     for c in ("amount", "score", "quantity", "status", "customer")}
        self.next_id = 1

    def _weekly(self, depth: float) -> np.ndarray:
        w = np.zeros(7)
        w[5:] = -depth  # Saturday, Sunday
        return w

    def rows(self, d: int) -> int:
        wd = (d + 3) % 7  # START is a Thursday
        log_n = (np.log(self.rows0) + np.log1p(self.rows_trend * d) + self.rows_week[wd]
                 + self.rng.normal(0, self.rows_noise))
        return max(50, int(np.exp(log_n)))

    def day(self, d: int, n: int) -> dict[str, tuple[str, str, np.ndarray, np.ndarray]]:
        """{column: (arrow type, kind, values, null mask)} of one run."""
        rng, wd = self.rng, (d + 3) % 7
        cols = {}
        ids = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
        self.next_id += n
        cols["id"] = ("int64", "numeric", ids.astype(float), np.zeros(n, bool))
        mu = self.amount_mu + self.amount_trend * d + self.amount_week[wd] + rng.normal(0, self.amount_noise)
        cols["amount"] = ("double", "numeric", rng.lognormal(mu, self.amount_sigma, n), self._nulls("amount", n))
        m = self.score_mean + rng.normal(0, self.score_noise)
        cols["score"] = ("double", "numeric", rng.normal(m, self.score_sd, n), self._nulls("score", n))
        lam = self.qty_lambda * np.exp(rng.normal(0, 0.03))
        cols["quantity"] = ("int64", "numeric", 1.0 + rng.poisson(lam, n), self._nulls("quantity", n))
        p = rng.dirichlet(self.status_p * 2000)
        cols["status"] = ("string", "string", rng.choice(self.n_status, n, p=p).astype(float), self._nulls("status", n))
        cols["customer"] = ("string", "string", rng.integers(0, self.customers, n).astype(float),
                            self._nulls("customer", n))
        return cols

    def _nulls(self, col: str, n: int) -> np.ndarray:
        base = self.null[col]
        if base == 0:
            return np.zeros(n, bool)
        rate = min(0.5, base * np.exp(self.rng.normal(0, 0.2)))
        return self.rng.random(n) < rate


def profile_of(cols: dict, rng: np.random.Generator) -> dict:
    """The Profiler's statistics of one run, computed exactly with NumPy plus the sketches' errors."""
    n = len(next(iter(cols.values()))[2])
    out = {"version": 1, "rows": n, "batches": max(1, n // 65536 + 1), "sampled_rows": None,
           "schema": {c: t for c, (t, _, _, _) in cols.items()}, "columns": {}}
    for name, (t, kind, values, nulls) in cols.items():
        v = values[~nulls]
        distinct = len(np.unique(v)) if len(v) else 0
        exact = distinct <= 100_000
        if not exact:  # the Profiler's HyperLogLog: 0.41% standard error
            distinct = int(distinct * (1 + rng.normal(0, 0.0041)))
        c = {"type": t, "kind": kind, "count": n, "nulls": int(nulls.sum()), "null_rate": float(nulls.mean()),
             "distinct": distinct, "distinct_exact": exact, "min": None, "max": None, "mean": None, "std": None,
             "quantiles": None, "histogram": None, "top": None, "length": None, "outliers": None}
        if kind == "numeric" and len(v):
            # the Profiler's KLL (k=800) answers within 0.35% of rank (99% confidence): sd ~0.14%
            ranks = np.clip(np.array([float(q) for q in QUANTILES]) + rng.normal(0, 0.0014, len(QUANTILES)), 0, 1)
            qs = np.quantile(v, ranks, method="inverted_cdf")  # a sketch answers with items it holds
            c.update(min=float(v.min()), max=float(v.max()), mean=float(v.mean()), std=float(v.std()),
                     quantiles={q: float(x) for q, x in zip(QUANTILES, qs)})
        out["columns"][name] = c
    return out


def profile_with_profiler(cols: dict) -> dict:
    """The same run profiled by the product's streaming Profiler over Arrow batches."""
    import pyarrow as pa

    from agent_etl.quality.profile import profile_table

    arrays = {}
    for name, (t, kind, values, nulls) in cols.items():
        if kind == "string":
            arr = pa.array(values.astype(np.int64).astype(str).astype(object), pa.string())
        elif t == "int64":
            arr = pa.array(values.astype(np.int64), pa.int64())
        else:
            arr = pa.array(values, pa.float64())
        arrays[name] = pa.compute.if_else(pa.array(nulls), pa.scalar(None, arr.type), arr) if nulls.any() else arr
    return profile_table(pa.table(arrays))


def inject(kind: str, cols: dict, history: list[dict], rng: np.random.Generator) -> tuple[str, float]:
    """Change one run's columns in place; the fault's description and size."""
    n = len(cols["id"][2])
    if kind == "null_spike":
        col = str(rng.choice(["amount", "score", "quantity", "status", "customer"]))
        t, k, v, nulls = cols[col]
        jump = rng.uniform(*NULL_JUMP)
        cols[col] = (t, k, v, nulls | (rng.random(n) < jump))
        return f"null rate of {col} +{jump:.0%}", jump
    if kind == "distribution_shift":
        col = str(rng.choice(NUMERIC))
        means = [p["columns"][col]["mean"] for p in history[-28:] if col in p["columns"]]
        sd = float(np.std([m for m in means if m is not None]))
        size = rng.uniform(*SHIFT_SD)
        t, k, v, nulls = cols[col]
        cols[col] = (t, k, v + size * sd * rng.choice([-1, 1]), nulls)
        return f"{col} shifted by {size:.1f} historical sd", size
    if kind == "schema_drift":
        what = rng.choice(["drop", "add", "retype"])
        if what == "drop":
            col = str(rng.choice([c for c in cols if c != "id"]))
            del cols[col]
            return f"column {col} dropped", 0.0
        if what == "add":
            cols["note"] = ("string", "string", rng.integers(0, 10, n).astype(float), np.zeros(n, bool))
            return "column note added", 0.0
        t, k, v, nulls = cols["quantity"]
        cols["quantity"] = ("string", "string", v, nulls)
        return "quantity int64 -> string", 0.0
    raise ValueError(kind)


def simulate(seed: int, datasets: int, days: int, min_history: int, use_profiler: bool = False,
             fault_rate: float = 0.08) -> list[dict]:
    """Generate every run: [{dataset, day, time, fault, what, size, profile}], datasets in turn, days in order."""
    rng = np.random.default_rng(seed)
    runs = []
    for ds in range(datasets):
        data = Dataset(np.random.default_rng(rng.integers(1 << 62)))
        clean: list[dict] = []
        for d in range(days):
            n = data.rows(d)
            fault, what, size = None, None, 0.0
            if d >= min_history + 3 and rng.random() < fault_rate:
                fault = str(rng.choice(FAULTS))
                if fault == "row_drop":
                    size = rng.uniform(*ROW_DROP)
                    n = max(20, int(n * (1 - size)))
                    what = f"{size:.0%} fewer rows"
            cols = data.day(d, n)
            if fault not in (None, "row_drop"):
                what, size = inject(fault, cols, clean, rng)
            profile = profile_with_profiler(cols) if use_profiler else profile_of(cols, rng)
            if fault is None:
                clean.append(profile)
            runs.append({"dataset": ds, "day": d, "fault": fault, "what": what, "size": size, "profile": profile,
                         "time": START + d * DAY + float(rng.uniform(1, 3) * 3600)})
    return runs


def evaluate(runs: list[dict], detector: Detector, thresholds: list[float] | None = None) -> list[dict]:
    """Run the detector over every run in order, as the product does; one outcome per judged run.

    A faulty run never becomes part of a later run's history (a caught fault fails its run; a missed
    one is left out too, so that every threshold of a sweep sees the same histories). A clean run
    flagged by mistake stays in (its operator accepts it). With ``thresholds``, ``flagged`` maps
    each z threshold to the verdict (from one forecast per run); without, it is the product's
    ``detect`` at the detector's own sensitivity."""
    schema_only = replace(detector, metrics=("schema",))
    out = []
    history: list[dict] = []
    times: list[float] = []
    for i, r in enumerate(runs):
        if i and runs[i - 1]["dataset"] != r["dataset"]:
            history, times = [], []
        judged = len(history) >= detector.min_history
        if thresholds is None:
            v = detector.detect(f"ds{r['dataset']}", history, r["profile"], times, r["time"])
            flagged = {detector.threshold: bool(v.anomalies)}
            found = v.anomalies
        else:
            found = schema_only.detect("x", history, r["profile"], times, r["time"]).anomalies
            a = detector.assess(history, r["profile"], times, r["time"]) if judged else None
            flagged = {}
            for z in thresholds:
                hit = a is not None and bool(a.flagged(z).any())
                flagged[z] = bool(found) or hit
        if judged:
            out.append({**{k: r[k] for k in ("dataset", "day", "fault", "what", "size")}, "flagged": flagged,
                        "found": found})
        if r["fault"] is None:
            history.append(r["profile"])
            times.append(r["time"])
    return out


def summary(outcomes: list[dict], z: float) -> dict:
    faults = [o for o in outcomes if o["fault"]]
    clean = [o for o in outcomes if not o["fault"]]
    per = {f: [o["flagged"][z] for o in faults if o["fault"] == f] for f in FAULTS}
    return {"recall": {f: (sum(v), len(v)) for f, v in per.items()},
            "overall": (sum(o["flagged"][z] for o in faults), len(faults)),
            "fp": (sum(o["flagged"][z] for o in clean), len(clean))}


def _pct(pair: tuple[int, int]) -> str:
    return f"{pair[0]:>5} of {pair[1]:>5} = {pair[0] / max(1, pair[1]):6.1%}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=2, help="2 = evaluation seed; defaults were tuned on seed 1")
    ap.add_argument("--datasets", type=int, default=200)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--sensitivity", default="medium")
    ap.add_argument("--tune", action="store_true", help="sweep the z threshold on this seed")
    ap.add_argument("--profiler", action="store_true", help="profile real Arrow batches with the product's Profiler")
    ap.add_argument("--cache", help="directory to keep the generated runs in between invocations")
    ap.add_argument("--examples", type=int, default=0, help="print this many missed faults and false positives")
    args = ap.parse_args()
    sens = float(args.sensitivity) if args.sensitivity not in SENSITIVITY else args.sensitivity
    detector = Detector(sensitivity=sens)
    t0 = time.perf_counter()
    cache = Path(args.cache) / f"anomaly_runs_{args.seed}_{args.datasets}_{args.days}_{int(args.profiler)}.pickle" \
        if args.cache else None
    if cache is not None and cache.exists():
        runs = pickle.loads(cache.read_bytes())
    else:
        runs = simulate(args.seed, args.datasets, args.days, detector.min_history, args.profiler)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_bytes(pickle.dumps(runs))
    t1 = time.perf_counter()
    how = "the Profiler over Arrow batches" if args.profiler else "NumPy statistics plus the sketches' errors"
    print(f"seed {args.seed}: {args.datasets} inputs x {args.days} daily runs = {len(runs)} profiles by {how}, "
          f"generated in {t1 - t0:.1f}s")
    print(f"faults: null_spike +{NULL_JUMP[0]:.0%}..{NULL_JUMP[1]:.0%} null rate; row_drop {ROW_DROP[0]:.0%}.."
          f"{ROW_DROP[1]:.0%} fewer rows; distribution_shift {SHIFT_SD[0]:g}..{SHIFT_SD[1]:g} sd of the column "
          "mean's last 4 weeks; schema_drift: a column dropped, added or retyped")
    if args.tune:
        grid = [3.0, 3.25, 3.4, 3.5, 3.6, 3.7, 3.8, 4.0, 4.5, 5.0, 5.5, 6.0]
        outcomes = evaluate(runs, detector, grid)
        print(f"{'z':>5} {'recall':>7} {'fp rate':>8}  " + " ".join(f"{f:>18}" for f in FAULTS))
        for z in grid:
            s = summary(outcomes, z)
            per = " ".join(f"{s['recall'][f][0] / max(1, s['recall'][f][1]):>18.1%}" for f in FAULTS)
            print(f"{z:>5} {s['overall'][0] / max(1, s['overall'][1]):>7.1%} "
                  f"{s['fp'][0] / max(1, s['fp'][1]):>8.2%}  {per}")
        return
    outcomes = evaluate(runs, detector)
    t2 = time.perf_counter()
    z = detector.threshold
    s = summary(outcomes, z)
    print(f"detector: sensitivity {args.sensitivity} (z {z:g}), min_history {detector.min_history}, seasonality "
          f"{detector.seasonality}; {len(runs)} runs judged in {t2 - t1:.1f}s ({(t2 - t1) / len(runs) * 1e3:.1f} ms a run)")
    for f in FAULTS:
        print(f"  recall {f:<19} {_pct(s['recall'][f])}")
    print(f"  recall overall             {_pct(s['overall'])}   (goal >= 95%)")
    print(f"  false positives, clean runs {_pct(s['fp'])}   (goal <= 1%)")
    bins = {"row_drop": [0.3, 0.4, 0.5, 0.8], "distribution_shift": [3, 4, 5, 6, 8], "null_spike": [0.09, 0.15, 0.3]}
    for f, edges in bins.items():
        parts = []
        for lo, hi in pairwise(edges):
            sel = [o["flagged"][z] for o in outcomes if o["fault"] == f and lo <= o["size"] < hi]
            parts.append(f"{lo:g}-{hi:g}: {sum(sel) / max(1, len(sel)):.0%} of {len(sel)}")
        print(f"  recall by size, {f}: " + ", ".join(parts))
    parts = []
    for lo, hi in ((7, 14), (14, 28), (28, 61)):
        sel = [o["flagged"][z] for o in outcomes if o["fault"] and lo <= o["day"] < hi]
        parts.append(f"{lo}-{hi - 1} earlier runs: {sum(sel) / max(1, len(sel)):.0%} of {len(sel)}")
    print("  recall by history length (days): " + ", ".join(parts))
    fp_metrics = Counter(a["metric"] for o in outcomes if not o["fault"] for a in o["found"])
    if fp_metrics:
        print(f"  metrics of the false positives: {dict(fp_metrics)}")
    if args.examples:
        missed = [o for o in outcomes if o["fault"] and not o["flagged"][z]][: args.examples]
        for o in missed:
            print(f"    missed {o['fault']} ({o['what']}) on day {o['day']} of ds{o['dataset']}")
        wrong = [o for o in outcomes if not o["fault"] and o["flagged"][z]][: args.examples]
        for o in wrong:
            print(f"    false positive on day {o['day']}: {o['found'][0]['message']}")


if __name__ == "__main__":
    main()
