"""Dataset checks: rules about the whole stream rather than one row.

``unique`` is exact across batches and still row-level: it flags the second and later occurrences
of a key wherever they fall, so a gate can quarantine exactly the duplicates. It keeps the distinct
keys seen so far as sorted NumPy runs (memory grows with distinct keys, not rows) and works on
whole arrays: sort, ``searchsorted``, merge - no Python loop over rows, and no ``np.unique``
(hash-based in NumPy 2 and ~15x slower than a sort on int64). As in SQL, a key with a null part is
never a duplicate.

``row_count`` only counts, and gives its verdict when the stream ends.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from agent_etl.exceptions import Problem, SpecError
from agent_etl.tools.validators.base import Check, CheckConfig, ColumnsConfig


class Unique(Check):
    """Flag every repeat of a key (one column or several), across the whole stream."""

    shorthand = "columns"
    scope = "dataset"
    across_rows = True

    class Config(ColumnsConfig):
        """Key columns whose values must not repeat: ``unique: [id]`` or, composite, ``unique: [a, b]``."""

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self._seen = _KeySet()
        self._bound = False

    def columns(self) -> list[str]:
        return list(self.config.columns)

    def bind(self, schema: pa.Schema) -> list[Problem]:
        problems = []
        for name in self.config.columns:
            if name not in schema.names:
                problems.append(Problem(f"column {name!r} is not in the input",
                                        hint=f"available columns: {', '.join(schema.names)}"))
                continue
            t = schema.field(name).type
            try:
                _encode([pa.array([], t)])
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
                problems.append(Problem(f"column {name!r} is {t}, which cannot be a key",
                                        hint=f"use scalar columns (numbers, strings, dates) as keys ({e})"))
        self._bound = not problems
        return problems

    def failures(self, batch: pa.RecordBatch) -> pa.BooleanArray:
        if not self._bound:
            problems = self.bind(batch.schema)
            if problems:
                raise SpecError([replace(p, message=f"{self.label}: {p.message}") for p in problems])
        n = batch.num_rows
        cols = [batch.column(c) for c in self.config.columns]
        valid = None
        if any(c.null_count for c in cols):
            valid = cols[0].is_valid()
            for c in cols[1:]:
                valid = pc.and_(valid, c.is_valid())
            cols = [c.filter(valid) for c in cols]
        keys = _encode(cols)
        dup = self._flag(keys)
        if valid is not None:
            full = np.zeros(n, dtype=bool)
            full[np.flatnonzero(valid.to_numpy(zero_copy_only=False))] = dup
            dup = full
        return pa.array(dup, type=pa.bool_())

    def _flag(self, keys: np.ndarray) -> np.ndarray:
        """Repeats among ``keys`` (in batch order), counting keys of earlier batches; remembers the new ones."""
        dup = np.zeros(len(keys), dtype=bool)
        if len(keys) == 0:
            return dup
        # keys that mostly rise (ids) are long sorted runs, which a merge sort only has to merge
        presorted = np.count_nonzero(keys[1:] < keys[:-1]) < len(keys) // 64
        sk = np.sort(keys, kind="stable" if presorted else "quicksort")
        repeat = sk[1:] == sk[:-1]
        distinct = sk[np.concatenate(([True], ~repeat))]
        old = self._seen.contains(distinct)
        seen_before = distinct[old]
        bad = np.concatenate((seen_before, sk[1:][repeat]))
        if len(bad):
            # The common batch has no repeat and skips this. Only rows holding a repeated key are
            # sorted again (stably, to find which occurrence came first within the batch).
            bad.sort()
            rows = _holding(keys, bad)
            rk = keys[rows]
            order = np.argsort(rk, kind="stable")
            srk = rk[order]
            first = np.concatenate(([True], srk[1:] != srk[:-1]))
            dup[rows[order]] = ~first | _isin_sorted(srk, seen_before)
        self._seen.add(distinct[~old])
        return dup


class _KeySet:
    """The keys seen so far: a bitmap while they are integers packed densely enough (ids), else sorted runs.

    Dense integer keys (auto-increment ids, dates) are the common case: a bitmap over [base, base +
    len) answers a batch's lookups with one gather instead of a binary search per key per run, in a
    byte per slot. When the keys stop being dense (the span would exceed 4 slots per key and 1M
    slots) or are not integers, the set moves to ``_SortedKeys`` for good.
    """

    MIN_SLOTS = 1 << 20

    def __init__(self) -> None:
        self.bits: np.ndarray | None = None
        self.base = 0
        self.count = 0
        self.runs: _SortedKeys | None = None

    def __len__(self) -> int:
        return len(self.runs) if self.runs is not None else self.count

    def contains(self, sorted_keys: np.ndarray) -> np.ndarray:
        if self.runs is not None:
            return self.runs.contains(sorted_keys)
        found = np.zeros(len(sorted_keys), dtype=bool)
        if self.bits is None or not len(sorted_keys):
            return found
        lo = np.searchsorted(sorted_keys, self.base, "left")
        hi = np.searchsorted(sorted_keys, self.base + len(self.bits), "left")
        found[lo:hi] = self.bits[sorted_keys[lo:hi] - self.base]
        return found

    def add(self, sorted_new: np.ndarray) -> None:
        if len(sorted_new) == 0:
            return
        if self.runs is None and sorted_new.dtype.kind == "i":
            lo = int(sorted_new[0]) if self.bits is None else min(self.base, int(sorted_new[0]))
            hi = int(sorted_new[-1]) if self.bits is None else max(self.base + len(self.bits) - 1, int(sorted_new[-1]))
            count = self.count + len(sorted_new)
            slots = max(4 * count, self.MIN_SLOTS)
            if hi - lo < slots and -(2**62) < lo and hi + slots < 2**62:  # no int64 overflow in key - base
                self._grow(lo, hi, count)
                self.bits[sorted_new - self.base] = True
                self.count = count
                return
        if self.runs is None:  # not (or no longer) dense integers: sorted runs from now on
            self.runs = _SortedKeys()
            if self.bits is not None:
                self.runs.add(np.flatnonzero(self.bits).astype(np.int64) + self.base)
            self.bits = None
        self.runs.add(sorted_new)

    def _grow(self, lo: int, hi: int, count: int) -> None:
        if self.bits is not None and lo >= self.base and hi < self.base + len(self.bits):
            return
        # room to spare on the side that grew, so ids that keep rising reallocate O(log n) times
        size = hi - lo + 1
        slack = min(size, max(4 * count, self.MIN_SLOTS) - size)
        base = lo - slack if self.bits is not None and lo < self.base else lo
        bits = np.zeros(size + max(slack, 0), dtype=bool)
        if self.bits is not None:
            bits[self.base - base:self.base - base + len(self.bits)] = self.bits
        self.bits, self.base = bits, base


def _isin_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if len(sorted_set) == 0:
        return np.zeros(len(values), dtype=bool)
    pos = np.searchsorted(sorted_set, values)
    np.minimum(pos, len(sorted_set) - 1, out=pos)
    return sorted_set[pos] == values


def _holding(keys: np.ndarray, few: np.ndarray) -> np.ndarray:
    """Positions of the ``keys`` whose value is one of the sorted ``few``.

    A binary search per key would miss the cache at every step once the keys are out of order; a
    table of 64k hash slots, set for ``few``, picks the candidates first and only they are searched."""
    table = np.zeros(1 << 16, dtype=bool)
    table[_slots(few)] = True
    candidates = np.flatnonzero(table[_slots(keys)])
    return candidates[_isin_sorted(keys[candidates], few)]


def _slots(keys: np.ndarray) -> np.ndarray:
    """A 16-bit hash of each key: its 8-byte words XOR-ed, then Fibonacci hashing (the top bits of a product)."""
    n, width = len(keys), keys.dtype.itemsize
    raw = np.ascontiguousarray(keys).view(np.uint8).reshape(n, width)
    if width % 8:  # byte keys: zero-padded to whole words
        raw = np.concatenate([raw, np.zeros((n, -width % 8), dtype=np.uint8)], axis=1)
    words = raw.view(np.uint64)
    folded = words[:, 0]
    for k in range(1, words.shape[1]):
        folded = folded ^ words[:, k]
    mixed = folded * np.uint64(0x9E3779B97F4A7C15)
    mixed >>= np.uint64(48)
    return mixed.view(np.intp)  # indexes without a conversion


class _SortedKeys:
    """A set of keys as sorted runs whose sizes at least halve from one run to the next.

    Adding merges the new run into the smaller tail runs only (as a binary counter carries), so
    each key is copied O(log n) times in all, and a lookup is one ``searchsorted`` per run.
    """

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(r) for r in self.runs)

    def contains(self, sorted_keys: np.ndarray) -> np.ndarray:
        found = np.zeros(len(sorted_keys), dtype=bool)
        for run in self.runs:
            # only the needles within the run's range can be in it: ids that keep growing skip the search
            lo = np.searchsorted(sorted_keys, run[0], "left")
            hi = np.searchsorted(sorted_keys, run[-1], "right")
            if lo < hi:
                found[lo:hi] |= _isin_sorted(sorted_keys[lo:hi], run)
        return found

    def add(self, sorted_new: np.ndarray) -> None:
        if len(sorted_new) == 0:
            return
        run = sorted_new
        while self.runs and len(self.runs[-1]) <= 2 * len(run):
            last = self.runs.pop()
            common = np.result_type(last.dtype, run.dtype)  # byte keys may be wider in a later batch
            last, run = last.astype(common, copy=False), run.astype(common, copy=False)
            run = np.insert(last, np.searchsorted(last, run), run)
        self.runs.append(run)


def _encode(cols: list[pa.Array]) -> np.ndarray:
    """One sortable NumPy key per row, equal exactly when the rows' key values are equal.

    A single numeric/temporal column becomes int64 (floats canonicalised so -0.0 == 0.0 and NaN ==
    NaN, as SQL does). Anything else becomes bytes: each part in a self-delimiting form (8 raw
    bytes, or a 4-byte length and the value), concatenated, then laid out as a fixed-width ``S``
    array. As no encoding is a proper prefix of another, NumPy's zero padding cannot make two
    different keys equal.
    """
    if len(cols) == 1:
        fixed = _as_int64(cols[0])
        if fixed is not None:
            return fixed
    parts = []
    for col in cols:
        fixed = _as_int64(col)
        if fixed is not None:
            parts.append(_fixed_binary(fixed))
            continue
        col = _as_binary(col)
        lengths = pc.binary_length(col).to_numpy(zero_copy_only=False).astype(np.int32)
        parts += [_fixed_binary(lengths), col]
    joined = pc.binary_join_element_wise(*parts, b"") if len(parts) > 1 else parts[0]
    return _fixed_width(joined)


def _as_int64(col: pa.Array) -> np.ndarray | None:
    t = col.type
    if pa.types.is_dictionary(t):
        return None
    if pa.types.is_boolean(t):
        return col.to_numpy(zero_copy_only=False).astype(np.int64)
    if pa.types.is_integer(t):
        values = col.to_numpy()
        # the bits of a uint64 are as good a key as its value; smaller ints widen exactly
        return values.view(np.int64) if values.dtype == np.uint64 else values.astype(np.int64, copy=False)
    if pa.types.is_floating(t):
        values = col.to_numpy().astype(np.float64) + 0.0  # -0.0 + 0.0 is 0.0
        values[np.isnan(values)] = np.nan  # one NaN bit pattern
        return values.view(np.int64)
    if pa.types.is_temporal(t) and t.bit_width == 64:
        return col.view(pa.int64()).to_numpy()
    if pa.types.is_temporal(t) and t.bit_width == 32:
        return col.view(pa.int32()).to_numpy().astype(np.int64)
    return None


def _as_binary(col: pa.Array) -> pa.Array:
    t = col.type
    if pa.types.is_dictionary(t):
        col, t = col.dictionary_decode(), t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return col.cast(pa.binary())
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return col.cast(pa.binary())
    # decimals and the rest: their canonical text is an exact, per-type injective form
    return col.cast(pa.string()).cast(pa.binary())


def _fixed_binary(values: np.ndarray) -> pa.Array:
    values = np.ascontiguousarray(values)
    width = values.dtype.itemsize
    fsb = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values), [None, pa.py_buffer(values)])
    return fsb.cast(pa.binary())


def _fixed_width(col: pa.Array) -> np.ndarray:
    """Binary array -> NumPy ``S<w>`` array, by scattering the bytes (no per-value Python objects)."""
    n = len(col)
    if n == 0:
        return np.zeros(0, dtype="S1")
    if col.type != pa.binary():
        col = col.cast(pa.binary())
    _, offs_buf, data_buf = col.buffers()
    offs = np.frombuffer(offs_buf, dtype=np.int32, count=n + 1, offset=col.offset * 4)
    lengths = np.diff(offs)
    width = max(int(lengths.max()) if n else 1, 1)
    out = np.zeros(n * width, dtype=np.uint8)
    start, end = int(offs[0]), int(offs[-1])
    if end > start:
        data = np.frombuffer(data_buf, dtype=np.uint8)[start:end]
        dest = np.arange(end - start) + np.repeat(np.arange(n) * width - (offs[:-1] - start), lengths)
        out[dest] = data
    return out.view(f"S{width}")


class RowCount(Check):
    """Fail the dataset when the number of rows is outside [min, max]."""

    scope = "dataset"
    whole_data = True

    class Config(CheckConfig):
        """Bounds on the number of rows of the whole stream: ``row_count: {min: 1, max: 1000000}``."""

        min: int | None = Field(None, ge=0, description="rows at least")
        max: int | None = Field(None, ge=0, description="rows at most")

        @model_validator(mode="after")
        def _bounds(self) -> RowCount.Config:
            if self.min is None and self.max is None:
                raise ValueError("row_count needs min, max or both")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
            return self

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        self.rows = 0

    def observe(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows

    def finish(self) -> str | None:
        lo, hi = self.config.min, self.config.max
        if lo is not None and self.rows < lo:
            return f"{self.rows} rows, expected at least {lo}"
        if hi is not None and self.rows > hi:
            return f"{self.rows} rows, expected at most {hi}"
        return None
