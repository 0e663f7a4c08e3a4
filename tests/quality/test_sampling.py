"""Samplers tested statistically with fixed seeds (chi-square and Kolmogorov-Smirnov against
critical values at 0.1%), for reproducibility, and through the `sample` transform."""

from __future__ import annotations

import textwrap
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from agent_etl.exceptions import SpecError
from agent_etl.quality.sampling import Reservoir, StratifiedReservoir, Systematic
from agent_etl.spec import Pipeline
from agent_etl.testing import run_transform

CHI2_999 = {9: 27.88, 3: 16.27}  # chi-square critical values at p = 0.001 by degrees of freedom
KS_999 = 1.95  # Kolmogorov-Smirnov: sqrt(n) * D above this has p < 0.001


def feed(sampler, table: pa.Table, batch: int) -> pa.Table:
    for b in table.to_batches(max_chunksize=batch):
        sampler.observe(b)
    return sampler.result()


def chi2(observed: np.ndarray, expected: np.ndarray) -> float:
    return float(((observed - expected) ** 2 / expected).sum())


def rows(n: int) -> pa.Table:
    return pa.table({"i": np.arange(n)})


def test_reservoir_is_reproducible_whatever_the_batches():
    t = rows(50_000)
    a = feed(Reservoir(500, seed=7), t, 4_096)["i"].to_pylist()
    b = feed(Reservoir(500, seed=7), t, 333)["i"].to_pylist()
    c = feed(Reservoir(500, seed=8), t, 4_096)["i"].to_pylist()
    assert a == b and a != c
    assert len(a) == 500 == len(set(a)) and a == sorted(a)  # distinct rows, in stream order


def test_reservoir_of_a_short_stream_keeps_everything():
    assert feed(Reservoir(500, seed=1), rows(120), 50)["i"].to_pylist() == list(range(120))
    assert Reservoir(5).result() is None


def test_reservoir_inclusion_is_uniform_over_the_stream():
    # 200 samples of 100 from 10,000 rows: each decile of the stream should hold 1/10 of the picks
    t = rows(10_000)
    counts = np.zeros(10)
    for seed in range(200):
        picked = feed(Reservoir(100, seed=seed), t, 2_500)["i"].to_numpy()
        counts += np.bincount(picked // 1_000, minlength=10)
    assert chi2(counts, np.full(10, counts.sum() / 10)) < CHI2_999[9]


def test_reservoir_sample_follows_the_stream_distribution_ks():
    values = np.random.default_rng(0).random(200_000)
    picked = np.sort(feed(Reservoir(5_000, seed=3), pa.table({"v": values}), 8_192)["v"].to_numpy())
    n = len(picked)
    d = np.max(np.maximum(np.arange(1, n + 1) / n - picked, picked - np.arange(n) / n))  # against U(0, 1)
    assert np.sqrt(n) * d < KS_999


def test_reservoir_of_sorted_data_is_not_biased_to_either_end():
    # the mean of a uniform sample of 0..N-1 is (N-1)/2 with standard error N / sqrt(12 k)
    n, k = 1_000_000, 2_000
    picked = feed(Reservoir(k, seed=11), rows(n), 65_536)["i"].to_numpy()
    assert abs(picked.mean() - (n - 1) / 2) < 4 * n / np.sqrt(12 * k)


def strata_table(n: int = 40_000) -> pa.Table:
    rng = np.random.default_rng(5)
    group = rng.choice(np.array(["a", "b", "c", "d"]), n, p=[0.5, 0.3, 0.15, 0.05])
    return pa.table({"i": np.arange(n), "g": group})


def test_stratified_proportional_allocation_is_exact():
    t = strata_table()
    sample = feed(StratifiedReservoir("g", size=1_000, seed=2), t, 3_000)
    sizes = Counter(t["g"].to_pylist())
    got = Counter(sample["g"].to_pylist())
    assert sum(got.values()) == 1_000
    for key, n in sizes.items():
        assert abs(got[key] - 1_000 * n / len(t)) < 1  # largest remainder: off by less than one row


def test_stratified_fixed_per_stratum_and_uniform_within():
    t = strata_table()
    counts = np.zeros(10)
    d_rows = t.filter(pa.compute.equal(t["g"], "d"))["i"].to_numpy()
    for seed in range(60):
        sample = feed(StratifiedReservoir("g", per_stratum=50, seed=seed), t, 10_000)
        assert Counter(sample["g"].to_pylist()) == {"a": 50, "b": 50, "c": 50, "d": 50}
        picked = sample.filter(pa.compute.equal(sample["g"], "d"))["i"].to_numpy()
        counts += np.bincount(np.searchsorted(d_rows, picked) * 10 // len(d_rows), minlength=10)
    assert chi2(counts, np.full(10, counts.sum() / 10)) < CHI2_999[9]


def test_stratified_null_is_a_stratum_and_too_many_strata_is_an_error():
    t = pa.table({"g": pa.array(["x", None, "x", None, "y"]), "i": np.arange(5)})
    sample = feed(StratifiedReservoir("g", per_stratum=1, seed=0), t, 2)
    assert sorted(Counter(sample["g"].to_pylist()).items(), key=str) == [("x", 1), ("y", 1), (None, 1)]
    many = pa.table({"g": np.arange(101)})
    with pytest.raises(ValueError, match="more than 100 distinct values"):
        feed(StratifiedReservoir("g", per_stratum=1, max_strata=100), many, 1_000)


def test_systematic_every_kth_across_batches_with_a_uniform_start():
    t = rows(10_000)
    starts = []
    for seed in range(400):
        s = Systematic(0.1, seed=seed)
        picked = np.concatenate([s.observe(b)["i"].to_numpy() for b in t.to_batches(max_chunksize=777)])
        assert len(picked) == 1_000 and set(np.diff(picked)) == {10}
        starts.append(picked[0])
    counts = np.bincount(starts, minlength=10)
    assert chi2(counts, np.full(10, 40.0)) < CHI2_999[9]


def test_systematic_with_a_fractional_interval_keeps_the_exact_share():
    s = Systematic(0.3, seed=1)
    picked = np.concatenate([s.observe(b)["i"].to_numpy() for b in rows(10_000).to_batches(max_chunksize=999)])
    assert len(picked) == 3_000 and set(np.diff(picked)) <= {3, 4}


async def test_the_sample_transform(tmp_path):
    t = strata_table(20_000)
    out = await run_transform("sample", {"size": 300, "seed": 4}, {"src": t}, base_dir=tmp_path, batch_size=100)
    again = await run_transform("sample", {"size": 300, "seed": 4}, {"src": t}, base_dir=tmp_path)
    assert len(out) == 300 and out.equals(again) and out.schema == t.schema
    out = await run_transform("sample", {"method": "stratified", "by": "g", "per_stratum": 20}, {"src": t},
                              base_dir=tmp_path)
    assert Counter(out["g"].to_pylist()) == {"a": 20, "b": 20, "c": 20, "d": 20}
    out = await run_transform("sample", {"method": "systematic", "fraction": 0.01}, {"src": t}, base_dir=tmp_path)
    assert len(out) == 200
    empty = await run_transform("sample", {"size": 5}, {"src": t.slice(0, 0)}, base_dir=tmp_path)
    assert len(empty) == 0


async def test_the_sample_transform_names_a_missing_stratum_column(tmp_path):
    with pytest.raises(Exception, match="stratum column 'grp' not in the input") as e:
        await run_transform("sample", {"method": "stratified", "by": "grp", "size": 5}, {"src": strata_table(10)},
                            base_dir=tmp_path)
    assert "did you mean 'g'" in str(e.value) or "the input has" in str(e.value)


@pytest.mark.parametrize("options, message", [
    ("method: reservoir\n    fraction: 0.1", "method reservoir takes `size`"),
    ("method: systematic\n    size: 10", "method systematic takes `fraction`"),
    ("method: stratified\n    size: 10", "method stratified needs `by`"),
    ("method: stratified\n    by: g\n    size: 10\n    per_stratum: 2", "not both"),
    ("method: bernoulli\n    size: 10", "method"),
])
def test_bad_sample_options_are_spec_errors_with_the_line(tmp_path, options, message):
    text = textwrap.dedent("""\
        version: 1
        name: s
        extract:
          src: {tool: csv, path: in.csv}
        transform:
          - name: picked
            input: src
            tool: sample
            OPTIONS
        """).replace("OPTIONS", options)
    with pytest.raises(SpecError) as e:
        Pipeline.from_text(text, base_dir=tmp_path)
    assert message in str(e.value) and "line" in str(e.value)
