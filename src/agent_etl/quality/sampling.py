"""Single-pass, seeded samplers over Arrow batch streams.

- ``Reservoir``: Algorithm L (Li 1994): a uniform sample of ``size`` rows from a stream of any
  length. The skips between selected rows are drawn in NumPy in blocks, so the cost per batch is a
  few array operations plus a ``take`` of the selected rows, never a Python step per row. The
  random numbers are consumed one triple (W factor, skip, slot) per selection, so the sample
  depends only on the seed and the rows, not on how the stream was cut into batches.
- ``StratifiedReservoir``: one reservoir per value of a column (nulls are a stratum of their
  own): ``per_stratum`` rows of each, or ``size`` rows in all allocated in proportion to the
  strata's sizes (largest remainder), each stratum's reservoir subsampled uniformly at the end.
  Memory is strata x capacity rows, so the number of strata is capped (``MAX_STRATA``).
- ``Systematic``: every k-th row (k = 1/fraction) from a random start, across batch boundaries;
  a fractional k keeps row j when floor((j+1)/k + u) > floor(j/k + u), exactly ``fraction`` of
  the rows spread evenly. Rows stream through (nothing is held).

Reservoir samples come out in stream order.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BLOCK = 4096
MAX_STRATA = 10_000
# skips are capped so a block's running sum stays in int64; a skip that long ends any real stream anyway
CAP = 2 ** 48


class Skips:
    """Algorithm L's state for a reservoir of ``k``: which of the next ``n`` items are selected,
    and into which slot each goes."""

    def __init__(self, k: int, rng: np.random.Generator):
        self.k, self.rng = k, rng
        self.seen = 0
        self.next = 0  # index of the next selected item, once the reservoir is full
        self.log_w = 0.0
        self._buf = np.empty((0, 3))
        self._chunk = 8

    def _draw(self, count: int) -> np.ndarray:
        """The next ``count`` (u_w, u_skip, u_slot) triples of the stream's sequence."""
        while len(self._buf) < count:
            # chunks grow from 16 triples, so a small stratum draws little; the sequence is the same
            # whatever the chunk sizes (one double per number, in order)
            self._chunk = min(BLOCK, self._chunk * 2)
            self._buf = np.concatenate((self._buf, 1.0 - self.rng.random((self._chunk, 3))))  # (0, 1]: log is finite
        out, self._buf = self._buf[:count], self._buf[count:]
        return out

    def offer(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Advance by ``n`` items; return (positions among them, slots), in stream order."""
        start, end = self.seen, self.seen + n
        positions, slots = [], []
        if self.seen < self.k:
            m = min(self.k - self.seen, n)
            positions.append(np.arange(m))
            slots.append(np.arange(self.seen, self.seen + m))
            self.seen += m
            if self.seen == self.k:
                u = self._draw(1)[0]
                self.log_w = math.log(u[0]) / self.k
                self.next = self.k + self._skip(self.log_w, u[1])
        while self.seen >= self.k and self.next < end:
            u = self._draw(max(len(self._buf), 16))
            # selection i is the item at[i]: it takes a slot from its triple, then W shrinks and
            # the skip to the next selection is drawn from the same triple
            log_w = self.log_w + np.cumsum(np.log(u[:, 0]) / self.k)
            steps = np.minimum(np.floor(np.log(u[:, 1]) / np.log1p(-np.exp(log_w))), CAP).astype(np.int64) + 1
            at = self.next + np.concatenate(([0], np.cumsum(steps)))
            used = int(np.searchsorted(at[:-1], end))  # selections inside this stretch of the stream
            positions.append(at[:used] - start)
            slots.append(np.minimum((u[:used, 2] * self.k).astype(np.int64), self.k - 1))
            if used:
                self.log_w, self.next = float(log_w[used - 1]), int(at[used])
            self._buf = np.concatenate((u[used:], self._buf))  # unused triples stay first in line
        self.seen = max(self.seen, end)
        if not positions:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(positions).astype(np.int64), np.concatenate(slots).astype(np.int64)

    @staticmethod
    def _skip(log_w: float, u: float) -> int:
        return int(min(math.floor(math.log(u) / math.log1p(-math.exp(log_w))), CAP))


class Rows:
    """The rows one or more reservoirs hold. Each batch's selected rows (of every reservoir) are
    taken once and appended as a piece; ``where[r][slot]`` points into the pieces and
    ``order[r][slot]`` is the row's index in the stream. Pieces are compacted when they hold
    more than twice the live rows."""

    def __init__(self) -> None:
        self.pieces: list[pa.Table] = []
        self.held = 0
        self.where: dict[object, np.ndarray] = {}
        self.order: dict[object, np.ndarray] = {}
        self.filled: dict[object, int] = {}

    def add_reservoir(self, key: object, k: int) -> None:
        self.where[key] = np.zeros(k, dtype=np.int64)
        self.order[key] = np.zeros(k, dtype=np.int64)
        self.filled[key] = 0

    def put(self, batch: pa.RecordBatch | pa.Table, first: int,
            picks: list[tuple[object, np.ndarray, np.ndarray]]) -> None:
        """``picks``: (reservoir, batch rows, slots) in stream order; ``first``: the batch's first
        row's index in the stream."""
        picks = [p for p in picks if len(p[1])]
        if not picks:
            return
        rows_all, base = [], self.held
        for key, rows, slots in picks:
            # a slot chosen twice in one batch keeps its later row
            last = len(slots) - 1 - np.unique(slots[::-1], return_index=True)[1]
            rows, slots = rows[last], slots[last]
            self.where[key][slots] = base + np.arange(len(rows))
            self.order[key][slots] = first + rows
            self.filled[key] = max(self.filled[key], int(slots.max()) + 1)
            rows_all.append(rows)
            base += len(rows)
        piece = batch.take(pa.array(np.concatenate(rows_all)))
        self.pieces.append(piece if isinstance(piece, pa.Table) else pa.Table.from_batches([piece]))
        self.held = base
        live = sum(self.filled.values())
        if self.held > 2 * live + 1024:
            self._compact()

    def _compact(self) -> None:
        keys = list(self.where)
        index = np.concatenate([self.where[k][: self.filled[k]] for k in keys])
        table = pa.concat_tables(self.pieces).take(pa.array(index))
        self.pieces, self.held, at = [table], len(index), 0
        for k in keys:
            n = self.filled[k]
            self.where[k][:n] = at + np.arange(n)
            at += n

    def table(self, key: object, keep: np.ndarray | None = None) -> pa.Table | None:
        """The rows of reservoir ``key`` (or its slots in ``keep``) in stream order."""
        if not self.pieces:
            return None
        slots = np.arange(self.filled[key]) if keep is None else keep
        slots = slots[np.argsort(self.order[key][slots], kind="stable")]
        return pa.concat_tables(self.pieces).take(pa.array(self.where[key][slots]))


class Reservoir:
    """A uniform sample of ``size`` rows (all of them if the stream is shorter)."""

    def __init__(self, size: int, seed: int | None = 0):
        self.skips = Skips(size, np.random.default_rng(seed))
        self.rows = Rows()
        self.rows.add_reservoir(0, size)

    def observe(self, batch: pa.RecordBatch | pa.Table) -> None:
        first = self.skips.seen
        positions, slots = self.skips.offer(batch.num_rows)
        self.rows.put(batch, first, [(0, positions, slots)])

    def result(self) -> pa.Table | None:
        return self.rows.table(0)


class StratifiedReservoir:
    """Per-stratum reservoirs over column ``by``: ``per_stratum`` rows each, or ``size`` rows in
    all, allocated in proportion to the strata's row counts."""

    def __init__(self, by: str, *, size: int | None = None, per_stratum: int | None = None, seed: int | None = 0,
                 max_strata: int = MAX_STRATA):
        if (size is None) == (per_stratum is None):
            raise ValueError("give one of size (proportional allocation) or per_stratum")
        self.by, self.size, self.per_stratum, self.max_strata = by, size, per_stratum, max_strata
        self.rng = np.random.default_rng(seed)
        self.strata: dict[object, Skips] = {}
        self.held = Rows()
        self.rows = 0  # rows of the stream seen

    def observe(self, batch: pa.RecordBatch | pa.Table) -> None:
        column = batch.column(self.by)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        codes = pc.dictionary_encode(column, null_encoding="encode")
        keys = codes.dictionary.to_pylist()  # one Python value per stratum in this batch, not per row
        index = codes.indices.to_numpy(zero_copy_only=False)
        order = np.argsort(index, kind="stable")
        bounds = np.searchsorted(index[order], np.arange(len(keys) + 1))
        cap = self.per_stratum if self.per_stratum is not None else self.size
        picks = []
        for code, key in enumerate(keys):
            rows = order[bounds[code]:bounds[code + 1]]
            if not len(rows):
                continue
            if key not in self.strata:
                if len(self.strata) >= self.max_strata:
                    raise ValueError(f"column {self.by!r} has more than {self.max_strata:,} distinct values")
                # each stratum's random stream is its own, so strata do not depend on each other's order
                self.strata[key] = Skips(cap, np.random.default_rng(self.rng.integers(2 ** 63)))
                self.held.add_reservoir(key, cap)
            positions, slots = self.strata[key].offer(len(rows))
            picks.append((key, rows[positions], slots))
        self.held.put(batch, self.rows, picks)
        self.rows += batch.num_rows

    def allocation(self) -> dict[object, int]:
        """Rows per stratum: ``per_stratum`` (or all, if fewer), or ``size`` split by largest remainder."""
        counts = {key: skips.seen for key, skips in self.strata.items()}
        if self.per_stratum is not None:
            return {key: min(n, self.per_stratum) for key, n in counts.items()}
        total = sum(counts.values())
        if total <= self.size:
            return counts
        exact = {key: self.size * n / total for key, n in counts.items()}
        alloc = {key: math.floor(v) for key, v in exact.items()}
        rest = self.size - sum(alloc.values())
        for key in sorted(exact, key=lambda k: alloc[k] - exact[k])[:rest]:  # largest remainders first
            alloc[key] += 1
        return alloc

    def result(self) -> pa.Table | None:
        parts = []
        for key, n in self.allocation().items():
            filled = self.held.filled[key]
            keep = None if n >= filled else self.rng.choice(filled, size=n, replace=False)
            part = self.held.table(key, keep)
            if part is not None and len(part):
                parts.append(part)
        return pa.concat_tables(parts) if parts else None


class Systematic:
    """Every (1/fraction)-th row from a random start; ``observe`` returns the batch's kept rows."""

    def __init__(self, fraction: float, seed: int | None = 0):
        if not 0 < fraction <= 1:
            raise ValueError("fraction must be in (0, 1]")
        rng = np.random.default_rng(seed)
        step = 1.0 / fraction
        self.step = round(step) if abs(step - round(step)) < 1e-9 else None
        self.fraction = fraction
        self.start = int(rng.integers(self.step)) if self.step else 0
        self.u = float(rng.random())
        self.seen = 0

    def observe(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        j = np.arange(self.seen, self.seen + batch.num_rows, dtype=np.int64)
        self.seen += batch.num_rows
        if self.step:  # an integer interval: exact integer arithmetic at any stream length
            keep = j % self.step == self.start
        else:
            keep = np.floor((j + 1) * self.fraction + self.u) > np.floor(j * self.fraction + self.u)
        return batch.filter(pa.array(keep))
