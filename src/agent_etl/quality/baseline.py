"""The expected value of every metric of the next run, and how far from it a run may fall.

Works on a matrix: one row per earlier run, one column per metric (NaN where a run lacks the
metric), so all metrics of an input are forecast together in NumPy. Two models are fitted per
metric and the one with the narrower prediction interval is kept:

- **level**: a robust line through the runs (Theil-Sen slope, from TREND_MIN runs on) plus, when
  given weekdays, the median offset of each weekday where that explains the history (judged on
  leave-one-out residuals, since a fitted median per weekday flatters any noise);
- **step**: the last value plus the typical change between consecutive runs - for metrics that
  wander like a random walk (the mean of an auto-increment id) or moved to a new level.

Residuals farther than 4 robust standard deviations (MAD) from their median are set aside as
outliers (an earlier bad run must not widen the band); the standard deviation of the rest, the
uncertainty of the fitted level, slope and weekday offset, and a Student-t quantile for the degrees
of freedom left make a calibrated band: with few runs the band is wider, not falsely tight.
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


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        return fn(*args, **kw)


def _median(a: np.ndarray) -> np.ndarray:
    """Median of each column ignoring NaN (NaN for an empty column); one sort, as np.nanmedian on
    small arrays goes through masked arrays and cost 9 ms a call."""
    if a.shape[0] == 0:
        return np.full(a.shape[1:], np.nan)
    ordered = np.sort(a, axis=0)  # NaN sorts last
    n = (~np.isnan(a)).sum(axis=0)
    lo = np.maximum((n - 1) // 2, 0)[None, :]
    hi = np.maximum(n // 2, 0)[None, :]
    hi = np.minimum(hi, a.shape[0] - 1)
    mid = (np.take_along_axis(ordered, lo, 0)[0] + np.take_along_axis(ordered, hi, 0)[0]) / 2
    return np.where(n > 0, mid, np.nan)


def _mad(r: np.ndarray) -> np.ndarray:
    return _median(np.abs(r - _median(r)))


def _mean_ad(r: np.ndarray) -> np.ndarray:
    return _quiet(np.nanmean, np.abs(r - _median(r)), axis=0)


def _trimmed(r: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, standard deviation and degrees of freedom of each column without its outliers."""
    centre = _median(r)
    # MAD is 0 when most runs agree exactly (a count that is usually 13): then the mean absolute
    # deviation still sees the others
    spread = np.maximum(MAD_TO_SD * _mad(r), 1.2533 * _mean_ad(r))
    keep = np.isfinite(r) & (np.abs(r - centre) <= OUTLIER * spread)
    kept = np.where(keep, r, np.nan)
    n = keep.sum(axis=0)
    mean = _quiet(np.nanmean, kept, axis=0)
    dof = np.maximum(n - params, 1)
    sd = np.sqrt(_quiet(np.nansum, (kept - mean) ** 2, axis=0) / dof)
    return mean, sd, n.astype(float)


def forecast(y: np.ndarray, t: np.ndarray, t_now: float, weekday: np.ndarray | None = None,
             weekday_now: int = 0) -> Forecast:
    n, m = y.shape
    counts = np.isfinite(y).sum(axis=0)
    slope = np.zeros(m)
    if n >= TREND_MIN:
        i, j = np.triu_indices(n, k=1)
        gap = t[j] - t[i]
        ok = gap > 0  # two runs at the same time say nothing about a slope
        slope = np.nan_to_num(_median((y[j[ok]] - y[i[ok]]) / gap[ok, None]), nan=0.0)
        slope[counts < TREND_MIN] = 0.0
    sloped = slope != 0
    r = y - slope * t[:, None]
    params = 1.0 + sloped
    offset_now = np.zeros(m)
    seasonal = np.zeros(m, dtype=bool)
    extra = np.zeros(m)  # variance of the weekday offset, in units of the residual variance
    if weekday is not None:
        centred = r - _median(r)
        offsets = np.zeros((7, m))
        size = np.zeros((7, m))
        for d in range(7):  # seven medians over whole columns, not a loop over runs
            rows = centred[weekday == d]
            size[d] = np.isfinite(rows).sum(axis=0)
            offsets[d] = np.where(size[d] >= 2, np.nan_to_num(_median(rows), nan=0.0), 0.0)
        adjusted = r - offsets[weekday]
        k = size[weekday]  # runs in each run's weekday group
        within = centred - offsets[weekday]
        loo = np.where(k >= 2, within * k / np.maximum(k - 1, 1), within)
        # mean, not median, absolute deviations: weekend runs are 2 in 7, which a median ignores
        seasonal = (_mean_ad(loo) < 0.8 * _mean_ad(centred)) & (size[weekday_now] >= 2)
        r = np.where(seasonal, adjusted, r)
        offset_now = np.where(seasonal, offsets[weekday_now], 0.0)
        params = params + np.where(seasonal, (size >= 2).sum(axis=0), 0)
        extra = np.where(seasonal, 1.57 / np.maximum(size[weekday_now], 1), 0.0)  # a median's variance
    level, sd, kept = _trimmed(r, params)
    tc = t - t.mean()
    lever = np.where(sloped, (t_now - t.mean()) ** 2 / max(float((tc**2).sum()), 1e-9), 0.0)
    sd_level = sd * np.sqrt(1.0 + 1.0 / np.maximum(kept, 1) + 1.1 * lever + extra)
    dof_level = np.maximum(kept - params, 1)
    expected = level + slope * t_now + offset_now

    # the step model: last value plus the typical change per run
    step = np.zeros(m, dtype=bool)
    gaps = np.diff(t)
    if n >= TREND_MIN and np.all(gaps > 0):
        # changes per unit of time, so a run missing from the history (a failed one) is bridged
        unit = float(np.median(gaps))
        rates = np.diff(y, axis=0) / (gaps / unit)[:, None]
        rate, sd_rate, kept_rate = _trimmed(rates, np.ones(m))
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
    expected[counts == 0] = np.nan
    return Forecast(expected, sd_level, dof_level, seasonal, step)


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


def t_quantile_array(dof: np.ndarray, threshold: float = 4.0) -> np.ndarray:
    return np.array([t_quantile(threshold, int(d)) for d in np.asarray(dof).ravel()]).reshape(np.shape(dof))
