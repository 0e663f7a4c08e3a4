"""The cache's byte budgets: least recently used entries go first, on disk and in memory; an
interrupted write leaves nothing; a result bigger than the memory budget is served from disk."""

from __future__ import annotations

import pyarrow as pa

from agent_etl.cache import ResultCache


def result(n: int) -> pa.RecordBatch:
    return pa.record_batch({"x": pa.array(range(n), pa.int64())})


def store(cache: ResultCache, key: str, n: int) -> None:
    w = cache.writer(key, 3600, {"task": key})
    w.add(result(n))
    assert w.commit()


def test_disk_budget_drops_least_recently_used(tmp_path):
    size = 10_000 * 8
    cache = ResultCache(tmp_path, memory_bytes=0, disk_bytes=int(size * 2.5))
    store(cache, "a" * 64, 10_000)
    store(cache, "b" * 64, 10_000)
    assert cache.get("a" * 64) is not None  # a is now the most recently used
    store(cache, "c" * 64, 10_000)
    assert {e["key"][0] for e in cache.entries()} == {"a", "c"}
    hit = cache.get("c" * 64)
    assert hit.tier == "disk" and sum(b.num_rows for b in hit) == 10_000


def test_memory_budget(tmp_path):
    cache = ResultCache(tmp_path, memory_bytes=100_000, disk_bytes=10**9)
    store(cache, "a" * 64, 10_000)  # 80 kB: kept in memory
    assert cache.get("a" * 64).tier == "memory"
    store(cache, "b" * 64, 10_000)  # pushes a out of memory
    assert cache.get("b" * 64).tier == "memory"
    assert cache.get("a" * 64).tier == "disk"
    store(cache, "c" * 64, 50_000)  # bigger than the budget: disk only
    hit = cache.get("c" * 64)
    assert hit.tier == "disk" and sum(b.num_rows for b in hit) == 50_000


def test_abort_and_other_schema_leave_nothing(tmp_path):
    cache = ResultCache(tmp_path, memory_bytes=10**6, disk_bytes=10**9)
    w = cache.writer("d" * 64, 3600, {})
    w.add(result(10))
    w.abort()
    w = cache.writer("e" * 64, 3600, {})
    w.add(result(10))
    w.add(pa.record_batch({"y": pa.array(["x"])}))  # another schema: the result is not stored
    assert not w.commit()
    assert cache.get("d" * 64) is None and cache.get("e" * 64) is None
    assert list((tmp_path / "cache").iterdir()) == []
