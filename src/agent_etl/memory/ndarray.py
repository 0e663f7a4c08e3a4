"""``NumpyMemory``: the in-process backend (ephemeral runs, tests). Exact search: one matrix
product over all the stored vectors; metadata filters are evaluated column-wise on numpy arrays."""

from __future__ import annotations

import operator
from typing import Any, Sequence

import numpy as np

from agent_etl.memory.base import Hit, Record, Where, check_where
from agent_etl.memory.embedding import DIM, embed

_COMPARE = {"$eq": operator.eq, "$ne": operator.ne, "$gt": operator.gt, "$gte": operator.ge,
            "$lt": operator.lt, "$lte": operator.le}


class NumpyMemory:
    def __init__(self) -> None:
        self._vectors = np.zeros((0, DIM), dtype=np.float32)
        self._records: list[Record] = []
        self._row: dict[str, int] = {}
        self._columns: dict[tuple, Any] = {}  # (metadata key, form) -> its values by row, built on demand

    def add(self, records: Sequence[Record]) -> None:
        if not records:
            return
        latest = {r.id: r for r in records}  # the last of repeated ids wins, as in one upsert
        vectors = embed([r.document for r in latest.values()])
        fresh: list[int] = []
        for i, r in enumerate(latest.values()):
            row = self._row.get(r.id)
            if row is None:
                fresh.append(i)
            else:
                self._records[row] = r
                self._vectors[row] = vectors[i]
        values = list(latest.values())
        for i in fresh:
            self._row[values[i].id] = len(self._records)
            self._records.append(values[i])
        if fresh:
            self._vectors = np.concatenate([self._vectors, vectors[fresh]])
        self._columns.clear()

    def query(self, document: str, k: int = 10, where: Where | None = None) -> list[Hit]:
        if k <= 0 or not self._records:
            return []
        mask = self._mask(where)
        scores = self._vectors @ embed([document])[0]
        if mask is not None:
            candidates = np.flatnonzero(mask)
            if not len(candidates):
                return []
            scores = scores[candidates]
        else:
            candidates = None
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        rows = candidates[top] if candidates is not None else top
        return [Hit(self._records[r], float(max(0.0, 1.0 - s))) for r, s in zip(rows, scores[top])]

    def get(self, ids: Sequence[str] | None = None, where: Where | None = None,
            limit: int | None = None) -> list[Record]:
        if ids is not None:
            rows = [self._row[i] for i in dict.fromkeys(ids) if i in self._row]
        else:
            rows = list(range(len(self._records)))
        mask = self._mask(where)
        if mask is not None:
            rows = [r for r in rows if mask[r]]
        return [self._records[r] for r in (rows if limit is None else rows[:limit])]

    def delete(self, ids: Sequence[str]) -> None:
        gone = {self._row[i] for i in ids if i in self._row}
        if not gone:
            return
        keep = [r for r in range(len(self._records)) if r not in gone]
        self._vectors = self._vectors[keep]
        self._records = [self._records[r] for r in keep]
        self._row = {r.id: i for i, r in enumerate(self._records)}
        self._columns.clear()

    def count(self) -> int:
        return len(self._records)

    def close(self) -> None:
        pass

    def _column(self, key: str, numeric: bool = False) -> np.ndarray:
        """A metadata key's values by row: objects (None where missing), or floats (NaN where missing
        or not a number) for comparisons with a number."""
        cache = (key, numeric)
        col = self._columns.get(cache)
        if col is None:
            values = [r.metadata.get(key) for r in self._records]
            if numeric:
                col = np.array([v if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan
                                for v in values], dtype=np.float64)
            else:
                col = np.empty(len(values), dtype=object)
                col[:] = values
            self._columns[cache] = col
        return col

    def _codes(self, key: str) -> tuple[np.ndarray, dict[str, int]]:
        """A key's string values as integer codes (-1: missing or not a string), for equality filters
        at array speed."""
        cache = (key, "codes")
        found = self._columns.get(cache)
        if found is None:
            index: dict[str, int] = {}
            codes = np.fromiter((index.setdefault(v, len(index)) if isinstance(v, str) else -1
                                 for v in (r.metadata.get(key) for r in self._records)),
                                dtype=np.int64, count=len(self._records))
            found = self._columns[cache] = (codes, index)
        return found

    def _mask(self, where: Where | None) -> np.ndarray | None:
        conditions = check_where(where)
        if not conditions:
            return None
        mask = np.ones(len(self._records), dtype=bool)
        for key, op, value in conditions:
            if op in ("$in", "$nin"):
                col = self._column(key)
                hit = np.zeros(len(col), dtype=bool)
                for v in value:
                    hit |= _compare(self, key, "$eq", v)
                mask &= hit if op == "$in" else ~hit
            else:
                mask &= _compare(self, key, op, value)
        return mask


def _compare(memory: NumpyMemory, key: str, op: str, value: Any) -> np.ndarray:
    """Rows whose ``key`` compares true with ``value``; a missing key or a value of another type
    matches only ``$ne`` (as in Chroma)."""
    fn = _COMPARE[op]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        col = memory._column(key, numeric=True)
        with np.errstate(invalid="ignore"):
            out = fn(col, value)
        return out | np.isnan(col) if op == "$ne" else out
    if op in ("$eq", "$ne") and isinstance(value, str):
        codes, index = memory._codes(key)
        out = codes == index.get(value, -2)
        return out if op == "$eq" else ~out
    col = memory._column(key)
    same = np.fromiter((type(v) is type(value) for v in col), dtype=bool, count=len(col))
    out = np.zeros(len(col), dtype=bool)
    if same.any():
        out[same] = fn(col[same], value).astype(bool)
    return out | ~same if op == "$ne" else out
