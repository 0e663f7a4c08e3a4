"""Anomaly detection: one run's data profile against the profiles of earlier runs of the same input.

For every metric (row count; per column null rate and distinct count; per numeric column mean and
quantiles, and their **shift**: see below) the history predicts this run's value and a band
around it (``quality.baseline``: a level, with a robust line and a weekday offset where they
narrow the band, or the last value plus the typical change; outliers of the history set aside;
a Student-t band, so a short history gives a wide band, not a falsely tight one). A value is an
anomaly when it is outside the band *and* the change is big enough to matter:

- **flat histories** (all runs equal): the band has a floor (1% or half a unit for counts, 0.1
  point plus 2% of the level for null rates, 1% of the column's standard deviation for means and
  quantiles);
- **small changes** never count: under 5% (or 1 row) for row counts, 5% or 2 values for distinct
  counts, 0.5 point of null rate, 2% of the column's standard deviation for means and quantiles,
  one step for quantiles of whole numbers;
- **advancing columns** (each run's values above the previous run's: ids, load times) have no
  stable mean or quantiles: only their null rate and distinct count are compared;
- **schema**: a column added, removed or retyped since the previous run is always an anomaly.

Counts are compared on a log scale (a weekend at half volume is the same ratio whatever the
size), null rates as log(rate + 0.5 point) (they vary by factors too).

**Shift**: when every value of a column moves by the same amount, its mean and all its quantiles
move together. Their weighted mean (least-variance weights from the correlation of their
residuals in the history) is forecast like any metric, and its distance from the forecast is the
column's shift, one test with more power than each metric alone. The mean and quantiles are
still judged one by one, each at 1/k of the false-alarm rate they would have alone (Bonferroni
over the column's k of them), so that together they raise false alarms no more than one would.

**False-alarm budget**: metrics do not all get the threshold's rate. Shifts get 10 times it and
row counts twice, the rest 0.4 times (``WEIGHT``): the tests that carry the power get the budget,
and a run raises false alarms no more often than with the threshold on every metric.

Until ``min_history`` earlier runs exist the detector gives no verdict on the numeric metrics (it
is "learning"); schema drift is reported as soon as there is one earlier run.

Options (the ``anomaly:`` quality check passes them through):

=================  =================================================================================
``metrics``        any of row_count, null_rate, distinct, mean, quantiles, schema (default: all;
                   the shift needs mean and quantiles)
``sensitivity``    low | medium | high, or a number: the z threshold (low 5.5, medium 3.7, high 3)
``min_history``    earlier runs needed before a verdict (default 7)
``seasonality``    weekly | none (default weekly: tried once a week of history exists)
``window``         how many earlier runs form the history (default 60)
``columns``        only these columns (default: every column)
=================  =================================================================================
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from agent_etl.quality.baseline import forecast, median, t_quantile_array
from agent_etl.quality.metrics import (
    LOG_SCALE,
    METRICS,
    QUANTILES,
    MetricKey,
    advancing,
    column_spread,
    metric_table,
    schema_of,
)

SENSITIVITY = {"low": 5.5, "medium": 3.7, "high": 3.0}  # tuned on benchmarks/anomaly_eval.py, seed 1
# weighted Bonferroni: the share of the false-alarm rate each kind of metric gets, relative to one
# metric at the threshold's own rate. A run has ~50 metrics; the few that carry most of the power
# get more of the budget: a column's shift (the best test of a moved distribution: its day-to-day
# noise is itself a shift, so only a lower bar catches a 3-5 sd move) and the row count; the many
# null rates, distinct counts, means and quantiles, each with little power of its own, get less.
# Tuned with the threshold on seed 1 of benchmarks/anomaly_eval.py; the weights average ~1 over a
# typical input's metrics, so the rate of false alarms per run stays that of the threshold.
WEIGHT = {"shift": 10.0, "row_count": 2.0}
OTHER_WEIGHT = 0.4
SEASON_SPAN_DAYS = 7.0
# null rates are compared as log(rate + half a point): they change by factors (1% -> 1.2%), which a
# linear band, symmetric around the rate, does not follow; the offset keeps rates near 0 apart
NULL_OFFSET = 0.005
SHRINK = 0.1  # the correlation of a column's mean and quantiles is shrunk this much towards none
DAY = 86400.0


@dataclass
class Verdict:
    """What the detector says about one run of one input."""

    anomalies: list[dict[str, Any]] = field(default_factory=list)
    history: int = 0  # earlier runs compared with
    min_history: int = 0
    seasonal: bool = False  # whether a weekday baseline was used for at least one metric

    @property
    def learning(self) -> bool:
        return self.history < self.min_history

    @property
    def status(self) -> str:
        if self.anomalies:
            return "anomalies"
        return f"learning ({self.history} of {self.min_history} runs)" if self.learning else "ok"


@dataclass
class Assessment:
    """Per numeric metric (arrays aligned with ``keys``): the forecast and how far this run is from it."""

    keys: list[MetricKey]
    value: np.ndarray  # this run's values
    expected: np.ndarray  # forecast, in the compared space (log scale for counts and null rates)
    sd: np.ndarray  # standard deviation of the forecast error, estimated from the history
    floor: np.ndarray  # the smallest standard deviation a metric is given (a flat history has 0)
    dof: np.ndarray  # degrees of freedom of ``sd`` (its threshold is a Student-t quantile for them)
    deviation: np.ndarray  # |value - expected|, in the compared space
    large: np.ndarray  # the change is big enough to matter (and there is a forecast)
    offset: np.ndarray  # compared as log(value + offset) where > 0 (counts: 1, null rates: NULL_OFFSET)
    seasonal: np.ndarray
    share: np.ndarray  # the metric's false-alarm rate is the threshold's divided by this (see ``WEIGHT``)

    def width(self, threshold: float) -> np.ndarray:
        """Half-width of the band of normal values for a z ``threshold``: the t quantile of ``sd``
        widens it when the history is short; the floor is a fixed minimum, not an estimate. A
        metric with a ``share`` of k gets 1/k of the threshold's false-alarm rate."""
        z = _split(threshold, self.share)
        return np.maximum(t_quantile_array(self.dof, z) * self.sd, z * self.floor)

    def flagged(self, threshold: float) -> np.ndarray:
        return (self.deviation > self.width(threshold)) & self.large


@dataclass(frozen=True)
class Detector:
    metrics: tuple[str, ...] = METRICS
    sensitivity: float | str = "medium"
    min_history: int = 7
    seasonality: str = "weekly"
    window: int = 60
    columns: tuple[str, ...] | None = None
    quantiles: tuple[str, ...] = QUANTILES
    severity: str = "warn"  # the severity given to every anomaly found (the check's on_anomaly)

    @property
    def threshold(self) -> float:
        s = self.sensitivity
        return float(SENSITIVITY[s]) if isinstance(s, str) else float(s)

    def detect(self, input: str, history: Sequence[dict[str, Any]], current: dict[str, Any],
               times: Sequence[float] | None = None, now: float | None = None) -> Verdict:
        """Compare ``current`` with ``history`` (profiles, oldest first; ``times`` their epoch seconds
        and ``now`` this run's, both optional: without them there is no weekly baseline and the
        runs are taken as evenly spaced)."""
        history = list(history)[-self.window:] if self.window else list(history)
        verdict = Verdict(history=len(history), min_history=self.min_history)
        if "schema" in self.metrics and history:
            verdict.anomalies += self._schema(input, schema_of(history[-1]), schema_of(current))
        if verdict.learning:
            return verdict
        a = self.assess(history, current, times, now)
        if a is None:
            return verdict
        verdict.seasonal = bool(a.seasonal.any())
        width = a.width(self.threshold)
        for i in np.flatnonzero((a.deviation > width) & a.large):
            score = self.threshold * a.deviation[i] / width[i]
            verdict.anomalies.append(self._numeric(input, a.keys[i], a.value[i], a.expected[i], width[i], score,
                                                   float(a.offset[i]), bool(a.seasonal[i]), len(history)))
        return verdict

    def assess(self, history: Sequence[dict[str, Any]], current: dict[str, Any],
               times: Sequence[float] | None = None, now: float | None = None) -> Assessment | None:
        """Every numeric metric of ``current`` against its forecast from ``history`` (None: no metric)."""
        history = list(history)[-self.window:] if self.window else list(history)
        if times is not None:
            times = list(times)[-len(history):] if history else []
        keys, past, value = metric_table(history, current, [m for m in self.metrics if m != "schema"], self.columns,
                                         self.quantiles)
        if not keys or not history:
            return None
        t, t_now, weekday, weekday_now = _time_axis(len(history), times, now)
        seasonal = self.seasonality == "weekly" and times is not None and t_now - t[0] >= SEASON_SPAN_DAYS
        offset = np.array([1.0 if k[0] in LOG_SCALE else NULL_OFFSET if k[0] == "null_rate" else 0.0 for k in keys])
        y, x = _compared(past, offset), _compared(value, offset)
        spread = {c: column_spread(history, c) for c in {k[1] for k in keys if k[0] in ("mean", "quantile")}}
        floor, _ = _floors(keys, median(past), offset, spread)
        fc = forecast(y, t, t_now, weekday if seasonal else None, weekday_now, floor)
        expected_raw = _raw(fc.expected, offset)
        floor, guard = _floors(keys, expected_raw, offset, spread)
        # a quantile of whole numbers moves in steps of one (the median of 1, 2, 2, 3 ... flips
        # between 2 and 3): one step is not a shift
        stepped = np.array([k[0] == "quantile" for k in keys]) & _integral(past, value)
        guard = np.where(stepped, np.maximum(guard, 1.5), guard)
        large = (np.abs(value - expected_raw) >= guard) & np.isfinite(fc.expected)
        moving = advancing(history)
        if moving:
            large &= np.array([not (k[0] in ("mean", "quantile") and k[1] in moving) for k in keys])
        a = Assessment(keys, value, fc.expected, fc.sd, floor, fc.dof, np.abs(x - fc.expected), large, offset,
                       fc.seasonal, 1.0 / _weights(keys))
        if "mean" in self.metrics and "quantiles" in self.metrics:
            a = _with_shifts(a, _shift_weights(a, fc.resid, ~stepped, moving), spread, y, x, t, t_now,
                             weekday if seasonal else None, weekday_now)
        return a

    # ------------------------------------------------------------------------------------------

    def _numeric(self, input: str, key: MetricKey, value: float, expected: float, width: float, z: float,
                 offset: float, seasonal: bool, n: int) -> dict[str, Any]:
        metric, column, q = key
        # on a log scale the band is symmetric in ratios: x0.8 .. x1.25, not -20% .. +20%
        low, high, mid = (float(_raw(np.array([v]), np.array([offset]))[0])
                          for v in (expected - width, expected + width, expected))
        if metric in ("row_count", "distinct", "null_rate"):
            low = max(low, 0.0)
        if metric == "null_rate":
            high = min(high, 1.0)
        name = _metric_name(key)
        basis = f"{n} earlier runs" + (", same weekday" if seasonal else "")
        message = (f"{input}: {name} is {_fmt(metric, value)}, expected {_fmt(metric, mid)} "
                   f"(range {_fmt(metric, low)} to {_fmt(metric, high)} from {basis}; robust z {z:.1f})")
        return {"input": input, "metric": metric, "column": column, "quantile": q,
                "value": _plain(value, metric), "expected": _plain(mid, metric), "low": _plain(low, metric),
                "high": _plain(high, metric), "score": round(float(z), 2), "severity": self.severity,
                "message": message}

    def _schema(self, input: str, before: dict[str, str], after: dict[str, str]) -> list[dict[str, Any]]:
        if self.columns is not None:
            keep = set(self.columns)
            before = {k: v for k, v in before.items() if k in keep}
            after = {k: v for k, v in after.items() if k in keep}
        found = []

        def add(column: str, value: str, expected: str, what: str) -> None:
            found.append({"input": input, "metric": "schema", "column": column, "quantile": None, "value": value,
                          "expected": expected, "low": None, "high": None, "score": 1.0, "severity": self.severity,
                          "message": f"{input}: column {column!r} {what} since the previous run"})

        for col in after.keys() - before.keys():
            add(col, after[col], "absent", f"was added ({after[col]})")
        for col in before.keys() - after.keys():
            add(col, "absent", before[col], f"was removed (it was {before[col]})")
        for col in before.keys() & after.keys():
            if before[col] != after[col]:
                add(col, after[col], before[col], f"changed type from {before[col]} to {after[col]}")
        found.sort(key=lambda a: a["column"])
        return found


def _time_axis(n: int, times: Sequence[float] | None, now: float | None) -> tuple[np.ndarray, float, np.ndarray, int]:
    """Run times in days (from the first run) and the weekdays (UTC) of the runs and of this run."""
    if times is None or len(times) != n:
        return np.arange(n, dtype=float), float(n), np.zeros(n, dtype=int), 0
    ts = np.asarray(times, dtype=float)
    now = float(now) if now is not None else float(ts[-1] + (np.median(np.diff(ts)) if n > 1 else DAY))
    weekday = ((ts // DAY).astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday (3)
    weekday_now = dt.datetime.fromtimestamp(now, dt.UTC).weekday()
    return (ts - ts[0]) / DAY, (now - ts[0]) / DAY, weekday, weekday_now


def _shift_weights(a: Assessment, resid: np.ndarray, usable: np.ndarray,
                   moving: set[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per numeric column with two or more usable mean and quantile metrics: their indexes and the
    weights (summing to 1) of their least-variance combination, from the covariance of their
    residuals in the history (shrunk towards none: nearly collinear metrics get stable weights)."""
    groups: dict[str, list[int]] = {}
    for i, (metric, column, _) in enumerate(a.keys):
        if metric in ("mean", "quantile") and column not in moving and usable[i] and np.isfinite(a.expected[i]):
            groups.setdefault(column, []).append(i)
    out = {}
    for column, idx in groups.items():
        j = np.array(idx)
        r = resid[:, j]
        r = r[np.isfinite(r).all(axis=1)]
        if len(j) < 2 or len(r) < 5 or not (r.std(axis=0) > 0).all():
            continue
        sd = np.maximum(a.sd[j], a.floor[j])
        cov = np.corrcoef(r, rowvar=False) * np.outer(sd, sd)
        w = np.linalg.solve((1 - SHRINK) * cov + SHRINK * np.diag(np.diag(cov)), np.ones(len(j)))
        if np.isfinite(w).all() and w.sum() > 0:
            out[column] = (j, w / w.sum())
    return out


def _with_shifts(a: Assessment, weights: dict[str, tuple[np.ndarray, np.ndarray]], spread: dict[str | None, float],
                 y: np.ndarray, x: np.ndarray, t: np.ndarray, t_now: float, weekday: np.ndarray | None,
                 weekday_now: int) -> Assessment:
    """``a`` with the shift of each column in ``weights``: the weighted mean of its mean and
    quantiles is forecast from its own history like any metric (its value is its distance from
    the forecast; the weights, fitted to the same history, cost degrees of freedom), and the
    column's mean and quantiles share one false-alarm rate."""
    if not weights:
        return a
    columns = list(weights)
    past = np.column_stack([y[:, j] @ w for j, w in weights.values()])
    now = np.array([x[j] @ w for j, w in weights.values()])
    floor = np.array([a.floor[j].min() for j, _ in weights.values()])
    fc = forecast(past, t, t_now, weekday, weekday_now, floor)
    shift = now - fc.expected
    unit = np.array([spread.get(c, float("nan")) for c in columns])
    large = np.isfinite(shift) & ~(np.abs(shift) < 0.02 * unit)  # the mean's guard
    dof = np.maximum(fc.dof - np.array([len(w) - 1 for _, w in weights.values()]), 1)
    share = a.share.copy()
    for j, _ in weights.values():
        share[j] *= len(j)
    n = len(columns)
    keys = [("shift", c, None) for c in columns]
    return Assessment(a.keys + keys, np.r_[a.value, shift],
                      np.r_[a.expected, np.zeros(n)], np.r_[a.sd, fc.sd], np.r_[a.floor, floor], np.r_[a.dof, dof],
                      np.r_[a.deviation, np.abs(shift)], np.r_[a.large, large], np.r_[a.offset, np.zeros(n)],
                      np.r_[a.seasonal, fc.seasonal], np.r_[share, 1.0 / _weights(keys)])


def _weights(keys: list[MetricKey]) -> np.ndarray:
    return np.array([WEIGHT.get(k[0], OTHER_WEIGHT) for k in keys])


def _split(threshold: float, share: np.ndarray) -> np.ndarray:
    """The z threshold of each metric: as rare as ``threshold`` divided by its ``share`` (weighted
    Bonferroni: metrics whose shares' inverses sum to n together raise no more false alarms than n
    metrics at ``threshold``)."""
    tail = math.erfc(threshold / math.sqrt(2))
    z = {k: threshold if k == 1 else -NormalDist().inv_cdf(min(0.5, tail / k / 2)) for k in set(share.tolist())}
    return np.array([z[k] for k in share.tolist()])


def _compared(a: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Values in the space they are compared in: log(value + offset) where the offset is > 0."""
    out = a.copy()
    logged = np.broadcast_to(offset > 0, a.shape)
    out[logged] = np.log(np.maximum(a[logged], 0) + np.broadcast_to(offset, a.shape)[logged])
    return out


def _raw(a: np.ndarray, offset: np.ndarray) -> np.ndarray:
    out = a.copy()
    logged = offset > 0
    out[logged] = np.exp(a[logged]) - offset[logged]
    return out


def _integral(past: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Per metric: every known value is a whole number."""
    both = np.vstack([past, value[None, :]])
    whole = np.isnan(both) | (both == np.round(both))
    return whole.all(axis=0)


def _floors(keys: list[MetricKey], expected: np.ndarray, offset: np.ndarray,
            spread: dict[str | None, float]) -> tuple[np.ndarray, np.ndarray]:
    """Per metric: the smallest scale (in the compared space) and the smallest change (raw) that
    counts; ``expected`` is raw."""
    floor = np.empty(len(keys))
    guard = np.empty(len(keys))
    for i, (metric, column, _) in enumerate(keys):  # one entry per metric, not per row
        level = max(float(expected[i]), 0.0) if np.isfinite(expected[i]) else 0.0
        if metric == "null_rate":  # 0.1 point plus 2% of the rate, on the log scale
            floor[i] = (0.001 + 0.02 * level) / (level + offset[i])
            guard[i] = 0.005
        elif offset[i] > 0:  # 1%, and half a step of one (a count of 12 is half-way to 11 and to 13)
            floor[i] = max(0.01, 0.5 * math.log((level + 2) / (level + 1)))
            guard[i] = max(0.05 * level, 2.0 if metric == "distinct" else 1.0)
        else:
            unit = spread.get(column, float("nan"))
            if not np.isfinite(unit) or unit <= 0:
                unit = abs(expected[i]) if np.isfinite(expected[i]) and expected[i] else 1.0
            floor[i] = 0.01 * unit
            guard[i] = 0.02 * unit
    return floor, guard


def _metric_name(key: MetricKey) -> str:
    metric, column, q = key
    if metric == "row_count":
        return "row count"
    if metric == "quantile":
        return f"quantile {q} of {column!r}"
    if metric == "shift":
        return f"shift of {column!r} (its mean and quantiles together)"
    return f"{metric.replace('_', ' ')} of {column!r}"


def _plain(value: float, metric: str) -> float | int:
    if metric in ("row_count", "distinct"):
        return round(value)
    return float(f"{value:.6g}")


def _fmt(metric: str, value: float) -> str:
    if metric in ("row_count", "distinct"):
        return f"{round(value):,}"
    if metric == "null_rate":
        return f"{value:.2%}"
    if metric == "shift":
        return f"{value:+.6g}" if value else "0"
    return f"{value:.6g}"
