"""The expected value of every metric of the next run, and how far from it a run may fall.

Works on a matrix: one row per earlier run, one column per metric (NaN where a run lacks the
metric), so all metrics of an input are forecast together in NumPy. Per metric, the candidate
models are fitted and the one with the narrowest prediction interval is kept:

- **level**: the level of the runs, with a robust line (Theil-Sen slope, from TREND_MIN runs
  on), with, when given weekdays, the median offset of each weekday where that explains the
  history (judged on leave-one-out residuals, since a fitted median per weekday flatters any
  noise), or with both;
- **step**: the last value plus the typical change between consecutive runs - for metrics that
  wander like a random walk (the mean of an auto-increment id) or moved to a new level.

Residuals farther than 4 robust standard deviations (MAD) from their median are set aside as
outliers (an earlier bad run must not widen the band; nothing within 4 of a metric's floor is
an outlier, so a count that is 13 on most runs keeps its 12s and 14s); the standard deviation of
the rest, the uncertainty of the fitted level, slope and weekday offset, and a Student-t quantile
for the degrees of freedom left make a calibrated band: with few runs the band is wider, not
falsely tight. Each extra term must pay for the degree of freedom it costs.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

TREND_MIN = 7  # fewer runs than this give a slope that is mostly noise
OUTLIER = 4.0
MAD_TO_SD = 1.4826


@dataclass
class Forecast:
    expected: np.ndarray  # per metric, in the compared space
    sd: np.ndarray  # standard deviation of the prediction error
    dof: np.ndarray  # degrees of freedom of ``sd``
    seasonal: np.ndarray  # bool: the weekday offset was used
    step: np.ndarray  # bool: the step model was chosen
    resid: np.ndarray  # runs x metrics: the history's residuals under the chosen model (NaN: outlier)


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        return fn(*args, **kw)


def median(a: np.ndarray) -> np.ndarray:
    """Median of each column ignoring NaN (NaN for an empty column); one sort, as np.nanmedian on
    small arrays goes through masked arrays and cost 9 ms a call."""
    if a.shape[0] == 0:
        return np.full(a.shape[1:], np.nan)
    ordered = np.sort(a, axis=0)  # NaN sorts last
    n = (~np.isnan(a)).sum(axis=0)
    lo = np.maximum((n - 1) // 2, 0)
    hi = np.minimum(n // 2, a.shape[0] - 1)
    cols = np.arange(a.shape[1])
    mid = (ordered[lo, cols] + ordered[hi, cols]) / 2
    return np.where(n > 0, mid, np.nan)


def _mad(r: np.ndarray) -> np.ndarray:
    return median(np.abs(r - median(r)))


def _mean_ad(r: np.ndarray) -> np.ndarray:
    return _quiet(np.nanmean, np.abs(r - median(r)), axis=0)


def _trimmed(r: np.ndarray, params: np.ndarray, floor: np.ndarray) -> tuple[np.ndarray, ...]:
    """Mean, standard deviation and number of runs of each column without its outliers, and the
    residuals from the mean (NaN for the outliers)."""
    centre = median(r)
    # MAD is 0 when most runs agree exactly (a count that is usually 13): then the mean absolute
    # deviation still sees the others, and nothing within 4 floors (a count of 12 or 14) is an outlier
    spread = np.maximum(np.maximum(MAD_TO_SD * _mad(r), 1.2533 * _mean_ad(r)), floor)
    keep = np.isfinite(r) & (np.abs(r - centre) <= OUTLIER * spread)
    kept = np.where(keep, r, np.nan)
    n = keep.sum(axis=0)
    mean = _quiet(np.nanmean, kept, axis=0)
    dof = np.maximum(n - params, 1)
    sd = np.sqrt(_quiet(np.nansum, (kept - mean) ** 2, axis=0) / dof)
    return mean, sd, n.astype(float), kept - mean


def _level(y: np.ndarray, t: np.ndarray, t_now: float, slope: np.ndarray, weekday: np.ndarray | None,
           weekday_now: int, floor: np.ndarray) -> tuple[np.ndarray, ...]:
    """The level model with a given slope (0: none), with a weekday offset where that narrows the
    band: expected value, sd, dof, weekday offset used, residuals."""
    sloped = slope != 0
    r = y - slope * t[:, None]
    params = 1.0 + sloped
    tc = t - t.mean()
    lever = np.where(sloped, (t_now - t.mean()) ** 2 / max(float((tc**2).sum()), 1e-9), 0.0)
    level, sd, kept, resid = _trimmed(r, params, floor)
    sd_level = sd * np.sqrt(1.0 + 1.0 / np.maximum(kept, 1) + 1.1 * lever)
    dof_level = np.maximum(kept - params, 1)
    expected = level + slope * t_now
    seasonal = np.zeros(y.shape[1], dtype=bool)
    if weekday is None:
        return expected, sd_level, dof_level, seasonal, resid
    centred = r - median(r)
    m = y.shape[1]
    # the runs of each weekday side by side, padded with NaN: the seven medians in one sort
    groups = [centred[weekday == d] for d in range(7)]
    padded = np.full((max(len(g) for g in groups), 7 * m), np.nan)
    for d, g in enumerate(groups):
        padded[:len(g), d * m:(d + 1) * m] = g
    size = np.isfinite(padded).sum(axis=0).reshape(7, m)
    offsets = np.nan_to_num(median(padded), nan=0.0).reshape(7, m)
    k = size[weekday]  # runs in each run's weekday group
    within = centred - offsets[weekday]
    # judged on leave-one-out residuals (a weekday seen once says nothing either way); mean, not
    # median, absolute deviations: weekend runs are 2 in 7, which a median ignores
    loo = np.where(k >= 2, within * k / np.maximum(k - 1, 1), centred)
    explains = _mean_ad(loo) < 0.8 * _mean_ad(centred)
    params_w = params + (size >= 1).sum(axis=0)
    level_w, sd_w, kept_w, resid_w = _trimmed(r - offsets[weekday], params_w, floor)
    n_now = size[weekday_now]
    extra = np.where(n_now <= 2, 1.0, 1.57) / np.maximum(n_now, 1)  # the variance of a median of n_now runs
    sd_w = sd_w * np.sqrt(1.0 + 1.0 / np.maximum(kept_w, 1) + 1.1 * lever + extra)
    dof_w = np.maximum(kept_w - params_w, 1)
    seasonal = (explains & (n_now >= 1) & np.isfinite(sd_w)
                & (sd_w * t_quantile_array(dof_w) < sd_level * t_quantile_array(dof_level)))
    return (np.where(seasonal, level_w + slope * t_now + offsets[weekday_now], expected),
            np.where(seasonal, sd_w, sd_level), np.where(seasonal, dof_w, dof_level), seasonal,
            np.where(seasonal, resid_w, resid))


def forecast(y: np.ndarray, t: np.ndarray, t_now: float, weekday: np.ndarray | None = None,
             weekday_now: int = 0, floor: np.ndarray | None = None) -> Forecast:
    """The forecast of every column of ``y`` (runs x metrics) at ``t_now``; ``floor``: per metric,
    the smallest standard deviation it can have (a count's half step), which no outlier is within."""
    n, m = y.shape
    floor = np.zeros(m) if floor is None else floor
    counts = np.isfinite(y).sum(axis=0)
    expected, sd_level, dof_level, seasonal, resid = _level(y, t, t_now, np.zeros(m), weekday, weekday_now, floor)
    if n >= TREND_MIN:
        i, j = np.triu_indices(n, k=1)
        gap = t[j] - t[i]
        ok = gap > 0  # two runs at the same time say nothing about a slope
        slope = np.nan_to_num(median((y[j[ok]] - y[i[ok]]) / gap[ok, None]), nan=0.0)
        slope[counts < TREND_MIN] = 0.0
        # the line only where it narrows the band: a slope fitted to noise costs a degree of
        # freedom and widens the band of a flat metric
        e2, s2, d2, w2, r2 = _level(y, t, t_now, slope, weekday, weekday_now, floor)
        better = (slope != 0) & (s2 * t_quantile_array(d2) < sd_level * t_quantile_array(dof_level))
        expected, sd_level, dof_level, seasonal, resid = (np.where(better, a, b) for a, b in (
            (e2, expected), (s2, sd_level), (d2, dof_level), (w2, seasonal), (r2, resid)))

    # the step model: last value plus the typical change per run
    step = np.zeros(m, dtype=bool)
    gaps = np.diff(t)
    if n >= TREND_MIN and np.all(gaps > 0):
        # changes per unit of time, so a run missing from the history (a failed one) is bridged
        unit = float(np.median(gaps))
        rates = np.diff(y, axis=0) / (gaps / unit)[:, None]
        rate, sd_rate, kept_rate, resid_rate = _trimmed(rates, np.ones(m), floor)
        ahead = (t_now - t[-1]) / unit
        last = y[-1]
        sd_step = sd_rate * np.sqrt(max(ahead, 1.0) + 1.0 / np.maximum(kept_rate, 1))
        dof_step = np.maximum(kept_rate - 1, 1)
        step = (np.isfinite(last) & np.isfinite(sd_step)
                & (sd_step * t_quantile_array(dof_step) < sd_level * t_quantile_array(dof_level)))
        expected = np.where(step, last + np.nan_to_num(rate) * ahead, expected)
        sd_level = np.where(step, sd_step, sd_level)
        dof_level = np.where(step, dof_step, dof_level)
        seasonal = seasonal & ~step
        resid = np.where(step, np.vstack([np.full((1, m), np.nan), resid_rate]), resid)
    expected[counts == 0] = np.nan
    return Forecast(expected, sd_level, dof_level, seasonal, step, resid)


# -- Student t, without SciPy -----------------------------------------------------------------

def t_tail(x: float, dof: float) -> float:
    """P(|T| > x) for Student's t with ``dof`` degrees of freedom."""
    if x <= 0:
        return 1.0
    if dof > 300:
        return math.erfc(x / math.sqrt(2))
    # P(|T| > x) = I_z(dof/2, 1/2) with z = dof / (dof + x^2): the regularised incomplete beta,
    # by its hypergeometric series (z < 1; only tails are asked for, where z is small)
    a, b = dof / 2.0, 0.5
    z = dof / (dof + x * x)
    log_front = a * math.log(z) + b * math.log1p(-z) - math.log(a) - (
        math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    term, total, k = 1.0, 1.0, 0
    while k < 20000:
        term *= (a + b + k) / (a + 1 + k) * z
        total += term
        k += 1
        if term < 1e-12 * total:
            break
    return min(1.0, math.exp(log_front) * total)


@lru_cache(maxsize=4096)
def t_quantile(threshold: float, dof: int) -> float:
    """The t value with the two-sided tail of a normal ``threshold``: where |T| > t is as rare as |Z| > threshold."""
    target = math.erfc(threshold / math.sqrt(2))
    if dof > 300:
        return threshold
    lo, hi = threshold, threshold
    while t_tail(hi, dof) > target:
        hi *= 2
        if hi > 1e7:
            return hi
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_tail(mid, dof) > target else (lo, mid)
    return hi


def t_quantile_array(dof: np.ndarray, threshold: float | np.ndarray = 4.0) -> np.ndarray:
    """``t_quantile`` of each element (``threshold``: one, or one per element)."""
    dof = np.asarray(dof)
    z = np.broadcast_to(np.asarray(threshold, dtype=float), dof.shape)
    return np.array([t_quantile(float(a), int(d)) for a, d in zip(z.ravel(), dof.ravel())]).reshape(dof.shape)
