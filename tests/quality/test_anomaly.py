"""Anomaly detection against history: the detector on profiles of generated runs (flat, trending and
weekly histories; each kind of fault; clean runs with fixed seeds), and on profiles made by the
product's streaming Profiler from real Arrow tables."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from agent_etl.quality.anomaly import Detector
from agent_etl.quality.metrics import metric_table, metric_values
from agent_etl.quality.profile import profile_table

DAY = 86400.0
MONDAY = 1_767_571_200.0  # 2026-01-05T00:00Z
KEYS = {"input", "metric", "column", "quantile", "value", "expected", "low", "high", "score", "severity", "message"}


def profile(rows: float, *, null_rate: float = 0.01, mean: float = 100.0, sd: float = 10.0,
            status: int = 3, amount_type: str = "double") -> dict:
    """A profile in the Profiler's shape: ``amount`` ~ normal(mean, sd), ``status`` with ``status`` values."""
    rows = round(rows)
    z = {"0.01": -2.326, "0.05": -1.645, "0.25": -0.674, "0.5": 0.0, "0.75": 0.674, "0.95": 1.645, "0.99": 2.326}
    amount = {"type": amount_type, "kind": "numeric", "count": rows, "nulls": int(rows * null_rate),
              "null_rate": null_rate, "distinct": int(rows * (1 - null_rate)), "distinct_exact": True,
              "min": mean - 4 * sd, "max": mean + 4 * sd, "mean": mean, "std": sd,
              "quantiles": {q: mean + k * sd for q, k in z.items()}, "histogram": None, "top": None,
              "length": None, "outliers": None}
    state = {"type": "string", "kind": "string", "count": rows, "nulls": 0, "null_rate": 0.0, "distinct": status,
             "distinct_exact": True, "min": None, "max": None, "mean": None, "std": None, "quantiles": None,
             "histogram": None, "top": None, "length": {"min": 4, "max": 4, "mean": 4.0}, "outliers": None}
    return {"version": 1, "rows": rows, "batches": 1, "sampled_rows": None,
            "schema": {"amount": amount_type, "status": "string"}, "columns": {"amount": amount, "status": state}}


def noisy_history(rng: np.random.Generator, days: int, rows: float = 10_000, weekend: float = 1.0,
                  growth: float = 0.0) -> tuple[list[dict], list[float]]:
    """Daily runs from a Monday: row counts with growth, a weekend factor and 4% noise; null rates
    around 1%; the mean of ``amount`` moving by 0.5 around 100."""
    out, times = [], []
    for d in range(days):
        factor = weekend if d % 7 in (5, 6) else 1.0
        n = rows * (1 + growth) ** d * factor * np.exp(rng.normal(0, 0.04))
        out.append(profile(n, null_rate=0.01 * np.exp(rng.normal(0, 0.15)), mean=100 + rng.normal(0, 0.5)))
        times.append(MONDAY + d * DAY + 3600)
    return out, times


def at(day: int) -> float:
    return MONDAY + day * DAY + 3600


def test_flat_history_takes_no_wiggle_for_an_anomaly_but_flags_a_drop():
    history = [profile(1000, null_rate=0.0, mean=50.0, sd=5.0) for _ in range(10)]
    det = Detector()
    assert det.detect("orders", history, profile(1000, null_rate=0.0, mean=50.0, sd=5.0)).anomalies == []
    assert det.detect("orders", history, profile(1004, null_rate=0.0, mean=50.01, sd=5.0)).anomalies == []
    found = det.detect("orders", history, profile(690, null_rate=0.0, mean=50.0, sd=5.0)).anomalies
    assert [(a["metric"], a["value"], a["expected"]) for a in found if a["metric"] == "row_count"] == [
        ("row_count", 690, 1000)]
    rc = next(a for a in found if a["metric"] == "row_count")
    assert rc["low"] > 690 and rc["high"] < 1100 and rc["severity"] == "warn"
    assert "row count is 690, expected 1,000" in rc["message"]


def test_a_trend_is_followed_and_a_drop_against_it_flagged():
    history = [profile(10_000 * 1.03**d, mean=100 + 2 * d) for d in range(20)]
    times = [at(d) for d in range(20)]
    on_trend = profile(10_000 * 1.03**20, mean=140)
    assert on_trend["rows"] > max(p["rows"] for p in history)  # beyond anything seen: only a trend explains it
    det = Detector(seasonality="none")
    assert det.detect("orders", history, on_trend, times, at(20)).anomalies == []
    found = det.detect("orders", history, profile(10_000 * 1.03**20 * 0.6, mean=140), times, at(20)).anomalies
    assert {a["metric"] for a in found} == {"row_count", "distinct"}


def test_weekends_are_compared_with_weekends():
    rng = np.random.default_rng(7)
    history, times = noisy_history(rng, 28, weekend=0.5)
    saturday, wednesday = 33, 30  # days after the history's Monday
    low_day = profile(10_000 * 0.5, mean=100)
    det = Detector()
    verdict = det.detect("orders", history, low_day, times, at(saturday))
    assert verdict.anomalies == [] and verdict.seasonal
    flagged = det.detect("orders", history, low_day, times, at(wednesday)).anomalies
    assert "row_count" in {a["metric"] for a in flagged}
    # without the weekly baseline half the volume is normal on any day: the spread of all days is wide
    assert Detector(seasonality="none").detect("orders", history, low_day, times, at(wednesday)).anomalies == []


def test_below_min_history_there_is_no_verdict_except_on_schema():
    history = [profile(1000) for _ in range(3)]
    verdict = Detector(min_history=7).detect("orders", history, profile(10))
    assert verdict.learning and verdict.anomalies == []
    assert verdict.status == "learning (3 of 7 runs)"
    drift = Detector(min_history=7).detect("orders", history[:1], profile(1000, amount_type="string"))
    assert [(a["metric"], a["column"], a["value"], a["expected"]) for a in drift.anomalies] == [
        ("schema", "amount", "string", "double")]
    assert Detector().detect("orders", [], profile(1000)).status == "learning (0 of 7 runs)"


@pytest.mark.parametrize("fault, metric", [
    ("null_spike", "null_rate"), ("row_drop", "row_count"), ("shift", "mean"), ("added", "schema"),
    ("removed", "schema"), ("retyped", "schema")])
def test_each_kind_of_fault_is_found(fault, metric):
    rng = np.random.default_rng(11)
    history, times = noisy_history(rng, 35)
    current = profile(10_000, null_rate=0.01, mean=100)
    if fault == "null_spike":
        current = profile(10_000, null_rate=0.11, mean=100)  # 1% -> 11%
    elif fault == "row_drop":
        current = profile(6_500, mean=100)  # 35% fewer rows
    elif fault == "shift":
        current = profile(10_000, mean=104)  # 8 sd of the mean's history (0.5)
    elif fault == "added":
        current["schema"]["note"] = "string"
        current["columns"]["note"] = dict(current["columns"]["status"])
    elif fault == "removed":
        del current["schema"]["status"], current["columns"]["status"]
    else:
        current = profile(10_000, amount_type="float")
    found = Detector().detect("orders", history, current, times, at(35)).anomalies
    assert metric in {a["metric"] for a in found}
    for a in found:
        assert set(a) == KEYS and a["input"] == "orders"
    json.dumps(found, allow_nan=False)  # stored as JSON and rendered by reports


def test_clean_runs_with_fixed_seeds_are_not_flagged():
    det = Detector()
    judged = flagged = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        history, times = noisy_history(rng, 40, weekend=float(rng.uniform(0.5, 1.0)), growth=float(rng.uniform(0, 0.01)))
        for d in range(det.min_history, 40):
            verdict = det.detect("orders", history[:d], history[d], times[:d], times[d])
            judged += 1
            flagged += bool(verdict.anomalies)
    assert judged == 20 * 33
    assert flagged <= judged // 100  # at most 1%


def test_whole_number_quantiles_may_step_by_one():
    def counts(median: float) -> dict:
        p = profile(1000, mean=2.4, sd=1.1, amount_type="int64")
        p["columns"]["amount"]["quantiles"] = {"0.05": 1.0, "0.25": 2.0, "0.5": median, "0.75": 3.0, "0.95": 4.0}
        return p

    history = [counts(2.0)] * 9 + [counts(3.0)]
    assert Detector().detect("orders", history, counts(3.0)).anomalies == []
    found = Detector().detect("orders", history, counts(6.0)).anomalies
    assert [(a["metric"], a["quantile"]) for a in found] == [("quantile", "0.5")]


def test_sensitivity_and_metric_choice():
    rng = np.random.default_rng(3)
    history, times = noisy_history(rng, 30)
    current = profile(10_000, mean=101.8)  # ~3.5 sd of the mean's history
    def metrics(**kw):
        return {a["metric"] for a in Detector(**kw).detect("orders", history, current, times, at(30)).anomalies}

    assert "mean" not in metrics(sensitivity="low")
    assert "mean" in metrics(sensitivity=2.5)
    assert metrics(sensitivity=2.5, metrics=("row_count", "null_rate")) <= {"row_count", "null_rate"}
    assert metrics(sensitivity=2.5, columns=("status",)) == set()


def test_metric_extraction_reads_the_profilers_profiles():
    rng = np.random.default_rng(5)
    table = pa.table({"amount": pa.array(rng.normal(10, 2, 5000), mask=rng.random(5000) < 0.02),
                      "status": rng.choice(["a", "b"], 5000), "qty": rng.integers(1, 5, 5000)})
    values = metric_values(profile_table(table))
    assert values[("row_count", None, None)] == 5000
    assert values[("null_rate", "amount", None)] == pytest.approx(0.02, abs=0.006)
    assert values[("distinct", "status", None)] == 2
    assert values[("mean", "amount", None)] == pytest.approx(10, abs=0.1)
    assert ("quantile", "amount", "0.5") in values and ("quantile", "amount", "0.99") not in values
    assert ("mean", "status", None) not in values
    keys, past, _ = metric_table([profile_table(table.drop_columns(["qty"]))], profile_table(table))
    assert np.isnan(past[0, keys.index(("mean", "qty", None))])  # a column the history did not have


def test_the_profilers_profiles_of_generated_runs():
    """History and faulty run profiled from real Arrow tables by the streaming Profiler."""
    rng = np.random.default_rng(21)

    def run(n: int, null_rate: float, shift: float = 0.0) -> dict:
        amount = rng.lognormal(3 + shift + rng.normal(0, 0.01), 0.5, n)
        table = pa.table({"id": np.arange(n), "amount": pa.array(amount, mask=rng.random(n) < null_rate),
                          "status": rng.choice(["paid", "open", "void"], n, p=[0.7, 0.25, 0.05])})
        return profile_table(table)

    history = [run(int(4000 * np.exp(rng.normal(0, 0.03))), 0.01) for _ in range(12)]
    times = [at(d) for d in range(12)]
    det = Detector()
    assert det.detect("orders", history, run(4000, 0.01), times, at(12)).anomalies == []
    found = det.detect("orders", history, run(4000, 0.12), times, at(12)).anomalies
    assert ("null_rate", "amount") in {(a["metric"], a["column"]) for a in found}
    shifted = det.detect("orders", history, run(4000, 0.01, shift=0.3), times, at(12)).anomalies
    assert "mean" in {a["metric"] for a in shifted if a["column"] == "amount"}


def test_a_shift_of_every_value_is_found_by_the_mean_and_quantiles_together():
    """Each of amount's mean and quantiles carries its own noise (sd 0.5, as from sampling): a shift
    of 1.2 is within each one's band, but their weighted mean varies far less and leaves its band."""
    rng = np.random.default_rng(8)

    def run(shift: float = 0.0) -> dict:
        p = profile(10_000, mean=100 + shift)
        col = p["columns"]["amount"]
        col["mean"] += rng.normal(0, 0.5)
        col["quantiles"] = {q: v + rng.normal(0, 0.5) for q, v in col["quantiles"].items()}
        return p

    history = [run() for _ in range(40)]
    times = [at(d) for d in range(40)]
    det = Detector(seasonality="none")
    assert det.detect("orders", history, run(), times, at(40)).anomalies == []
    for shift in (1.2, -1.2, 1.2, -1.2):
        found = det.detect("orders", history, run(shift), times, at(40)).anomalies
        (a,) = [a for a in found if a["metric"] == "shift"]
        assert a["column"] == "amount" and a["expected"] == 0.0 and a["low"] == -a["high"]
        assert abs(a["value"]) > a["high"] and np.sign(a["value"]) == np.sign(shift) and a["score"] > det.threshold
        assert "shift of 'amount' (its mean and quantiles together) is " in a["message"]
        assert set(a) == KEYS


def test_null_rates_are_compared_on_a_log_scale():
    """A null rate varies by factors: its band reaches further up than down."""
    rng = np.random.default_rng(11)
    history, times = noisy_history(rng, 35)
    found = Detector().detect("orders", history, profile(10_000, null_rate=0.05), times, at(35)).anomalies
    (a,) = [a for a in found if a["metric"] == "null_rate"]
    assert 0 < a["low"] < a["expected"] < a["high"] < a["value"]
    assert a["high"] - a["expected"] > 1.3 * (a["expected"] - a["low"])  # a linear band is symmetric


def test_a_small_count_may_move_by_a_value_or_two():
    """The distinct count of a column with about 15 values (the largest of some small whole numbers)
    wanders by one or two: 17 after a history of 14 to 16 is normal; 10 or 20 is not."""
    history = [profile(1000, null_rate=0.0, status=s) for s in [15, 15, 14, 15, 15, 15, 15, 15, 15, 15, 16]]

    def found(status: int) -> set:
        return {(a["metric"], a["column"]) for a in Detector().detect("o", history, profile(1000, null_rate=0.0,
                                                                                            status=status)).anomalies}

    assert found(17) == found(13) == set()
    assert found(10) == found(20) == {("distinct", "status")}


def test_a_weekly_pattern_is_used_from_the_second_week_on():
    rng = np.random.default_rng(4)
    history, times = noisy_history(rng, 14, weekend=0.5)
    det = Detector()
    weekday_drop = det.detect("orders", history, profile(6_000, mean=100), times, at(14))  # a Monday, 40% down
    assert weekday_drop.seasonal and "row_count" in {a["metric"] for a in weekday_drop.anomalies}
    assert det.detect("orders", history, profile(10_000, mean=100), times, at(14)).anomalies == []
    # one Sunday in the history is enough to know a Sunday at weekend volume is normal
    assert det.detect("orders", history[:13], profile(5_000, mean=100), times[:13], at(13)).anomalies == []
    # without the weekly baseline, the weekends make the band too wide to see the drop
    assert Detector(seasonality="none").detect("orders", history, profile(6_000, mean=100), times, at(14)).anomalies == []


def test_the_false_alarm_budget_is_weighted_towards_shifts_and_row_counts():
    """Weighted Bonferroni: a metric with share k is flagged at 1/k of the threshold's two-sided
    tail; shifts and row counts get shares below 1 (a lower bar), the many other metrics above."""
    from math import erfc, sqrt

    from agent_etl.quality.anomaly import OTHER_WEIGHT, WEIGHT, _split

    shares = np.array([1 / WEIGHT["shift"], 1 / WEIGHT["row_count"], 1.0, 1 / OTHER_WEIGHT, 7 / OTHER_WEIGHT])
    z = _split(3.7, shares)
    tail = erfc(3.7 / sqrt(2))
    assert np.allclose([erfc(v / sqrt(2)) for v in z], tail / shares, rtol=1e-6)
    assert z[0] < z[1] < z[2] == 3.7 < z[3] < z[4]
