"""One streaming profiler per column kind; ``profile.Profiler`` feeds them the non-null values of
each batch and assembles their ``result()`` dicts (the keys of the profile contract)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from agent_etl.quality.numeric import KLL_K, QUANTILES, Histogram, Moments, choose_method, fences, sketch_mad
from agent_etl.quality.sketches import DistinctCounter, Hasher, TopK

TOP = 10
LOW_CARDINALITY = 1000  # numbers and dates keep a top-k only while they have at most this many values


def kind_of(t: pa.DataType) -> str:
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "numeric"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_temporal(t) and not pa.types.is_interval(t):
        return "temporal"
    return "other"


def json_value(v: Any) -> Any:
    """A scalar as JSON: floats finite or None, dates and times ISO, decimals as floats."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if hasattr(v, "isoformat"):
        return v.isoformat()
    try:
        return json_value(float(v))  # Decimal, numpy scalars
    except (TypeError, ValueError):
        return str(v)  # timedelta, nested values


class ColumnProfile:
    def __init__(self, name: str, type_: pa.DataType, hasher: Hasher, exact_distinct: int,
                 outliers: str = "auto"):
        self.name, self.type, self.kind = name, type_, kind_of(type_)
        self.hasher = hasher
        self.outlier_method = outliers
        self.count = self.nulls = 0
        self.distinct: DistinctCounter | None = DistinctCounter(exact_distinct)
        self.topk: TopK | None = TopK()
        self._hashing = False  # False while the top-k's exact values give the distinct count
        self.min: Any = None
        self.max: Any = None

    def observe(self, values: pa.Array, nulls: int) -> None:
        """``values``: the batch's non-null values of the column."""
        self.nulls += nulls
        self.count += len(values)
        if not len(values):
            return
        uniques = None
        keyed = self._hashable(values)
        if self.topk is not None:
            vc = pc.value_counts(keyed)
            uniques = vc.field("values")
            self.topk.add(uniques, vc.field("counts").to_numpy(zero_copy_only=False))
        if self.distinct is not None:
            try:
                self._count_distinct(keyed, uniques)
            except (TypeError, pa.ArrowException):  # a type neither NumPy nor DuckDB hashes: no distinct count
                self.distinct = None
        if self.topk is not None:
            self.topk.prune()
            if self.kind in ("numeric", "temporal") and (self.distinct_count() or len(self.topk)) > LOW_CARDINALITY:
                self._drop_topk()
            elif self.distinct is not None and not self.distinct.exact and self.topk.peak <= 1:
                self._drop_topk()  # every value so far was unique (ids, hashes): a top-k would show noise
        self._observe(values)

    def _count_distinct(self, values: pa.Array, uniques: pa.Array | None) -> None:
        # while the top-k holds every value seen (exact, not pruned), it is the distinct set: no hashing
        if not self._hashing:
            if self.topk is not None and not self.topk.full:
                return
            self._hashing = True
            if self.topk is not None:  # about to prune: hand the values seen so far to the counter
                self.distinct.add(self.hasher(self.topk.values))
                return
        self.distinct.add(self.hasher(uniques if uniques is not None else values))

    def _drop_topk(self) -> None:
        if not self._hashing and self.distinct is not None:
            self._hashing = True
            self.distinct.add(self.hasher(self.topk.values))
        self.topk = None

    def distinct_count(self) -> int | None:
        if self.distinct is None:
            return None
        return self.distinct.count() if self._hashing else len(self.topk)

    def _hashable(self, values: pa.Array) -> pa.Array:
        """The values that count as distinct values and top-k entries."""
        return values

    def _observe(self, values: pa.Array) -> None:
        pass

    def result(self) -> dict[str, Any]:
        top = None
        if self.topk is not None and len(self.topk) and self.kind in ("string", "boolean", "numeric", "temporal"):
            top = [{"value": json_value(v), "count": c} for v, c in self.topk.top(TOP)]
        return {
            "type": str(self.type), "kind": self.kind, "count": self.count, "nulls": self.nulls,
            "null_rate": self.nulls / (self.count + self.nulls) if self.count + self.nulls else 0.0,
            "distinct": self.distinct_count(),
            "distinct_exact": bool(self.distinct is not None and self.distinct.exact),
            "min": json_value(self.min), "max": json_value(self.max), "mean": None, "std": None,
            "quantiles": None, "histogram": None, "top": top,
            "top_exact": bool(top is not None and self.topk.exact), "length": None, "outliers": None,
        }


class NumericProfile(ColumnProfile):
    def __init__(self, *args, **kw):
        from datasketches import kll_doubles_sketch

        super().__init__(*args, **kw)
        self.moments, self.histogram = Moments(), Histogram()
        self.kll = kll_doubles_sketch(KLL_K)
        self.nonfinite = 0
        self._exact_ints = pa.types.is_integer(self.type)

    def _hashable(self, values: pa.Array) -> pa.Array:
        if pa.types.is_floating(self.type):  # NaN is no value (as pandas' nunique and value_counts)
            nan = pc.is_nan(values)
            if nan.true_count:
                return values.filter(pc.invert(nan))
        return values

    def _observe(self, values: pa.Array) -> None:
        # unchecked: integers above 2**53 round to the nearest double (min/max stay exact below)
        x = values.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        finite = np.isfinite(x)
        if not finite.all():
            self.nonfinite += int(len(x) - finite.sum())
            x = x[finite]
        if not len(x):
            return
        if self._exact_ints:  # ints above 2**53 would lose digits in float64
            mm = pc.min_max(values)
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
        else:
            lo, hi = float(x.min()), float(x.max())
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)
        self.moments.add(x)
        self.kll.update(x if x.flags.writeable else x.copy())  # the binding refuses read-only (Arrow) memory
        self.histogram.add(x, float(lo), float(hi))

    def result(self) -> dict[str, Any]:
        out = super().result()
        out["nonfinite"] = self.nonfinite
        if self.kll.is_empty():
            return out
        m = self.moments
        std = m.std()
        q = dict(zip(QUANTILES, self.kll.get_quantiles(list(QUANTILES), True)))
        out.update(mean=json_value(m.mean), std=json_value(std),
                   quantiles={str(k): float(v) for k, v in q.items()}, histogram=self.histogram.display())
        auto = self.outlier_method == "auto"
        method = choose_method(q, std) if auto else self.outlier_method
        mad = sketch_mad(self.kll, q[0.5], float(self.min), float(self.max)) if method == "mad" else 0.0
        low, high = fences(method, q, m.mean, std, mad)
        count = self.histogram.below(low) + self.histogram.above(high)
        out["outliers"] = {"method": method, "count": round(count), "low": float(low), "high": float(high),
                           "auto": auto}
        return out


class StringProfile(ColumnProfile):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.len_min = self.len_max = None
        self.len_sum = 0

    def _observe(self, values: pa.Array) -> None:
        lengths = pc.utf8_length(values)
        mm = pc.min_max(lengths)
        lo, hi = mm["min"].as_py(), mm["max"].as_py()
        self.len_min = lo if self.len_min is None else min(self.len_min, lo)
        self.len_max = hi if self.len_max is None else max(self.len_max, hi)
        self.len_sum += pc.sum(lengths).as_py()
        mm = pc.min_max(values)
        lo, hi = mm["min"].as_py(), mm["max"].as_py()
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)

    def result(self) -> dict[str, Any]:
        out = super().result()
        if self.count:
            out["length"] = {"min": self.len_min, "max": self.len_max, "mean": self.len_sum / self.count}
        return out


class TemporalProfile(ColumnProfile):
    """Min/max kept as the type's integer (days, units since the epoch) and shown as ISO text."""

    def _observe(self, values: pa.Array) -> None:
        ints = values.view(pa.int32() if self.type.bit_width == 32 else pa.int64())
        mm = pc.min_max(ints)
        lo, hi = mm["min"].as_py(), mm["max"].as_py()
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)

    def result(self) -> dict[str, Any]:
        out = super().result()
        width = pa.int32() if self.type.bit_width == 32 else pa.int64()
        for key in ("min", "max"):
            v = getattr(self, key)
            out[key] = None if v is None else json_value(pa.array([v], width).view(self.type)[0].as_py())
        return out


class BooleanProfile(ColumnProfile):
    def result(self) -> dict[str, Any]:
        out = super().result()
        if self.topk is not None and len(self.topk):
            seen = self.topk.values.to_pylist()
            out["min"], out["max"] = min(seen), max(seen)
        return out


class OtherProfile(ColumnProfile):
    """Nested, binary and other types: counts, nulls and distinct (DuckDB hashes any type)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.topk, self._hashing = None, True


PROFILES = {"numeric": NumericProfile, "string": StringProfile, "temporal": TemporalProfile,
            "boolean": BooleanProfile, "other": OtherProfile}
