"""The numbers anomaly detection follows from run to run, read out of stored data profiles.

A profile (``agent_etl.quality.profile``) holds per-column statistics of one run of one input.
``metric_table`` turns a list of them into one float matrix, a row per run and a column per
metric, so the detector works on every metric of an input at once (NumPy, no loop per metric).

Metric keys are ``(metric, column, quantile)``:

- ``("row_count", None, None)``
- ``("null_rate", col, None)``, ``("distinct", col, None)`` for every column
- ``("mean", col, None)`` and ``("quantile", col, "0.05")`` ... for numeric columns

A metric missing from a run (a column that did not exist yet, a profile without quantiles) is
NaN there. The schema is not a number; ``schema_of`` gives it as ``{column: type}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

import numpy as np

MetricKey = tuple[str, str | None, str | None]

METRICS = ("row_count", "null_rate", "distinct", "mean", "quantiles", "schema")
# counts grow and shrink by factors (a table growing 1% a day, weekends at half volume), so they
# are compared on a log scale; rates and values are compared as they are
LOG_SCALE = frozenset({"row_count", "distinct"})
# the extreme quantiles (0.01, 0.99) of a sketch move by its rank error alone far more than the
# inner ones (a 0.65% rank error at 0.99 of a long-tailed column is a factor of 1.5): left out
# unless asked for
QUANTILES = ("0.05", "0.25", "0.5", "0.75", "0.95")


def schema_of(profile: dict[str, Any]) -> dict[str, str]:
    schema = profile.get("schema")
    if isinstance(schema, dict) and schema:
        return {str(k): str(v) for k, v in schema.items()}
    return {str(k): str(c.get("type")) for k, c in (profile.get("columns") or {}).items()}


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return float("nan")
    return float(value)


def metric_values(profile: dict[str, Any], metrics: Iterable[str] = METRICS, columns: Sequence[str] | None = None,
                  quantiles: Sequence[str] | None = QUANTILES) -> dict[MetricKey, float]:
    """The metrics of one profile, keyed as in the module docstring (only finite numbers;
    ``quantiles``: the quantiles to read, None for all the profile has)."""
    wanted = set(metrics)
    out: dict[MetricKey, float] = {}
    if "row_count" in wanted:
        out[("row_count", None, None)] = _number(profile.get("rows"))
    for name, col in (profile.get("columns") or {}).items():
        if columns is not None and name not in columns:
            continue
        if "null_rate" in wanted:
            rate = col.get("null_rate")
            if rate is None and col.get("count"):
                rate = (col.get("nulls") or 0) / col["count"]
            out[("null_rate", name, None)] = _number(rate)
        if "distinct" in wanted:
            out[("distinct", name, None)] = _number(col.get("distinct"))
        if col.get("kind") != "numeric":
            continue
        if "mean" in wanted:
            out[("mean", name, None)] = _number(col.get("mean"))
        if "quantiles" in wanted and isinstance(col.get("quantiles"), dict):
            for q, v in col["quantiles"].items():
                if quantiles is None or str(q) in quantiles:
                    out[("quantile", name, str(q))] = _number(v)
    return {k: v for k, v in out.items() if np.isfinite(v)}


def metric_table(history: Sequence[dict[str, Any]], current: dict[str, Any], metrics: Iterable[str] = METRICS,
                 columns: Sequence[str] | None = None, quantiles: Sequence[str] | None = QUANTILES,
                 ) -> tuple[list[MetricKey], np.ndarray, np.ndarray]:
    """``(keys, past, now)``: the metrics of ``current`` (``now``, one value per key) and their
    values in each history profile (``past``, runs x keys, NaN where a run lacks the metric)."""
    metrics = tuple(metrics)
    mine = metric_values(current, metrics, columns, quantiles)
    keys = list(mine)
    index = {k: i for i, k in enumerate(keys)}
    past = np.full((len(history), len(keys)), np.nan)
    for r, profile in enumerate(history):
        for k, v in metric_values(profile, metrics, columns, quantiles).items():
            i = index.get(k)
            if i is not None:
                past[r, i] = v
    return keys, past, np.array([mine[k] for k in keys], dtype=float)


def column_spread(history: Sequence[dict[str, Any]], column: str) -> float:
    """The typical standard deviation of a column's values in past runs (NaN if unknown): the unit
    in which a shift of its mean or quantiles is judged large enough to matter."""
    stds = [_number(((p.get("columns") or {}).get(column) or {}).get("std")) for p in history]
    stds = [s for s in stds if np.isfinite(s)]
    return float(np.median(stds)) if stds else float("nan")


def advancing(history: Sequence[dict[str, Any]]) -> set[str]:
    """Columns whose values move on from run to run: every run's minimum at or above the previous
    run's maximum (an auto-increment id, a load timestamp). Their mean and quantiles say where the
    sequence has got to, not what the data looks like, so they are not compared."""
    ranges: dict[str, list[tuple[float, float]]] = {}
    for p in history:
        for name, col in (p.get("columns") or {}).items():
            lo, hi = _number(col.get("min")), _number(col.get("max"))
            if np.isfinite(lo) and np.isfinite(hi):
                ranges.setdefault(name, []).append((lo, hi))
    out = set()
    for name, r in ranges.items():
        if len(r) >= 3 and all(b[0] >= a[1] for a, b in pairwise(r)):
            out.add(name)
    return out
