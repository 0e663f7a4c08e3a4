"""Streaming profiles against exact NumPy/pandas values on generated data."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from datasketches import kll_doubles_sketch

from agent_etl.exceptions import SpecError
from agent_etl.quality.numeric import KLL_K
from agent_etl.quality.profile import Profiler
from agent_etl.quality.sketches import HyperLogLog

QS = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
RANK_ERROR = kll_doubles_sketch.get_normalized_rank_error(KLL_K, False)


def profile(table: pa.Table, sizes=(7_000, 13_000, 50_000), **kw) -> tuple[dict, Profiler]:
    """Profile ``table`` cut into batches of cycling, uneven sizes."""
    p = Profiler(**kw)
    start, i = 0, 0
    while start < len(table):
        n = sizes[i % len(sizes)]
        p.observe(table.slice(start, n).to_batches()[0] if n else table.slice(start, 0))
        start, i = start + n, i + 1
    out = p.result()
    json.dumps(out, allow_nan=False)  # JSON-safe: the run store keeps it as JSON
    return out, p


def test_moments_are_exact_and_stable_with_a_large_offset():
    rng = np.random.default_rng(1)
    x = 1e9 + rng.normal(0, 1e-3, 300_000)  # the variance is 1e-24 of the squared mean
    col, _ = profile(pa.table({"x": x}))
    c = col["columns"]["x"]
    ref = x.astype(np.longdouble)
    mean = ref.mean()
    std = np.sqrt(((ref - mean) ** 2).sum() / (len(x) - 1))
    assert c["mean"] == pytest.approx(float(mean), rel=1e-12)
    assert c["std"] == pytest.approx(float(std), rel=1e-9)
    assert (c["min"], c["max"], c["count"], c["nulls"]) == (x.min(), x.max(), len(x), 0)


def test_quantiles_are_within_the_sketch_rank_error():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.lognormal(0, 1.5, 150_000), rng.normal(50, 5, 100_000)])
    c = profile(pa.table({"x": x}))[0]["columns"]["x"]
    s = np.sort(x)
    for q in QS:
        rank = np.searchsorted(s, c["quantiles"][str(q)], side="right") / len(s)
        assert abs(rank - q) <= 2 * RANK_ERROR, (q, rank)


def test_distinct_is_exact_under_the_threshold_and_hyperloglog_above():
    rng = np.random.default_rng(3)
    small = rng.integers(0, 5_000, 200_000)
    big = rng.integers(0, 2**40, 200_000)
    words = pa.array(np.char.add("w", rng.integers(0, 30_000, 200_000).astype(str)))
    out = profile(pa.table({"small": small, "big": big, "words": words}), exact_distinct=10_000)[0]["columns"]
    assert out["small"]["distinct_exact"] and out["small"]["distinct"] == len(np.unique(small))
    for name, values in (("big", big), ("words", words.to_numpy(zero_copy_only=False))):
        true = pd.Series(values).nunique()
        assert not out[name]["distinct_exact"]
        assert abs(out[name]["distinct"] / true - 1) <= 4 * HyperLogLog().relative_error, name


def test_hyperloglog_error_matches_its_bound_over_many_sets():
    errors = []
    for seed in range(30):
        h = HyperLogLog()
        h.add(np.random.default_rng(seed).integers(0, 2**64, 300_000, dtype=np.uint64))
        errors.append(h.estimate() / 300_000 - 1)
    assert abs(np.mean(errors)) < 2 * h.relative_error / np.sqrt(30) + 1e-3
    assert np.std(errors) < 1.5 * h.relative_error


def test_nulls_all_null_columns_nan_and_inf():
    x = np.arange(10_000, dtype=float)
    x[::10] = np.nan
    x[5] = np.inf
    t = pa.table({"x": pa.array(x, from_pandas=False), "n": pa.array(np.where(np.arange(10_000) % 4 == 0, None, 1.0)),
                  "allnull": pa.nulls(10_000, pa.int64())})
    out = profile(t)[0]["columns"]
    finite = x[np.isfinite(x)]
    assert out["x"]["nulls"] == 0 and out["x"]["nonfinite"] == 1001
    assert out["x"]["mean"] == pytest.approx(finite.mean(), rel=1e-12)
    assert out["x"]["distinct"] == len(np.unique(x[~np.isnan(x)]))  # inf counts, NaN does not (as pandas)
    assert out["n"]["nulls"] == 2_500 and out["n"]["null_rate"] == 0.25 and out["n"]["distinct"] == 1
    a = out["allnull"]
    assert (a["count"], a["nulls"], a["null_rate"], a["distinct"], a["mean"], a["quantiles"]) == (0, 10_000, 1.0, 0,
                                                                                                  None, None)


def test_an_empty_stream_and_a_stream_of_empty_batches():
    assert Profiler().result() == {"version": 1, "rows": 0, "batches": 0, "sampled_rows": None, "schema": {},
                                   "columns": {}}
    p = Profiler()
    p.observe(pa.table({"x": pa.array([], pa.float64()), "s": pa.array([], pa.string())}).to_batches()[0]
              if False else pa.RecordBatch.from_pylist([], schema=pa.schema([("x", pa.float64()), ("s", pa.string())])))
    out = p.result()
    assert out["rows"] == 0 and out["schema"] == {"x": "double", "s": "string"}
    assert out["columns"]["x"]["count"] == 0 and out["columns"]["x"]["histogram"] is None
    assert out["columns"]["s"]["top"] is None and out["columns"]["s"]["length"] is None


def test_strings_top_values_lengths_and_bounds():
    rng = np.random.default_rng(4)
    words = np.array(["apple", "kiwi", "banana", "fig", "cherry", "date", "plum", "lime", "pear", "grape", "yuzu",
                      "é-accented"])
    values = pd.Series(words[rng.zipf(1.6, 100_000) % len(words)])
    values[rng.random(100_000) < 0.1] = None
    c = profile(pa.table({"s": pa.array(values)}))[0]["columns"]["s"]
    expected = values.value_counts().head(10)
    assert c["kind"] == "string" and c["top_exact"]
    assert [(t["value"], t["count"]) for t in c["top"]] == list(zip(expected.index, expected.tolist()))
    lengths = values.dropna().str.len()
    assert c["length"] == {"min": lengths.min(), "max": lengths.max(), "mean": pytest.approx(lengths.mean())}
    assert (c["min"], c["max"], c["nulls"]) == (values.min(), values.max(), values.isna().sum())


def test_top_k_of_many_values_keeps_the_heavy_hitters():
    rng = np.random.default_rng(5)
    heavy = np.repeat(np.array(["h1", "h2", "h3"]), [30_000, 20_000, 10_000])
    noise = np.char.add("n", rng.integers(0, 200_000, 140_000).astype(str))
    values = rng.permutation(np.concatenate([heavy, noise]))
    c = profile(pa.table({"s": values}))[0]["columns"]["s"]
    assert not c["top_exact"]  # more than 4096 values: Misra-Gries
    top = {t["value"]: t["count"] for t in c["top"][:3]}
    assert list(top) == ["h1", "h2", "h3"]
    for value, true in (("h1", 30_000), ("h2", 20_000), ("h3", 10_000)):
        assert true - len(values) / 1025 <= top[value] <= true


def test_unique_strings_get_no_top():
    ids = pa.array([f"id-{i}" for i in range(150_000)])
    c = profile(pa.table({"id": ids}))[0]["columns"]["id"]
    assert c["top"] is None and not c["distinct_exact"]


def test_dates_timestamps_and_booleans():
    rng = np.random.default_rng(6)
    days = np.datetime64("2021-03-01") + rng.integers(0, 900, 50_000).astype("timedelta64[D]")
    stamps = np.datetime64("2021-03-01T00:00:00", "us") + rng.integers(0, 10**13, 50_000).astype("timedelta64[us]")
    flags = rng.random(50_000) < 0.3
    t = pa.table({"d": days, "ts": pa.array(stamps, pa.timestamp("us", tz="UTC")), "b": flags})
    out = profile(t)[0]["columns"]
    assert out["d"]["kind"] == "temporal" and out["d"]["min"] == str(days.min()) and out["d"]["max"] == str(days.max())
    assert out["d"]["distinct"] == len(np.unique(days)) and out["d"]["top"] is not None
    assert dt.datetime.fromisoformat(out["ts"]["max"]) == pd.Timestamp(stamps.max(), tz="UTC").to_pydatetime()
    assert out["ts"]["top"] is None  # many values: no top-k for timestamps
    b = out["b"]
    assert (b["kind"], b["min"], b["max"], b["distinct"]) == ("boolean", False, True, 2)
    assert {t["value"]: t["count"] for t in b["top"]} == {True: int(flags.sum()), False: int((~flags).sum())}


def test_histogram_counts_are_exact_while_the_range_widens():
    # ascending values: every batch falls outside the range seen so far and the bins must widen
    x = np.sort(np.random.default_rng(7).normal(0, 100, 200_000))
    c, _ = profile(pa.table({"x": x}))
    h = c["columns"]["x"]["histogram"]
    assert len(h["counts"]) <= 30 and sum(h["counts"]) == len(x)
    expected, _ = np.histogram(x, bins=np.array(h["edges"]))
    assert h["counts"] == expected.tolist()
    assert h["edges"][0] <= x.min() and h["edges"][-1] >= x.max()


@pytest.mark.parametrize("dist, method", [("normal", "zscore"), ("lognormal", "mad"), ("uniform", "zscore")])
def test_outlier_method_follows_the_shape_and_counts_match(dist, method):
    rng = np.random.default_rng(8)
    x = {"normal": lambda: rng.normal(10, 2, 200_000), "lognormal": lambda: rng.lognormal(0, 1, 200_000),
         "uniform": lambda: rng.random(200_000)}[dist]()
    c, p = profile(pa.table({"x": x}))
    o = c["columns"]["x"]["outliers"]
    assert o["method"] == method and o["auto"]
    exact = int(((x < o["low"]) | (x > o["high"])).sum())
    hist = p.columns["x"].histogram
    edge_bins = [hist.counts[min(max(int((t - hist.origin) / hist.width), 0), hist.bins - 1)] for t in (o["low"],
                                                                                                      o["high"])]
    assert abs(o["count"] - exact) <= sum(edge_bins)


def test_configured_outlier_methods():
    x = np.random.default_rng(9).normal(0, 1, 100_000)
    out = profile(pa.table({"a": x, "b": x}), outliers={"a": "iqr", "b": "mad"})[0]["columns"]
    q25, q50, q75 = np.quantile(x, [0.25, 0.5, 0.75])
    assert out["a"]["outliers"]["method"] == "iqr" and not out["a"]["outliers"]["auto"]
    assert out["a"]["outliers"]["high"] == pytest.approx(q75 + 1.5 * (q75 - q25), rel=0.02)
    mad = np.median(np.abs(x - q50))
    assert out["b"]["outliers"]["high"] == pytest.approx(q50 + 3.5 / 0.6745 * mad, rel=0.02)


def test_only_the_listed_columns_and_their_mistakes():
    t = pa.table({"amount": [1.0, 2.0], "name": ["a", "b"]})
    p = Profiler(["amount"])
    p.observe(t)
    assert list(p.result()["columns"]) == ["amount"]
    with pytest.raises(SpecError) as e:
        Profiler(["amuont"], where="profile of quality group on 'orders'").bind(t.schema)
    assert "'amuont' is not in the stream" in str(e.value) and "did you mean 'amount'" in str(e.value)
    with pytest.raises(SpecError, match="'name' is string, not a number"):
        Profiler(outliers={"name": "iqr"}).bind(t.schema)
    with pytest.raises(SpecError, match="unknown outlier method 'tukey'"):
        Profiler(outliers={"amount": "tukey"})


def test_memory_stays_bounded_as_rows_grow():
    """The sketches' state does not grow with the rows: the same after 400k rows as after 100k."""
    rng = np.random.default_rng(10)
    p = Profiler()
    sizes = []
    for i in range(8):
        p.observe(pa.record_batch({"x": rng.normal(size=50_000), "s": np.char.add("s", rng.integers(0, 10**9, 50_000)
                                                                                    .astype(str))}))
        if i in (3, 7):  # both columns are past the exact distinct set (100k values) by then
            x, s = p.columns["x"], p.columns["s"]
            assert x.distinct._set is None and s.distinct._set is None
            sizes.append((x.histogram.counts.nbytes, x.distinct._hll.registers.nbytes, s.distinct._hll.registers.nbytes,
                          x.topk, s.topk, len(x.kll.serialize()) // 1000))
    assert sizes[0] == sizes[1]


def test_dictionary_binary_and_nested_columns():
    t = pa.table({"cat": pa.array(["a", "b", "a", None]).dictionary_encode(),
                  "raw": pa.array([b"\x00", b"\x01", b"\x00", b"\x02"]),
                  "tags": pa.array([[1, 2], [3], [1, 2], None]),
                  "money": pa.array([1, 2, 3, 4], pa.decimal128(10, 2))})
    out = profile(t, sizes=(3,))[0]["columns"]
    assert out["cat"]["kind"] == "string" and out["cat"]["distinct"] == 2 and out["cat"]["top"][0] == {"value": "a",
                                                                                                         "count": 2}
    assert (out["raw"]["kind"], out["raw"]["distinct"]) == ("other", 3)
    assert (out["tags"]["kind"], out["tags"]["distinct"], out["tags"]["nulls"]) == ("other", 2, 1)
    assert (out["money"]["kind"], out["money"]["mean"], out["money"]["max"]) == ("numeric", 2.5, 4.0)


def test_integers_beyond_float_precision_keep_exact_bounds():
    t = pa.table({"u": pa.array(np.array([2**64 - 1, 1, 2**63, 1], dtype=np.uint64)),
                  "i": pa.array([2**62 + 1, 2**62 + 3, -5, -5])})
    out = profile(t, sizes=(3,))[0]["columns"]
    assert (out["u"]["min"], out["u"]["max"], out["u"]["distinct"]) == (1, 2**64 - 1, 3)
    assert (out["i"]["min"], out["i"]["max"], out["i"]["distinct"]) == (-5, 2**62 + 3, 3)
